"""`trialkit demo`: screen the synthetic KAP-TRD data set and write the HTML report."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import click

EXAMPLE = """
\b
Examples:
  trialkit demo
  trialkit demo --out-dir /tmp/kap-demo
  trialkit demo --data my_export.csv --as-of 2026-11-26

\b
Writes report.html (open it in a browser), screening.json and screening_log.csv into the output folder.
Exit codes: 0 done, 1 the data could not be screened, 2 usage or definition errors.
"""


def _parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> _dt.date | None:
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@click.command("demo", epilog=EXAMPLE)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("trialkit-demo"),
    show_default=True,
    help="Folder for report.html, screening.json and screening_log.csv.",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Intake data to screen instead of examples/kap_trd_intake.csv.",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rule file instead of eligibility_rules/kap_trd.yaml.",
)
@click.option(
    "--as-of",
    "as_of",
    callback=_parse_date,
    help="Screening reference date (default: 2026-11-02, the example data set's).",
)
def demo(out_dir: Path, data: Path | None, rules_path: Path | None, as_of: _dt.date | None) -> None:
    """Screen the example KAP-TRD candidates (a seeded synthetic data set) against the protocol's eligibility
    rules and write a self-contained HTML report with the CONSORT-style funnel and every candidate's checklist."""
    from trialkit.screening.run import DEMO_AS_OF, run_demo

    as_of = as_of or DEMO_AS_OF
    result = run_demo(
        out_dir,
        data=data,
        rules=rules_path,
        as_of=as_of,
        generated_at=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    sm = result.report.summary
    stamp = result.report.screening.rules.stamp()
    click.echo(
        f"screened {sm.total} candidates against {stamp['id']} {stamp['version']} as of {as_of.isoformat()}: "
        f"{sm.by_disposition['eligible']} eligible, {sm.by_disposition['ineligible']} ineligible, "
        f"{sm.by_disposition['pending']} pending"
    )
    click.echo(f"report:        {result.html}")
    click.echo(f"results:       {result.json}")
    click.echo(f"screening log: {result.log}")
