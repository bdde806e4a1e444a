"""The `trialkit` command: a thin click layer over the library.

Sub-commands live in their own modules and are imported only when used, so `trialkit --help` stays fast
and a problem in one command's imports cannot break the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback

import click

from trialkit import __version__
from trialkit.cli.argv import scrub_argv
from trialkit.cli.options import INTERNAL, SuggestingGroup, exit_codes
from trialkit.errors import TrialkitError

# name -> "module:attribute" of a click command or group.
_COMMANDS = {
    "logic": "trialkit.cli.logic:logic",
    "check": "trialkit.cli.check:check",
    "dictionary": "trialkit.cli.dictionary:dictionary",
    "validate": "trialkit.cli.validate:validate",
    "screen": "trialkit.cli.screen:screen",
    "demo": "trialkit.cli.demo:demo",
    "sandbox": "trialkit.cli.sandbox:sandbox",
    "redcap": "trialkit.cli.redcap:redcap",
}


class _LazyGroup(SuggestingGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | self._available())

    @staticmethod
    def _available() -> set[str]:
        names = set()
        for name, target in _COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        return names

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _COMMANDS and name in self._available():
            module, attr = _COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@exit_codes("success (see each command's --help for what it checks)",
            "the data or REDCap failed: findings, unreadable data, network or API failure, a differing project")
@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(__version__, prog_name="trialkit")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """trialkit: check study definitions, validate intake data, screen candidates, sync with REDCap."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps trialkit errors to messages and exit codes; tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Without standalone mode click returns a command's ctx.exit(n) code instead of raising it.
        rv = cli.main(args=args, prog_name="trialkit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        shown = scrub_argv(exc.format_message(), args)
        exc.format_message = lambda: shown  # type: ignore[method-assign]
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except TrialkitError as exc:
        if debug:
            traceback.print_exc()
        for diag in exc.diagnostics:
            click.echo(scrub_argv(diag.format(), args), err=True)
        if not exc.diagnostics:
            click.echo(scrub_argv(f"error: {exc}", args), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # the promise is: no traceback unless --debug, even for our own bugs
        if debug:
            traceback.print_exc()
        else:
            # the exception's own text may quote input (a parser's message, a value): only its class is shown
            click.echo(f"internal error: {type(exc).__name__}\n(re-run with --debug for the traceback)", err=True)
        sys.exit(INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
