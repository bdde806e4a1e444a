"""What every command shares: the `--study` option, format names and the format an `--out` file's extension
implies, dates as YYYY-MM-DD, the JSON envelope, the exit-code table ending each `--help`, and a command group
that suggests the nearest command for a typo. docs/cli.md describes the same policy for users."""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import json
import os
import re
import select
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

F = TypeVar("F", bound=Callable[..., Any])

# ---- exit codes -------------------------------------------------------------------------------------------------

OK = 0
FAILED = 1  # the data or REDCap: findings, unreadable data, a network or API failure, a project that differs
USAGE = 2  # the command line or a definition: bad option, missing file, study/rule/logic file wrong
INTERNAL = 3  # a bug in trialkit (an exception no code path expected)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); a scheduler's SIGTERM ends with 143 (128 + SIGTERM)
STOPPED = 143  # a scheduler's SIGTERM (128 + SIGTERM)

USAGE_TEXT = "usage or definition error: bad option or value, file not found, study or rule file wrong"
_TAIL = (
    (INTERNAL, "internal error (a bug in trialkit; --debug shows the traceback)"),
    (INTERRUPTED, "interrupted (143: stopped by SIGTERM; 141: the output's reader left, as with | head)"),
)


def exit_codes(ok: str, failed: str | None = None, usage: str = USAGE_TEXT) -> Callable[[F], F]:
    """Decorator, above `@click.command`/`@click.group`: end the command's help with its exit codes.

    `failed` is what exit 1 means for this command (None: the command has no such outcome)."""

    def decorate(cmd: F) -> F:
        rows = [(OK, ok), *([(FAILED, failed)] if failed else []), (USAGE, usage), *_TAIL]
        # \b keeps click from re-flowing the table, so it is wrapped here
        table = "\n".join(
            textwrap.fill(text, width=96, initial_indent=f"  {code:<3}  ", subsequent_indent=" " * 7)
            for code, text in rows
        )
        block = f"\b\nExit codes (docs/cli.md):\n{table}"
        if not isinstance(cmd, click.Command):
            raise TypeError("put @exit_codes above @click.command / @click.group")
        cmd.epilog = f"{cmd.epilog.rstrip()}\n\n{block}" if cmd.epilog else block
        return cmd

    return decorate


# ---- dates ------------------------------------------------------------------------------------------------------


#: the one spelling of a date the help promises; date.fromisoformat alone also reads ISO week dates and the basic
#: format (2026W451, 20261102), so a slip would screen on a date nobody wrote
_YMD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _ymd(text: str) -> _dt.date:
    if not _YMD.fullmatch(text):
        raise ValueError("not YYYY-MM-DD")
    return _dt.date.fromisoformat(text)


class DateType(click.ParamType):
    """A calendar date written YYYY-MM-DD (the help shows that, not TEXT)."""

    name = "date"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:  # click 8.1 and 8.2+ signatures
        return "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> _dt.date:
        if isinstance(value, _dt.date):
            return value
        try:
            return _ymd(str(value))
        except ValueError:
            # the value is not repeated: argv may hold a secret pasted in the wrong place
            self.fail("not a date (YYYY-MM-DD)", param, ctx)


class DateTimeType(click.ParamType):
    """A date, or a date and time 'YYYY-MM-DD HH:MM' (logic's 'now'): a date stays a date."""

    name = "datetime"
    _FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "YYYY-MM-DD[ HH:MM]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> _dt.date:
        if isinstance(value, _dt.date):
            return value
        text = str(value)
        try:
            return _ymd(text) if len(text) == 10 else self._datetime(text)
        except ValueError:
            self.fail("expected YYYY-MM-DD or 'YYYY-MM-DD HH:MM'", param, ctx)

    def _datetime(self, text: str) -> _dt.datetime:
        _ymd(text[:10])  # strptime alone takes 2026-1-2
        for fmt in self._FORMATS:
            try:
                return _dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
        raise ValueError(text)


DATE = DateType()
DATETIME = DateTimeType()


def parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> _dt.date | None:
    """click callback: `YYYY-MM-DD` to a date (None stays None), a usage error otherwise. (Prefer type=DATE,
    which also shows YYYY-MM-DD in the help.)"""
    return None if value is None else DATE.convert(value, param, ctx)


# ---- --study ----------------------------------------------------------------------------------------------------

STUDY_HELP = "Study directory (holding study.yaml) or the study file."


def study_option(
    dest: str = "study_path",
    *,
    default: Any = None,
    help: str = STUDY_HELP,
    exists: bool = False,
    deprecated_aliases: Sequence[str] = (),
) -> Callable[[F], F]:
    """`--study PATH`, the one name of the study option in every command. `deprecated_aliases` (e.g.
    `--instruments`) still work, hidden from the help, with a note on stderr to use --study."""
    path_type = click.Path(exists=exists, path_type=Path)

    def resolve(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        # click handles the options given on the command line first, in their order, then the defaulted ones:
        # an alias may have been seen before --study
        if "trialkit.study" in ctx.meta:
            if ctx.get_parameter_source(dest) is ParameterSource.COMMANDLINE:
                raise click.UsageError(f"give --study or {ctx.meta['trialkit.study_alias']}, not both", ctx)
            return ctx.meta["trialkit.study"]
        return value

    def alias(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        used = param.opts[0]
        click.echo(f"warning: {used} is deprecated; use --study", err=True)
        if ctx.get_parameter_source(dest) is ParameterSource.COMMANDLINE:
            raise click.UsageError(f"give --study or {used}, not both", ctx)
        ctx.meta["trialkit.study"] = value
        ctx.meta["trialkit.study_alias"] = used
        ctx.params[dest] = value  # when --study was already defaulted

    def decorate(fn: F) -> F:
        for name in deprecated_aliases:
            fn = click.option(name, f"_alias_{name.strip('-')}", type=path_type, hidden=True, expose_value=False,
                              callback=alias)(fn)
        return click.option("--study", dest, type=path_type, default=default, show_default=default is not None,
                            help=help, callback=resolve)(fn)

    return decorate


# ---- output formats ---------------------------------------------------------------------------------------------

#: Old names still accepted for scripts: `table` was validate's and screen's name for `text`.
FORMAT_ALIASES = {"table": "text"}
#: The format an --out file's extension implies. `.txt` is left out: text is the default anyway, and a script
#: writing `--format csv --out x.txt` is not contradicting itself.
EXTENSION_FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".csv": "csv"}


def csv_only(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """click callback for an option naming a CSV file (`screen --log`, `--findings`): a name whose extension says
    another format (log.json, findings.html) is a usage error, as for --out, and nothing is written."""
    implied = EXTENSION_FORMATS.get(Path(value).suffix.lower()) if value is not None else None
    if implied not in (None, "csv"):
        raise click.UsageError(f"{param.opts[0]} {Path(value).name}: this file is CSV, not {implied}; name it .csv",
                               ctx)
    return value


class FormatChoice(click.Choice):
    """click.Choice over the format names, also taking the old aliases (hidden from the help)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.lower() in FORMAT_ALIASES:
            value = FORMAT_ALIASES[value.lower()]
        return super().convert(value, param, ctx)


def format_option(formats: Sequence[str], *, default: str = "text", help: str | None = None) -> Callable[[F], F]:
    """`--format` with `formats` (`text` for the human output: never `table`). The default follows `--out`'s
    extension where the command has one (see `resolve_format`)."""
    text = help or "Output format."
    return click.option("--format", "fmt", type=FormatChoice(list(formats)), default=default, show_default=True,
                        help=text)


def resolve_format(fmt: str, out: Path | str | None, formats: Sequence[str], *, param: str = "fmt") -> str:
    """The format to write: `--format` when given, else the one `--out`'s extension names (report.html -> html),
    else the default. A contradiction (`--format json --out r.html`), or an extension naming a format this command
    cannot write, is a usage error: the file would not hold what its name says."""
    ctx = click.get_current_context()
    implied = EXTENSION_FORMATS.get(Path(out).suffix.lower()) if out is not None else None
    if implied is None:
        return fmt
    given = ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE
    if implied not in formats:
        raise click.UsageError(f"--out {Path(out).name}: this command does not write {implied} "
                               f"(formats: {', '.join(formats)}); choose another file name", ctx)
    if given and fmt != implied:
        raise click.UsageError(f"--format {fmt} contradicts --out {Path(out).name} ({implied}); give one or "
                               "make them agree", ctx)
    return implied


# ---- the JSON envelope ------------------------------------------------------------------------------------------


def envelope(command: str, ok: bool, payload: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """The JSON envelope every command prints: `command` (its full name, e.g. "redcap pull") and `ok` (true
    exactly when the command exits 0) first, then the command's own keys (a `command` or `ok` among them gives
    way to the envelope's)."""
    doc: dict[str, Any] = {"command": command, "ok": ok}
    doc.update((k, v) for k, v in {**(payload or {}), **fields}.items() if k not in doc)
    return doc


def dumps(command: str, ok: bool, payload: Mapping[str, Any] | None = None, **fields: Any) -> str:
    """`envelope(...)` as indented JSON (no trailing newline)."""
    return json.dumps(envelope(command, ok, payload, **fields), indent=2, ensure_ascii=False, default=str)


_OPEN = re.compile(r"\s*\{(\s*)")


def wrap_json_text(text: str, command: str, ok: bool) -> str:
    """The envelope keys put at the front of a JSON object already rendered as text (a screening report or
    findings may be large: they are not parsed and written again). Keeps the text's indentation."""
    m = _OPEN.match(text)
    if m is None:
        raise ValueError("not a JSON object")
    ws = m.group(1) or " "
    head = f",{ws}".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in (("command", command), ("ok", ok)))
    rest = text[m.end():]
    return "{" + ws + head + (rest if rest.startswith("}") else f",{ws}{rest}")


# ---- a group that suggests the nearest command ------------------------------------------------------------------


class SuggestingGroup(click.Group):
    """A click group whose "No such command" names the nearest command, if one is close enough."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0])
        if not ctx.resilient_parsing and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            ctx.fail(f"No such command '{name}'.{hint}")
        return super().resolve_command(ctx, args)


_STDOUT_GONE: list[bool] = []  # once found gone, standard output is /dev/null: the answer is kept


def stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has left (`trialkit screen ... --format csv | head -1`),
    asked of the system (poll), not of the error: polars' write errors carry no errno. If so, standard output is
    pointed at /dev/null, so that the interpreter's last flush does not fail again with a message: the reader
    wanted no more, which is neither trialkit's error nor the data's."""
    if _STDOUT_GONE:
        return True
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # not a file (a test's captured output)
        return False
    if gone:
        _STDOUT_GONE.append(True)
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return gone
