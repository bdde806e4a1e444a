"""`trialkit redcap ...`: jobs against a REDCap project (the real one, or the sandbox)."""

from __future__ import annotations

import datetime as dt
import json as _json
import os
import signal
from pathlib import Path
from typing import Any

import click

from trialkit.cli.options import DATE, SuggestingGroup, csv_only, dumps, exit_codes, format_option
from trialkit.errors import UsageError
from trialkit.redcap.client import DEFAULT_TOKEN_ENV

_CONNECTION_OPTIONS = (
    click.option("--connection", "connection", metavar="NAME",
                 help="A connection named in trialkit.toml ([redcap.NAME]: url, token_env or token_file, ...)."),
    click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                 help="The trialkit.toml to read connections from (default: the study folder's, else ./)."),
    click.option("--url", help="REDCap API URL, ending in /api/ (instead of, or overriding, --connection)."),
    click.option("--token-env", default=None,
                 help=f"Environment variable holding the API token (default: {DEFAULT_TOKEN_ENV})."),
    click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="File holding the API token (must be chmod 600). Wins over --token-env."),
    click.option("--timeout", type=float, default=None, help="Seconds per HTTP request (default 60)."),
)


def connection_options(fn):  # type: ignore[no-untyped-def]
    """--connection/--config/--url/--token-env/--token-file/--timeout, for every `trialkit redcap` command."""
    for option in reversed(_CONNECTION_OPTIONS):
        fn = option(fn)
    return fn


def open_connection(connection: str | None, config: Path | None, url: str | None, token_env: str | None,
                    token_file: Path | None, timeout: float | None, *,
                    study_dir: Path | None = None):  # type: ignore[no-untyped-def]
    """The Connection the options name (token not read yet)."""
    from trialkit.redcap.connections import find_config, resolve_connection

    config = config or find_config(study_dir, Path.cwd())
    return resolve_connection(connection, config=config, url=url, token_env=token_env, token_file=token_file,
                              timeout=timeout)


_REDCAP_FAILED = "REDCap or the network failed (rerun: what landed is not written twice)"


@exit_codes("done", f"{_REDCAP_FAILED}; diff and push-definitions: the project differs from the study; push: "
            "records invalid or rejected")
@click.group(cls=SuggestingGroup)
def redcap() -> None:
    """Work with a REDCap project through its API (token from an environment variable or a 0600 file)."""


@exit_codes("the run completed (records with validation errors are screened all the same and counted on "
            "stderr)", _REDCAP_FAILED, usage="a usage or definition error, including a ledger another run is "
            "using and project definitions that differ from the study on what screening reads")
@redcap.command()
@connection_options
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Eligibility rule file.")
@click.option("--study", "study_dir", type=click.Path(path_type=Path), default=None,
              help="Study directory (default: the one the rule file names, else the current directory).")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("trialkit-ledger.sqlite"), show_default=True, help="SQLite ledger of runs.")
@click.option("--as-of", "as_of", type=DATE, help="Screening date (default: today).")
@click.option("--full", is_flag=True, help="Pull and screen every record, not only changed or undecided ones.")
@click.option("--attempts", default=None, type=click.IntRange(1, 20),
              help="Tries per request on network failures and server error pages (backoff 0.5 s, doubling; "
              "default 5).")
@click.option("--findings", "findings_path", type=click.Path(dir_okay=False, path_type=Path), callback=csv_only,
              help="Write the validation findings of the pulled records here (CSV; identifier values masked).")
@format_option(["text", "json"])
def nightly(connection, config, url, token_env, token_file, timeout, rules_path, study_dir, ledger_path, as_of,
            full, attempts, findings_path, fmt) -> None:
    """Pull intake, validate, screen and write results back to REDCap; safe to rerun after any failure.

    Before screening, the project's definitions are compared with the study's: when they differ on anything
    screening reads (choice codes, calculations, validations, logic, schedule), the run stops with the diff.

    On a terminal, stderr shows each stage (pull, screen, write-back) and every retry with its reason; piped,
    it stays quiet. With --format json, stderr gets one JSON line per finished stage and per retry (for a
    scheduler's log) and stdout the run's summary.

    \b
    Example:
      REDCAP_API_TOKEN=... trialkit redcap nightly --url https://redcap.example.org/api/ \\
          --rules eligibility_rules/kap_trd.yaml --ledger /var/lib/trialkit/kap.sqlite
    """
    from dataclasses import replace

    from trialkit.redcap.stages import StageReporter
    from trialkit.redcap.sync import Ledger, run_nightly
    from trialkit.screening.run import load_rules, resolve_study

    writable(findings_path)
    conn = open_connection(connection, config, url, token_env, token_file, timeout, study_dir=study_dir)
    if attempts is not None:
        conn = replace(conn, attempts=attempts)
    client = conn.client()
    study = resolve_study(rules_path, study_dir)
    rules = load_rules(rules_path, study)
    day = as_of or dt.date.today()  # the CLI is the edge: the library never reads the clock
    ledger = Ledger(ledger_path)
    # a scheduler's stop (SIGTERM) unwinds like Ctrl-C, so the ledger records the run as stopped, not running
    previous = signal.signal(signal.SIGTERM, _stop)
    reporter = StageReporter(log=fmt == "json")
    try:
        result = run_nightly(client, study, rules, ledger=ledger, as_of=day, now=dt.datetime.now(), full=full,
                             clock=dt.datetime.now, report=reporter)
    finally:
        reporter.close()
        signal.signal(signal.SIGTERM, previous)
        ledger.close()
    if findings_path is not None and result.findings is not None:
        write_findings(result.findings, findings_path)
    if fmt == "json":
        click.echo(dumps("redcap nightly", True, result.to_dict()))
        return
    if result.previous:
        click.echo(f"note: {result.previous}; this run picks up what it left", err=True)
    counts = ", ".join(f"{n} {d}" for d, n in sorted(result.dispositions.items())) or "none"
    click.echo(
        f"as of {result.as_of}: run {result.run_id} "
        f"({f'full: {result.full_reason}' if result.full else 'incremental'}) "
        f"screened {result.pulled} record(s): {counts}; wrote {result.written}, unchanged {result.unchanged}"
    )
    if result.deleted:
        click.echo(f"{result.deleted} record(s) deleted in REDCap since the pull: their results were not written",
                   err=True)
    if result.invalid_records:
        where = f"see {findings_path}" if findings_path else "use --findings FILE to list them"
        click.echo(f"{result.invalid_records} record(s) have validation errors ({where})", err=True)


def writable(path: Path | None) -> None:
    """A file the command will write at the end (`--findings`) must be writable before anything is sent to
    REDCap: found out only after the run, it was an internal error with the run's work done (exit 2 here)."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: no folder {folder}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def write_findings(findings: Any, path: Path) -> None:
    try:
        findings.to_csv(path)
    except OSError as exc:  # a full disk, or the folder gone since the start: the system's words
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@exit_codes("listed (also when the ledger holds no run yet)", usage="a usage error (no ledger at that path)")
@redcap.command("runs")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("trialkit-ledger.sqlite"), show_default=True,
              help="SQLite ledger of the nightly runs, or of `redcap pull` and `push`.")
@click.option("--last", type=click.IntRange(1), default=None, help="Only the latest N runs.")
@format_option(["text", "json"])
def runs_cmd(ledger_path, last, fmt) -> None:
    """List the runs of a ledger: start, end, status, records pulled and written, and why.

    A nightly ledger lists the nightly runs; the ledger of `redcap pull` and `push` lists theirs (kind, records
    in the copy or the data, records fetched or changed in REDCap).

    Reads the ledger without taking it, so it works while a run is in progress.

    \b
    Example:
      trialkit redcap runs --ledger /var/lib/trialkit/kap.sqlite --last 7
    """
    from trialkit.redcap.data_ledger import read_data_runs
    from trialkit.redcap.sync import read_runs

    data_runs = read_data_runs(ledger_path, last=last)  # the ledger of `redcap pull` and `push`
    if data_runs is not None:
        _print_data_runs(ledger_path, data_runs, fmt)
        return
    runs = read_runs(ledger_path, last=last)
    if fmt == "json":
        keep = ("id", "started_at", "finished_at", "status", "as_of", "full", "full_reason", "pulled", "written",
                "message")
        out = [{**{k: r.get(k) for k in keep}, "full": bool(r.get("full")),
                "counts": _json.loads(r["counts"]) if r.get("counts") else None} for r in runs]
        click.echo(dumps("redcap runs", True, {"ledger": str(ledger_path), "runs": out}))
        return
    if not runs:
        click.echo(f"no runs in {ledger_path}")
        return
    click.echo(f"{'run':>5}  {'started':<19}  {'ended':<19}  {'status':<11} {'as of':<10}  {'pulled':>7} "
               f"{'written':>7}  note")
    for r in runs:
        note = r.get("message") or (f"full: {r['full_reason']}" if r.get("full_reason") else
                                    ("full" if r.get("full") else "incremental"))
        click.echo(f"{r['id']:>5}  {r['started_at']:<19}  {r.get('finished_at') or '-':<19}  {r['status']:<11} "
                   f"{r['as_of']:<10}  {_count(r.get('pulled')):>7} {_count(r.get('written')):>7}  {note}")


def _print_data_runs(ledger_path: Path, runs: list[dict], fmt: str) -> None:
    """Pull and push runs: records in the copy or the data, and how many the run fetched or changed in REDCap."""
    if fmt == "json":
        keep = ("id", "kind", "started_at", "finished_at", "status", "full", "message", "summary")
        out = [{**{k: r.get(k) for k in keep}, "full": bool(r.get("full"))} for r in runs]
        click.echo(dumps("redcap runs", True, {"ledger": str(ledger_path), "runs": out}))
        return
    if not runs:
        click.echo(f"no runs in {ledger_path}")
        return
    click.echo(f"{'run':>5}  {'kind':<4}  {'started':<19}  {'ended':<19}  {'status':<11} {'records':>7} "
               f"{'changed':>7}  note")
    for r in runs:
        summary = r.get("summary") or {}
        changed = summary.get("fetched") if r["kind"] == "pull" else summary.get("changed_records")
        note = r.get("message") or ""
        if summary.get("dry_run"):
            note, changed = "dry run: nothing sent", 0
        elif r["kind"] == "pull" and summary:
            note = f"{'full' if summary.get('full') else 'incremental'}, {summary.get('deleted', 0)} deleted"
        click.echo(f"{r['id']:>5}  {r['kind']:<4}  {r['started_at']:<19}  {r.get('finished_at') or '-':<19}  "
                   f"{r['status']:<11} {_count(summary.get('records')):>7} {_count(changed):>7}  {note}")


def _count(value: object) -> str:
    return "-" if value is None else str(value)


# ---- definitions: diff, push-definitions, pull-definitions ------------------------------------------------------

_STUDY_OPTION = click.option("--study", "study_dir", type=click.Path(exists=True, path_type=Path), default=Path("."),
                             show_default=True, help="Study folder (holding study.yaml).")
_FORMAT_OPTION = format_option(["text", "json"])


@exit_codes("the project matches the study", f"the project differs from the study; or {_REDCAP_FAILED}")
@redcap.command("diff")
@connection_options
@_STUDY_OPTION
@_FORMAT_OPTION
@click.pass_context
def diff_cmd(ctx, connection, config, url, token_env, token_file, timeout, study_dir, fmt) -> None:
    """Compare the study's definitions with the project's, change by change.

    Each change is classified as REDCap's production review would: safe, needs care, or critical; for critical
    changes the records holding data there are counted (asking REDCap for those fields only).

    \b
    Example:
      trialkit redcap diff --connection dev --study .
    """
    from trialkit.definitions import load_study
    from trialkit.redcap.definitions.project import from_study
    from trialkit.redcap.definitions.push import plan

    client = open_connection(connection, config, url, token_env, token_file, timeout, study_dir=study_dir).client()
    local = from_study(load_study(study_dir))
    diff, _ = plan(client, local)
    shown = dumps("redcap diff", diff.empty, diff.to_dict()) if fmt == "json" else diff.render()
    click.echo(shown, nl=fmt == "json")
    ctx.exit(0 if diff.empty else 1)


@exit_codes("the project matches the study (applied, or nothing to do)",
            f"it still differs (plan shown without --yes, refused, or draft files written); or {_REDCAP_FAILED}")
@redcap.command("push-definitions")
@connection_options
@_STUDY_OPTION
@click.option("--yes", is_flag=True, help="Apply the plan (without it, only show it).")
@click.option("--allow-data-loss", is_flag=True,
              help="Apply critical changes that land on existing data (deleted fields, removed choices, ...).")
@click.option("--draft-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("redcap-draft"),
              show_default=True, help="Where to write the draft-mode files when the project is in production.")
@_FORMAT_OPTION
@click.pass_context
def push_definitions_cmd(ctx, connection, config, url, token_env, token_file, timeout, study_dir, yes,
                         allow_data_loss, draft_dir, fmt) -> None:
    """Make the project's definitions match the study: arms, events, data dictionary, mappings, repeats.

    Shows the plan; applies it only with --yes, then exports again and checks the diff is empty. A critical
    change that touches existing data is refused unless --allow-data-loss. A project in production takes no
    design imports: the data dictionary CSV and change report for draft mode are written to --draft-dir.

    \b
    Example:
      trialkit redcap push-definitions --connection dev --study . --yes
    """
    from trialkit.definitions import load_study
    from trialkit.redcap.definitions.project import from_study
    from trialkit.redcap.definitions.push import push_definitions

    client = open_connection(connection, config, url, token_env, token_file, timeout, study_dir=study_dir).client()
    result = push_definitions(client, from_study(load_study(study_dir)), apply=yes, allow_data_loss=allow_data_loss,
                              draft_dir=draft_dir)
    if fmt == "json":
        click.echo(dumps("redcap push-definitions", result.status in ("applied", "unchanged"), result.to_dict()))
    else:
        click.echo(result.diff.render(), nl=False)
        for step in result.steps:
            click.echo(f"applied: {step}")
        if result.status == "applied":
            click.echo("verified: the project now matches the study")
    for note in result.notes:
        click.echo(note, err=True)
    ctx.exit(0 if result.status in ("applied", "unchanged") else 1)


@exit_codes("written", _REDCAP_FAILED, usage="a usage error (files there already without --force), or a "
            "project design a study cannot hold")
@redcap.command("pull-definitions")
@connection_options
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write study.yaml and instruments/*.yaml into.")
@click.option("--name", default=None, help="Study name (default: from the project title).")
@click.option("--force", is_flag=True, help="Replace files that exist already.")
@_FORMAT_OPTION
def pull_definitions_cmd(connection, config, url, token_env, token_file, timeout, out, name, force, fmt) -> None:
    """Write the project's definitions as trialkit files (study.yaml and one YAML file per instrument).

    \b
    Example:
      trialkit redcap pull-definitions --connection prod --out kap_from_redcap
    """
    from trialkit.redcap.definitions.pull import pull_definitions

    client = open_connection(connection, config, url, token_env, token_file, timeout).client()
    paths = pull_definitions(client, out, name=name, overwrite=force)
    if fmt == "json":
        click.echo(dumps("redcap pull-definitions", True, {"out": str(out), "files": [str(p) for p in paths]}))
    else:
        click.echo(f"wrote {len(paths)} file(s) under {out}")


from trialkit.cli.redcap_data import pull, push  # noqa: E402  (the data commands, kept in their own module)

redcap.add_command(pull)
redcap.add_command(push)
