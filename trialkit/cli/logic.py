"""`trialkit logic check|eval`: try REDCap logic on the command line. Thin layer over trialkit.logic."""

from __future__ import annotations

import csv
import math
import sys
from datetime import date, datetime
from pathlib import Path

import click
import polars as pl

from trialkit.cli.options import DATETIME, SuggestingGroup, dumps, exit_codes, format_option, study_option
from trialkit.errors import DataError, Diagnostic, Location, LogicSyntaxError, UsageError
from trialkit.logic import (
    FieldSpec,
    check,
    evaluate,
    parse,
    reference_columns,
    widen_events,
)
from trialkit.logic.ast import EVENT_SMART
from trialkit.records.readers import ROW, read_text_frame

SYNTAX_CODE = "LOG001"  # the code `trialkit check` (definitions) uses for logic syntax errors


def _caret(text: str, line: int, col: int) -> str:
    lines = text.splitlines() or [""]
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    return f"  {src}\n  {' ' * max(col - 1, 0)}^"


def _load_study(study_path: Path | None):
    if study_path is None:
        return None
    from trialkit.definitions import load_study

    return load_study(study_path)


def _study_context(study) -> tuple[dict[str, FieldSpec], list[str] | None]:
    """Field specs and (longitudinal) event names; check() finds the repeating forms in the specs itself."""
    events = [e.name for e in study.events] if study.longitudinal else None
    return study.field_specs(), events


def _parse_or_exit(expression: str, fmt: str):
    try:
        return parse(expression)
    except LogicSyntaxError as err:
        if fmt == "json":
            diag = Diagnostic(SYNTAX_CODE, err.message, None, err.line, err.col)
            click.echo(dumps("logic check", False, valid=False, diagnostics=[diag.to_dict()]))
        else:
            click.echo(f"{err.line}:{err.col}: {SYNTAX_CODE} {err.message}", err=True)
            click.echo(_caret(expression, err.line, err.col), err=True)
        sys.exit(2)


_STUDY = study_option(
    exists=True,
    deprecated_aliases=("--instruments",),
    help="Study directory (study.yaml + instruments/) or file: also check field names, types, choice codes and "
    "events.",
)


@exit_codes("done", "the data could not be read or evaluated (logic eval)",
            usage="an invalid expression (logic check), or a usage or definition error")
@click.group(cls=SuggestingGroup)
def logic() -> None:
    """Try REDCap logic: check an expression, or evaluate it over a REDCap export."""


@exit_codes("the expression is valid (warnings may be printed)",
            usage="the expression is not valid (positioned messages), or a usage or definition error")
@logic.command("check")
@click.argument("expression")
@_STUDY
@format_option(["text", "json"])
def check_command(expression: str, study_path: Path | None, fmt: str) -> None:
    """Check EXPRESSION. Without --study only syntax and function names are checked.

    \b
    Example:
      trialkit logic check "datediff([dob], 'today', 'y') >= 18 and [consent_signed] = '1'" --study .
    """
    expr = _parse_or_exit(expression, fmt)
    diags: list[Diagnostic] = []
    study = _load_study(study_path)
    if study is not None:
        fields, events = _study_context(study)
        diags = check(expr, fields, events=events)
    errors = [d for d in diags if d.is_error]
    if fmt == "json":
        click.echo(dumps("logic check", not errors, valid=not errors, diagnostics=[d.to_dict() for d in diags]))
    else:
        for d in diags:
            click.echo(d.format(), err=True)
            if d.line is not None and d.col is not None:
                click.echo(_caret(expression, d.line, d.col), err=True)
        if not errors:
            click.echo("ok" if not diags else f"ok ({len(diags)} warning(s))")
    if errors:
        sys.exit(2)


def _read_flat_csv(path: str) -> pl.DataFrame:
    """A REDCap flat export in any intake format (CSV, TSV, Excel, JSON, NDJSON, Parquet; `-` standard input,
    recognised from its first bytes): every cell text, blank = ''. Stays text; logic types it.

    Read by the intake reader: a damaged file is a located error that quotes nothing of it (polars' own
    messages repeat the offending line), and a row cut off short is refused rather than padded with blanks."""
    frame, _ = read_text_frame(path)
    frame = frame.drop(ROW)
    if frame.width == 0:
        raise DataError("no columns", location=Location(file=path))
    if frame.height == 0:
        # nothing to evaluate is an unreadable-data outcome, as validate and screen say of the same file
        raise DataError("no data rows (a header only): nothing to evaluate", location=Location(file=path))
    return frame.with_columns(pl.all().fill_null(""))


def _format_value(value, kind: str, mode: str) -> str:
    if value is None:
        return "unknown" if kind == "bool" and mode == "kleene" else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") if (value.hour, value.minute) != (0, 0) else value.strftime("%Y-%m-%d")
    return str(value)


def _json_value(value, kind: str, mode: str):  # type: ignore[no-untyped-def]
    """A value as JSON: true/false, a number, text; null for unknown (kleene) or blank."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() and abs(value) < 1e15 else value
    return _format_value(value, kind, mode)  # dates as YYYY-MM-DD, a non-finite number as text


@exit_codes("evaluated", "the data could not be read or evaluated (no such column, damaged file)",
            usage="an invalid expression, or a usage or definition error")
@logic.command("eval")
@click.argument("expression")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="REDCap flat export: CSV, TSV, Excel, JSON, NDJSON or Parquet, read as text (checkbox options as "
         "field___code); - reads standard input.",
)
@click.option("--mode", type=click.Choice(["redcap", "kleene"]), default="redcap", show_default=True)
@click.option(
    "--as-of", "as_of", type=DATETIME, help="Date or time ('YYYY-MM-DD HH:MM') for 'today'/'now'. Default: today."
)
@study_option(exists=True, deprecated_aliases=("--instruments",),
              help="Study directory or file: type fields by their definitions (without one, every column is "
                   "text, compared and computed cell by cell as REDCap does).")
@click.option("--record-id", "record_id", help="Record id column (default: the first column).")
@click.option("--explain", is_flag=True, help="kleene: add a 'missing' column naming the fields that made it unknown.")
@format_option(["csv", "json"], default="csv",
               help="csv: key columns and value; json: the results with true/false, numbers and null.")
def eval_command(
    expression: str,
    data_path: str,
    mode: str,
    as_of: date | None,
    study_path: Path | None,
    record_id: str | None,
    explain: bool,
    fmt: str,
) -> None:
    """Evaluate EXPRESSION for every row of a REDCap export; print CSV record_id,value.

    Values: true, false, unknown (kleene), blank, or the number/text. A longitudinal export (with
    redcap_event_name) is evaluated per record-event, like REDCap's filterLogic: [field] is the row's own
    event, [event][field] any event of the same record; the event (and instance) columns are printed too.

    \b
    Example:
      trialkit logic eval "[age] >= 18 and [sex] = '2'" --data export.csv --mode kleene --as-of 2024-03-01
    """
    expr = _parse_or_exit(expression, "text")
    when = as_of or date.today()  # the CLI edge may read the clock; the library never does
    frame = _read_flat_csv(data_path)
    fields = None
    study = _load_study(study_path)
    if study is not None:
        fields = study.field_specs()
    # the study's record id where it names one: a JSON export's keys need not come in dictionary order
    named = study.record_id_field if study is not None and study.record_id_field in frame.columns else None
    rid = record_id or named or frame.columns[0]
    if rid not in frame.columns:
        raise UsageError(f"--record-id {rid!r} is not a column of {Path(data_path).name}")
    key_cols = [rid]
    if "redcap_event_name" in frame.columns:
        key_cols.append("redcap_event_name")
        # [previous-event-name][x] and its kin name no event of the data: the evaluator says it cannot evaluate them
        needed = [c for c in reference_columns(expr) if ":" in c and c.split(":", 1)[0] not in EVENT_SMART]
        if needed:
            wanted = {c.split(":", 1)[1] for c in needed}
            frame = widen_events(frame, record_id=rid, columns=sorted(wanted & set(frame.columns)), keep_rows=True)
            for column in needed:
                if column not in frame.columns:
                    event, name = column.split(":", 1)
                    raise DataError(f"no column for [{event}][{name}]: no {name!r} values on event {event!r}")
    for extra in ("redcap_repeat_instrument", "redcap_repeat_instance"):
        if extra in frame.columns:
            key_cols.append(extra)
    result = evaluate(expr, frame, mode=mode, as_of=when, fields=fields, record_id=rid, explain=explain)
    keys = frame.select(key_cols)
    raw = result.values.to_list()
    values = [_format_value(v, result.kind, mode) for v in raw]
    masked = False
    if study is not None and result.kind != "bool":
        from trialkit.definitions.privacy import identifying_fields

        private = identifying_fields(study)
        read = {c.split(":", 1)[-1].split("___", 1)[0] for c in reference_columns(expr)}
        if read & private:  # a value computed from an identifier is one too: show only whether there is one
            values = ["***" if v != "" else "" for v in values]
            masked = True
            click.echo(f"note: values computed from identifier fields ({', '.join(sorted(read & private))}) are "
                       "shown as ***", err=True)
    missing = result.missing.to_list() if result.missing is not None else None
    if fmt == "json":
        rows = []
        for i, row in enumerate(keys.iter_rows(named=True)):
            item = {**row, "value": (values[i] or None) if masked else _json_value(raw[i], result.kind, mode)}
            if missing is not None:
                item["missing"] = missing[i]
            rows.append(item)
        click.echo(dumps("logic eval", True, mode=mode, as_of=_format_value(when, "date", mode), results=rows))
        return
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow([*key_cols, "value", *(["missing"] if missing is not None else [])])
    for i, row in enumerate(keys.iter_rows()):
        cells = ["" if c is None else str(c) for c in row]
        out.writerow([*cells, values[i], *([";".join(missing[i])] if missing is not None else [])])
