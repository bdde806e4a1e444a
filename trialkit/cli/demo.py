"""`trialkit demo`: the nightly job end to end on the embedded REDCap sandbox, then the HTML report.

By default the demo starts the local REDCap-compatible server with the KAP-TRD project, loads the synthetic
intake into it through PyCap, runs the nightly job (pull, validate, screen, write results back, ledger) and
writes the report from what REDCap then holds. `--offline` screens the file directly instead.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import click

from trialkit.cli.options import DATE, exit_codes

EXAMPLE = """
\b
Examples:
  trialkit demo
  trialkit demo --out-dir /tmp/kap-demo
  trialkit demo --offline --data my_export.csv --as-of 2026-11-26

\b
Writes report.html (open it in a browser), screening.json, screening_log.csv, validation_findings.csv and
(through the sandbox) redcap_export.csv and ledger.sqlite into the output folder.
"""


@exit_codes("done", "the data could not be screened, or the embedded REDCap sandbox failed")
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
    type=DATE,
    help="Screening reference date (default: 2026-11-02, the example data set's).",
)
@click.option("--offline", is_flag=True, help="Screen the data file directly, without the embedded REDCap sandbox.")
def demo(out_dir: Path, data: Path | None, rules_path: Path | None, as_of: _dt.date | None, offline: bool) -> None:
    """Run the KAP-TRD nightly job on the embedded REDCap sandbox with the example candidates (a seeded
    synthetic data set), then write a self-contained HTML report with the CONSORT-style funnel and every
    candidate's checklist."""
    from trialkit.screening.run import DEMO_AS_OF, run_demo

    as_of = as_of or DEMO_AS_OF
    study = None
    source = None
    if not offline:
        data, study, source = _through_sandbox(out_dir, data, rules_path, as_of)
    else:
        data, rules_path, study = _demo_inputs(data, rules_path)
    result = run_demo(
        out_dir,
        data=data,
        rules=rules_path,
        study=study,
        as_of=as_of,
        generated_at=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        source=source,
    )
    findings_path = _write_findings(out_dir, data, study, as_of)
    sm = result.report.summary
    stamp = result.report.screening.rules.stamp()
    click.echo(
        f"screened {sm.total} candidates against {stamp['id']} {stamp['version']} (sha256 {stamp['sha256'][:12]}) "
        f"as of {as_of.isoformat()}: "
        f"{sm.by_disposition['eligible']} eligible, {sm.by_disposition['ineligible']} ineligible, "
        f"{sm.by_disposition['pending']} pending"
    )
    click.echo(f"report:        {result.html}")
    click.echo(f"results:       {result.json}")
    click.echo(f"screening log: {result.log}")
    click.echo(f"validation:    {findings_path}")
    if not offline:
        click.echo(f"REDCap export: {data}")
        click.echo(f"ledger:        {out_dir / 'ledger.sqlite'}")


def _demo_inputs(data: Path | None, rules_path: Path | None) -> tuple[Path, Path, Any]:
    """The data file, rule file and study the demo uses: the packaged example unless told otherwise."""
    from trialkit.errors import UsageError
    from trialkit.screening.run import project_root, resolve_study

    root = project_root()
    data = data or root / "examples" / "kap_trd_intake.csv"
    rules_path = rules_path or root / "eligibility_rules" / "kap_trd.yaml"
    if not data.is_file():
        raise UsageError(f"demo data not found: {data} (run `python examples/generate_intake.py`)")
    return data, rules_path, resolve_study(rules_path, root if (root / "study.yaml").is_file() else None)


def _write_findings(out_dir: Path, data: Path, study: Any, as_of: _dt.date) -> Path:
    """The validation findings for the screened file, beside the report: the report flags the candidates whose
    results they affected, this file says what to correct in each record."""
    from trialkit.validation.chunked import validate_file

    findings = validate_file(data, study, as_of=as_of)
    path = out_dir / "validation_findings.csv"
    path.write_text(findings.render("csv"), encoding="utf-8")
    click.echo(f"validation: {findings.errors} error(s), {findings.warnings} warning(s) in {data.name}")
    return path


def _through_sandbox(
    out_dir: Path, data: Path | None, rules_path: Path | None, as_of: _dt.date
) -> tuple[Path, Any, str]:
    """Load the intake into a fresh sandbox project, run the nightly job, and export what REDCap holds.
    Returns the export file, the study it was checked against and where the data came from (for reports)."""
    import polars as pl

    from trialkit.redcap.client import RedcapClient, Token
    from trialkit.redcap.sandbox import ProjectSpec, running_sandbox
    from trialkit.redcap.sync import Ledger, run_nightly
    from trialkit.screening.run import load_rules

    data, rules_path, study = _demo_inputs(data, rules_path)
    rules = load_rules(rules_path, study)
    # REDCap's flat export shape: every cell text, blanks left out of the import
    intake = pl.read_csv(data, infer_schema=False)
    rows = [{k: v for k, v in row.items() if v is not None} for row in intake.iter_rows(named=True)]

    out_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = out_dir / "ledger.sqlite"
    ledger_path.unlink(missing_ok=True)  # each demo starts a fresh REDCap project, so a fresh ledger
    with running_sandbox(ProjectSpec.from_definition(study)) as sandbox:
        click.echo(f"embedded REDCap sandbox at {sandbox.url} (project {study.name}, {len(study.instruments)} forms)")
        client = RedcapClient(sandbox.url, Token(sandbox.token))
        written = _import(client, rows, data)
        click.echo(f"imported {len(set(written))} candidates ({len(rows)} rows) through PyCap")
        ledger = Ledger(ledger_path)
        try:
            night = run_nightly(client, study, rules, ledger=ledger, as_of=as_of, now=_dt.datetime.now())
        finally:
            ledger.close()
            # the lock guards concurrent nightly runs; the demo's fresh ledger has no other user, so no file is
            # left behind that the demo does not list
            Path(f"{ledger_path}.lock").unlink(missing_ok=True)
        click.echo(
            f"nightly job: pulled {night.pulled}, wrote {night.written} results back to REDCap, "
            f"{night.invalid_records} record(s) with validation errors (ledger: {ledger_path})"
        )
        exported = client.export_records()
        pulled = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        source = f"REDCap {sandbox.url} (embedded sandbox, project {study.name}), exported {pulled}"
    export_path = out_dir / "redcap_export.csv"
    columns = list(dict.fromkeys(k for row in exported for k in row))
    pl.DataFrame(
        # blanks as empty unquoted cells, as REDCap's CSV export writes them
        [{c: None if row.get(c) in (None, "") else str(row[c]) for c in columns} for row in exported],
        schema=dict.fromkeys(columns, pl.String),
    ).write_csv(export_path)
    return export_path, study, source


def _import(client: Any, rows: list[dict[str, str]], data: Path) -> list[str]:
    """The intake imported into the sandbox. REDCap's refusal quotes every value it refused, identifiers
    included: it is told here by record and field and REDCap's reason only."""
    import csv

    from trialkit.errors import RedcapError

    try:
        return client.import_records(rows)
    except RedcapError as exc:
        text = str(exc).split(": ", 1)[-1]
        refused = []
        for line in text.splitlines():
            cells = next(csv.reader([line]), [])
            if len(cells) >= 4:  # "record","field","value","message": the value is left out
                refused.append(f"record {cells[0]}, field {cells[1]}: {cells[3]}")
        if not refused:
            raise
        shown = "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more" if len(refused) > 10 else "")
        raise RedcapError(
            f"the REDCap sandbox refused {len(refused)} value(s) of {data.name}: {shown}. "
            f"`trialkit validate {data}` lists every problem; `trialkit demo --offline --data {data}` screens "
            "the file without REDCap"
        ) from None
