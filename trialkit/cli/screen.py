"""`trialkit screen DATA --rules FILE`: screen every candidate against an eligibility rule set."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from trialkit.cli.options import (
    DATE,
    csv_only,
    exit_codes,
    format_option,
    resolve_format,
    stdout_gone,
    study_option,
    wrap_json_text,
)
from trialkit.errors import UsageError

if TYPE_CHECKING:
    from trialkit.screening.reports import Report

EXAMPLE = """
\b
Examples:
  trialkit screen examples/kap_trd_intake.csv --rules eligibility_rules/kap_trd.yaml --as-of 2026-11-02
  trialkit screen export.csv --rules eligibility_rules/kap_trd.yaml --out report.html
  trialkit screen export.parquet --rules rules.yaml --format json --log screening_log.csv
  trialkit screen examples/kap_trd_intake.csv --rules eligibility_rules/kap_trd.yaml --record 0005
"""

FORMATS = ("text", "csv", "json", "html")


def _write(path: Path, text: str | Callable[[BinaryIO], None]) -> None:
    """Write text, or let `text` write its bytes to the open file (a million candidates' CSV is not built as one
    string first)."""
    try:
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            with path.open("wb") as handle:
                text(handle)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_json(report: Report, handle: BinaryIO) -> None:
    """The JSON report with its envelope, written to the file as it is made (a million candidates are never one
    string)."""
    from trialkit.screening.reports import write_json

    write_json(report, handle, opening=lambda text: wrap_json_text(text, "screen", True))


@exit_codes("screening ran (whatever the dispositions)",
            "the data could not be screened (unreadable, wrong shape, no records)")
@click.command("screen", epilog=EXAMPLE)
@click.argument("data", type=click.Path(exists=True, allow_dash=True, path_type=Path))
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Eligibility rule file (YAML).",
)
@study_option(help="Study directory or file (default: the one the rule file names, else the current directory).")
@click.option(
    "--as-of",
    "as_of",
    type=DATE,
    help="Screening reference date where a candidate has none recorded (default: today).",
)
@format_option(FORMATS, help="Output format (default: the one --out's extension names, else text).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the output to this file.")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=csv_only,
    help="Also write the screening log (CSV, no identifier fields) to this file.",
)
@click.option("--event", help="Unique event name whose rows are the candidates (default: the first event).")
@click.option("--sheet", help="Excel sheet name (default: the first sheet).")
@click.option(
    "--record",
    "records",
    multiple=True,
    help="Only this candidate (repeatable); the table then shows each one's criterion checklist.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Candidates listed in the table format (0: all).",
)
def screen(
    data: Path,
    rules_path: Path,
    study_path: Path | None,
    as_of: _dt.date | None,
    fmt: str,
    out: Path | None,
    log_path: Path | None,
    event: str | None,
    sheet: str | None,
    records: tuple[str, ...],
    limit: int,
) -> None:
    """Screen every candidate in DATA against the rule set: each criterion met, not met, unknown (with the
    missing fields) or not applicable; each candidate eligible, ineligible (primary reason first) or pending
    (with what is still needed). The as-of date and the rule set's id, version and sha256 are always shown."""
    from trialkit.screening.reports import (
        MAX_CHECKLISTS,
        MAX_ROWS,
        build_report,
        render,
        render_table,
        without_checklist_values,
        write_csv,
        write_screening_log,
    )
    from trialkit.screening.run import identifier_fields, load_rules, resolve_study, screen_file

    fmt = resolve_format(fmt, out, FORMATS)
    fmt = "table" if fmt == "text" else fmt  # the library's name for it (trialkit.screening.reports.render)
    as_of = as_of or _dt.date.today()  # the CLI is the edge: the library never reads the clock
    study = resolve_study(rules_path, study_path)
    rules = load_rules(rules_path, study)
    screening = screen_file(
        data, rules, study, as_of=as_of, event=event, sheet=sheet, records=list(dict.fromkeys(records)) or None
    )
    # checklists (values per criterion) are built only where they are shown
    if records:
        checklists = None
    elif fmt in ("json", "html"):
        checklists = MAX_CHECKLISTS
    else:
        checklists = 0
        screening = without_checklist_values(screening)  # the values a checklist would show are let go
    # the terminal table and the HTML page list the first candidates only: their text cells are all they need
    # (the CSV, the JSON and the screening log list every candidate)
    rows = None
    if log_path is None and not records:
        rows = (limit or None) if fmt == "table" else MAX_ROWS if fmt == "html" else None
    # the criterion label columns of every candidate are built whole by no output: the CSV and JSON writers and
    # the screening log add them a slice at a time or do without (less memory at a million)
    report = build_report(
        screening, checklists=checklists, study=study, source=str(data), rows=rows, labels=False
    )
    details = bool(records)
    text: str | Callable[[BinaryIO], None]
    if fmt == "csv":
        text = partial(write_csv, report)
    elif fmt == "json":
        text = partial(_write_json, report)
    elif fmt == "table":
        text = render_table(report, limit=limit or None, details=details)
    else:
        text = render(report, fmt)
    stamp = rules.stamp()
    sm = report.summary
    line = (
        f"screened {sm.total} candidate(s) against {stamp['id']} {stamp['version']} (sha256 {stamp['sha256'][:12]}) "
        f"as of {as_of.isoformat()}: {sm.by_disposition['eligible']} eligible, "
        f"{sm.by_disposition['ineligible']} ineligible, {sm.by_disposition['pending']} pending"
    )
    if log_path is not None:  # first: a log that cannot be written fails the command before stdout holds a report
        _write(log_path, partial(write_screening_log, report, identifiers=identifier_fields(study)))
        click.echo(f"screening log written to {log_path}", err=True)
    if out is not None:
        _write(out, text)
        click.echo(f"{line}; {fmt} written to {out}", err=True)
    elif isinstance(text, str):
        click.echo(text, nl=False)
        if fmt != "table":
            click.echo(line, err=True)
    else:  # CSV and JSON go to standard output as to a file: written as made, never one string
        sys.stdout.flush()
        try:
            text(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except OSError as exc:  # a full disk behind `> file`; polars' errors name no errno, only their text
            if stdout_gone():
                raise  # the reader left (`| head`): trialkit.cli ends quietly, whichever error said so
            raise UsageError(f"cannot write to standard output: {exc.strerror or exc}") from None
        click.echo(line, err=True)
