from __future__ import annotations

import subprocess
import sys


def test_help_lists_commands_and_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "trialkit", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "Usage" in proc.stdout


def test_unknown_command_is_usage_error_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "trialkit", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_ctx_exit_code_of_a_command_reaches_the_shell(monkeypatch):
    import click

    from trialkit import cli as cli_module

    @click.command("exit-three")
    @click.pass_context
    def exit_three(ctx):
        ctx.exit(3)

    cli_module.cli.add_command(exit_three)
    try:
        try:
            cli_module.main(["exit-three"])
        except SystemExit as exc:
            assert exc.code == 3
        else:
            raise AssertionError("main() must exit")
    finally:
        cli_module.cli.commands.pop("exit-three")
