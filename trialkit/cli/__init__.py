"""The `trialkit` command: a thin click layer over the library.

Sub-commands live in their own modules and are imported only when used, so `trialkit --help` stays fast
and a problem in one command's imports cannot break the others.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import itertools
import os
import sys
import threading
import traceback

import click

from trialkit import __version__
from trialkit.cli.argv import scrub_argv
from trialkit.cli.options import INTERNAL, STOPPED, SuggestingGroup, dumps, exit_codes, stdout_gone
from trialkit.errors import TrialkitError

# polars' allocator (jemalloc) first keeps freed pages as "muzzy" (MADV_FREE), which still count as this process's
# memory until the system needs them back: a million candidates' screen peaked at 2.2-2.3 GB instead of 1.8-1.9.
# Returned at once, they cost no measurable time (docs/screening-speed.md). Set before polars is first imported
# (this module imports none of it; polars adds the value to its own defaults). A value the user set wins; polars'
# own defaults, which a parent Python process that imported polars passes on to its children, do not.
_POLARS_ALLOCATOR_DEFAULT = "dirty_decay_ms:500,muzzy_decay_ms:1000"
#: the allocator set-up the `trialkit` command runs polars with (benchmarks give it to their children too)
ALLOCATOR_CONF = "muzzy_decay_ms:0"
if os.environ.get("_RJEM_MALLOC_CONF") in (None, _POLARS_ALLOCATOR_DEFAULT):
    os.environ["_RJEM_MALLOC_CONF"] = ALLOCATOR_CONF

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
    try:
        _main(argv)
    except SystemExit as exc:
        if argv is None and _reads_only(sys.argv[1:]):
            _exit_now(exc.code)
        raise


#: commands that hold no database, server or thread when they return: nothing to close at exit
_READ_ONLY = ("check", "logic", "dictionary", "validate", "screen")


def _reads_only(args: list[str]) -> bool:
    command = next((a for a in args if not a.startswith("-")), None)
    return command in _READ_ONLY


#: what the system says when output cannot be written: the machine's state, not a bug or the data
_CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def _exit_now(code: object) -> None:
    """Leave without the interpreter's teardown: unloading polars, numpy and pandera takes 0.05-0.2 s after the
    work is done, on every call. Only for a command in _READ_ONLY (its files are closed when it returns), only as
    the process itself (main() called by a test returns through SystemExit), and only when no other thread is
    left that a normal exit would wait for."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: what it could not take is lost either way
            stream.flush()
    status = code if isinstance(code, int) else 0 if code is None else 1
    os._exit(status)


def _main(argv: list[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Without standalone mode click returns a command's ctx.exit(n) code instead of raising it.
        rv = cli.main(args=args, prog_name="trialkit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        _error_envelope(args, "Aborted", 130, "aborted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        shown = scrub_argv(exc.format_message(), args)
        exc.format_message = lambda: shown  # type: ignore[method-assign]
        exc.show()
        code = 2 if exc.exit_code == 2 else exc.exit_code
        _error_envelope(args, "UsageError" if code == 2 else type(exc).__name__, code, shown)
        sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except TrialkitError as exc:
        if debug:
            traceback.print_exc()
        for diag in exc.diagnostics:
            click.echo(scrub_argv(diag.format(), args), err=True)
        if not exc.diagnostics:
            click.echo(scrub_argv(f"error: {exc}", args), err=True)
        _error_envelope(args, type(exc).__name__, exc.exit_code, scrub_argv(exc.message, args), exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        _error_envelope(args, "Interrupted", 130, "interrupted")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 1 and stdout_gone():  # click ends a command whose output pipe closed with exit 1
            sys.exit(SIGPIPE_EXIT)
        if exc.code == STOPPED:  # a scheduler's SIGTERM, which the redcap commands unwind by (ledger first)
            click.echo("Stopped.", err=True)
            _error_envelope(args, "Stopped", STOPPED, "stopped by a termination signal (SIGTERM)")
        raise
    except Exception as exc:  # the promise is: no traceback unless --debug, even for our own bugs
        if isinstance(exc, OSError) and stdout_gone():  # polars writing to a closed pipe: errno unset
            sys.exit(SIGPIPE_EXIT)
        if isinstance(exc, OSError) and exc.errno in _CANNOT_WRITE:  # `> file` on a full disk: not a bug of ours
            where = f" ({exc.filename})" if exc.filename else " (writing the output)"
            click.echo(f"error: {exc.strerror}{where}", err=True)
            _error_envelope(args, "UsageError", 2, f"{exc.strerror}{where}")
            sys.exit(2)
        if debug:
            traceback.print_exc()
        else:
            # the exception's own text may quote input (a parser's message, a value): only its class is shown
            click.echo(f"internal error: {type(exc).__name__}\n(re-run with --debug for the traceback)", err=True)
        _error_envelope(args, "InternalError", INTERNAL, f"internal error: {type(exc).__name__}")
        sys.exit(INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)


#: what a shell reports for a program stopped by SIGPIPE (128 + 13): `trialkit screen ... | head` ends as `cat` would
SIGPIPE_EXIT = 141


_GROUPS = ("logic", "dictionary", "sandbox", "redcap")
#: commands whose --out is the file their report goes to (the others' --out is a folder of data)
_REPORT_TO_OUT = ("screen", "validate", "dictionary export")


def _error_envelope(args: list[str], kind: str, code: int, message: str, exc: TrialkitError | None = None) -> None:
    """When the command was to print JSON on stdout (`--format json` and no `--out`), the JSON envelope of the
    failure (docs/cli.md): a script reading stdout gets one JSON object whatever happened, `ok` false and the
    error's kind, exit code, message and where (the same words as on stderr)."""
    fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), None)
    for before, after in itertools.pairwise(args):
        if before == "--format":
            fmt = after
    if fmt != "json":
        return
    words = [a for a in args if not a.startswith("-")]
    name = " ".join(words[:2]) if words[:1] and words[0] in _GROUPS and len(words) > 1 else (words[:1] or ["?"])[0]
    if name in _REPORT_TO_OUT and any(a == "--out" or a.startswith("--out=") for a in args):
        return  # the JSON was to go to that file, not to stdout
    where = None
    if exc is not None and exc.location is not None:
        where = {k: v for k, v in vars(exc.location).items() if v is not None}
    error = {
        "type": kind,
        "exit_code": code,
        "message": message,
        "location": where,
        "diagnostics": [
            {**d.to_dict(), "message": scrub_argv(d.message, args)} for d in (exc.diagnostics if exc else ())
        ],
    }
    with contextlib.suppress(OSError):  # standard output is what failed (a full disk): stderr has said it
        click.echo(dumps(name, False, {"error": error}))


if __name__ == "__main__":  # pragma: no cover
    main()
