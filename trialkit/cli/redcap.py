"""`trialkit redcap ...`: jobs against a REDCap project (the real one, or the sandbox)."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

import click

from trialkit.cli.options import parse_date
from trialkit.redcap.client import DEFAULT_TOKEN_ENV


@click.group()
def redcap() -> None:
    """Work with a REDCap project through its API (token from an environment variable or a 0600 file)."""


@redcap.command()
@click.option("--url", required=True, help="REDCap API URL, ending in /api/.")
@click.option("--token-env", default=DEFAULT_TOKEN_ENV, show_default=True,
              help="Environment variable holding the API token.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the API token (must be chmod 600). Wins over --token-env.")
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Eligibility rule file.")
@click.option("--study", "study_dir", type=click.Path(path_type=Path), default=None,
              help="Study directory (default: the one the rule file names, else the current directory).")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("trialkit-ledger.sqlite"), show_default=True, help="SQLite ledger of runs.")
@click.option("--as-of", "as_of", callback=parse_date, help="Screening date YYYY-MM-DD (default: today).")
@click.option("--full", is_flag=True, help="Pull and screen every record, not only changed or undecided ones.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per HTTP request.")
@click.option("--attempts", default=5, show_default=True, type=click.IntRange(1, 20),
              help="Tries per request on network failures and server error pages (backoff 0.5 s, doubling).")
@click.option("--findings", "findings_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the validation findings of the pulled records here (CSV; identifier values masked).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def nightly(url, token_env, token_file, rules_path, study_dir, ledger_path, as_of, full, timeout, attempts,
            findings_path, fmt) -> None:
    """Pull intake, validate, screen and write results back to REDCap; safe to rerun after any failure.

    Exit status: 0 when the run completed (records with validation errors are screened all the same and
    counted on stderr), 1 when REDCap or the network failed (rerun: what landed is not written twice), 2 for
    usage or definition errors (including a ledger that another run is using).

    \b
    Example:
      REDCAP_API_TOKEN=... trialkit redcap nightly --url https://redcap.example.org/api/ \\
          --rules eligibility_rules/kap_trd.yaml --ledger /var/lib/trialkit/kap.sqlite
    """
    from trialkit.redcap.client import RedcapClient, RetryPolicy, load_token
    from trialkit.redcap.sync import Ledger, run_nightly
    from trialkit.screening.run import load_rules, resolve_study

    token = load_token(token_env, token_file)
    study = resolve_study(rules_path, study_dir)
    rules = load_rules(rules_path, study)
    day = as_of or dt.date.today()  # the CLI is the edge: the library never reads the clock
    client = RedcapClient(url, token, timeout=timeout, retry=RetryPolicy(attempts=attempts))
    ledger = Ledger(ledger_path)
    # a scheduler's stop (SIGTERM) unwinds like Ctrl-C, so the ledger records the run as stopped, not running
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        result = run_nightly(client, study, rules, ledger=ledger, as_of=day, now=dt.datetime.now(), full=full,
                             clock=dt.datetime.now)
    finally:
        signal.signal(signal.SIGTERM, previous)
        ledger.close()
    if findings_path is not None and result.findings is not None:
        result.findings.to_csv(findings_path)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    counts = ", ".join(f"{n} {d}" for d, n in sorted(result.dispositions.items())) or "none"
    click.echo(
        f"as of {result.as_of}: run {result.run_id} ({'full' if result.full else 'incremental'}) "
        f"screened {result.pulled} record(s): {counts}; wrote {result.written}, unchanged {result.unchanged}"
    )
    if result.deleted:
        click.echo(f"{result.deleted} record(s) deleted in REDCap since the pull: their results were not written",
                   err=True)
    if result.invalid_records:
        where = f"see {findings_path}" if findings_path else "use --findings FILE to list them"
        click.echo(f"{result.invalid_records} record(s) have validation errors ({where})", err=True)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


from trialkit.cli.redcap_data import pull, push  # noqa: E402  (the data commands, kept in their own module)

redcap.add_command(pull)
redcap.add_command(push)
