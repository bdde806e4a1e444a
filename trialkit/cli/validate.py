"""`trialkit validate DATA`: check an intake file against the study's instruments and print the findings."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click

from trialkit.cli.options import parse_date
from trialkit.errors import DataError, UsageError
from trialkit.validation.findings import OUTPUT_FORMATS

EXAMPLE = """
\b
Examples:
  trialkit validate intake.csv
  trialkit validate export.xlsx --study studies/kap --format csv --out findings.csv
  trialkit validate redcap_export.json --format json --as-of 2026-11-26

\b
Exit codes: 0 no errors (warnings alone do not fail unless --strict), 1 findings, 2 unusable input
(unreadable file, not this study's data, bad options or study definition).
"""


@click.command("validate", epilog=EXAMPLE)
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--study",
    "study_path",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Study directory (holding study.yaml) or the study file.",
)
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the findings to this file.")
@click.option("--event", help="Unique event name whose rows make the records (longitudinal studies).")
@click.option("--sheet", help="Excel sheet name (default: the first sheet).")
@click.option(
    "--as-of",
    "as_of",
    callback=parse_date,
    help="Date used as 'today' for ranges such as max: today and date logic (default: today).",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--limit", type=click.IntRange(min=0), default=200, show_default=True, help="Rows shown as a table.")
def validate(
    data: Path,
    study_path: Path,
    fmt: str,
    out: Path | None,
    event: str | None,
    sheet: str | None,
    as_of: _dt.date | None,
    strict: bool,
    limit: int,
) -> None:
    """Validate intake DATA (CSV, TSV, Excel .xlsx, JSON, NDJSON or Parquet; REDCap flat export or one row
    per record) against the study's instruments: types, validation types, ranges, choice codes, required
    fields (where branching logic shows them), values hidden by branching logic, calculated fields and
    unknown columns. Identifier (PHI) field values are masked in the output."""
    from trialkit.definitions.loader import load_study
    from trialkit.validation.chunked import validate_file

    study = load_study(study_path)
    as_of = as_of or _dt.date.today()
    try:
        # by chunks of whole records: a 1M-row export is never held as one all-text frame (same findings)
        findings = validate_file(data, study, event=event, sheet=sheet, as_of=as_of)
    except DataError as exc:
        # Unusable input is a usage problem for this command (exit 2), not a finding in the data.
        raise UsageError(exc.message, location=exc.location) from exc
    text = findings.to_table(limit=limit or None) if fmt == "table" else findings.render(fmt)
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
        click.echo(
            f"{findings.errors} error(s), {findings.warnings} warning(s) in {data} "
            f"(as of {as_of.isoformat()}); findings written to {out}",
            err=True,
        )
    else:
        click.echo(text, nl=False)
    if findings.errors > 0 or (strict and findings.warnings > 0):
        # sys.exit, not ctx.exit: trialkit.cli.main runs click with standalone_mode=False, where click turns
        # ctx.exit(n) into a return value that main() does not pass on.
        sys.exit(1)
