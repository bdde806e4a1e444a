"""`trialkit validate DATA`: check an intake file against the study's instruments and print the findings."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click

from trialkit.cli.options import DATE, exit_codes, format_option, resolve_format, study_option, wrap_json_text
from trialkit.errors import UsageError

FORMATS = ("text", "csv", "json")

EXAMPLE = """
\b
Examples:
  trialkit validate intake.csv
  trialkit validate export.xlsx --study studies/kap --out findings.csv   # csv, from the name
  trialkit validate redcap_export.json --format json --as-of 2026-11-26
"""


@exit_codes("no errors (warnings alone do not fail unless --strict)",
            "findings (errors, or warnings with --strict), or the data could not be read (unreadable file, "
            "not this study's data)")
@click.command("validate", epilog=EXAMPLE)
@click.argument("data", type=click.Path(exists=True, allow_dash=True, path_type=Path))
@study_option(default=Path("."))
@format_option(FORMATS, help="Output format (default: the one --out's extension names, else text).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the findings to this file.")
@click.option("--event", help="Unique event name whose rows make the records (longitudinal studies).")
@click.option("--sheet", help="Excel sheet name (default: the first sheet).")
@click.option(
    "--as-of",
    "as_of",
    type=DATE,
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

    fmt = resolve_format(fmt, out, FORMATS)
    study = load_study(study_path)
    as_of = as_of or _dt.date.today()
    # by chunks of whole records: a 1M-row export is never held as one all-text frame (same findings).
    # Unreadable data is a DataError: exit 1, as in every command (docs/cli.md).
    findings = validate_file(data, study, event=event, sheet=sheet, as_of=as_of)
    failed = findings.errors > 0 or (strict and findings.warnings > 0)
    if fmt == "text":
        text = findings.to_table(limit=limit or None)
    else:
        text = findings.render(fmt)
        text = wrap_json_text(text, "validate", not failed) if fmt == "json" else text
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
    if failed:
        # sys.exit, not ctx.exit: trialkit.cli.main runs click with standalone_mode=False, where click turns
        # ctx.exit(n) into a return value that main() does not pass on.
        sys.exit(1)
