from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])


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


def _run_main(args, capsys):
    from trialkit import cli as cli_module

    try:
        cli_module.main(args)
    except SystemExit as exc:
        code = exc.code
    else:
        raise AssertionError("main() must exit")
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_failure_asked_for_in_json_is_one_json_object_on_stdout(tmp_path, capsys):
    """With --format json a script reads one JSON object from stdout whatever happened: a failure is the envelope
    with ok false and the error (kind, exit code, message, where); stderr keeps its message for people."""
    import json

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    code, out, err = _run_main(["validate", str(bad), "--study", ROOT, "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["command"] == "validate" and doc["ok"] is False
    assert doc["error"]["type"] == "DataError" and doc["error"]["exit_code"] == 1
    assert doc["error"]["location"] == {"file": str(bad)} and "record_id" in doc["error"]["message"]
    assert "record_id" in err

    code, out, _ = _run_main(["redcap", "pull", "--format=json", "--no-such-option"], capsys)
    doc = json.loads(out)
    assert code == 2 and doc["command"] == "redcap pull" and doc["error"]["type"] == "UsageError"
    # pull's --out is the copy's folder: its summary, and so its failure, still goes to stdout
    code, out, _ = _run_main(["redcap", "pull", "--out", str(tmp_path / "copy"), "--url", "http://127.0.0.1:9/api/",
                              "--format", "json"], capsys)
    doc = json.loads(out)
    assert code != 0 and doc["command"] == "redcap pull" and doc["ok"] is False

    token = "0123456789ABCDEF0123456789ABCDEF"  # a value that looks like a token never comes back, here either
    code, out, _ = _run_main(["screen", token, "--format", "json"], capsys)
    assert code == 2 and token not in out and json.loads(out)["ok"] is False


def test_a_failure_without_json_on_stdout_prints_no_json(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    for args in (["validate", str(bad), "--study", ROOT],
                 ["validate", str(bad), "--study", ROOT, "--format", "json", "--out", str(tmp_path / "f.json")]):
        code, out, err = _run_main(args, capsys)
        assert code == 1 and out == "" and "record_id" in err


@pytest.mark.parametrize(("given", "expected"), [
    (None, "muzzy_decay_ms:0"),
    ("dirty_decay_ms:500,muzzy_decay_ms:1000", "muzzy_decay_ms:0"),  # polars' own, passed on by a parent process
    ("muzzy_decay_ms:5", "muzzy_decay_ms:5"),  # the user's
])
def test_the_command_sets_the_allocator_before_polars_loads(given, expected):
    """The CLI asks polars' allocator to return freed pages at once (docs/screening-speed.md): the setting must be
    in the environment before polars is first imported, which importing the CLI must not do."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if given is not None:
        env["_RJEM_MALLOC_CONF"] = given
    code = "import os, sys, trialkit.cli; print(os.environ['_RJEM_MALLOC_CONF'], 'polars' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == [expected, "False"]
