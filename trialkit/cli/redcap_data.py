"""`trialkit redcap pull` and `trialkit redcap push`: a local copy of a project, and intake sent to it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from trialkit.cli.options import DATE, csv_only, dumps, exit_codes, format_option
from trialkit.cli.redcap import _REDCAP_FAILED, connection_options, open_connection, writable, write_findings

DEFAULT_LEDGER = Path("trialkit-data-ledger.sqlite")


def _connection(command: Callable) -> Callable:
    """The `trialkit redcap` connection options (--connection NAME or --url, token options, --timeout), plus
    --attempts and --chunk-size, turned into one `connection` (trialkit.redcap.connections.Connection)."""

    @connection_options
    @click.option("--attempts", default=None, type=click.IntRange(1, 20),
                  help="Tries per request on network failures and server error pages (backoff 0.5 s, doubling; "
                       "default 5).")
    @click.option("--chunk-size", default=None, type=click.IntRange(1, 100_000),
                  help="Records per API call (a record's rows are never split; default 500).")
    @functools.wraps(command)
    def wrapper(connection, config, url, token_env, token_file, timeout, attempts, chunk_size, study_dir,
                **kwargs):
        conn = open_connection(connection, config, url, token_env, token_file, timeout, study_dir=study_dir)
        changes = {k: v for k, v in (("attempts", attempts), ("chunk_size", chunk_size)) if v is not None}
        conn = dataclasses.replace(conn, **changes) if changes else conn
        return command(connection=conn, study_dir=study_dir, **kwargs)

    return wrapper


def _common(command: Callable) -> Callable:
    command = format_option(["text", "json"], help="json: a summary (calls, bytes, records, seconds, failures).")(
        command)
    command = click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help=f"SQLite ledger of pulls and pushes of this project "
                                              f"(default: STUDY/{DEFAULT_LEDGER}).")(command)
    return click.option("--study", "study_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Study directory (default: the current directory).")(command)


def _run(job: Callable[[], Any]) -> Any:
    from trialkit.cli.redcap import _stop

    # a scheduler's stop (SIGTERM) unwinds like Ctrl-C, so the ledger records the run as failed, not running
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return job()
    finally:
        signal.signal(signal.SIGTERM, previous)


@exit_codes("pulled", _REDCAP_FAILED)
@click.command()
@_connection
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the local copy (default: STUDY/redcap-copy).")
@click.option("--full", is_flag=True, help="Export every record, not only those changed since the last pull.")
@click.option("--overlap", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Minutes the incremental pull reaches back before the last one (clock skew with the server).")
@_common
def pull(connection, out, full, overlap, study_dir, ledger_path, fmt) -> None:
    """Keep a local typed copy of the project: one Parquet table per instrument plus manifest.json.

    After the first pull only records changed since the last one are exported, and records deleted in REDCap
    are dropped. `trialkit screen` and `trialkit validate` read the folder directly.

    \b
    Example:
      REDCAP_API_TOKEN=... trialkit redcap pull --url https://redcap.example.org/api/ --out data/redcap
    """
    from trialkit.redcap.data_ledger import DataLedger
    from trialkit.redcap.progress import Progress
    from trialkit.redcap.pull import pull as run_pull

    study = study_dir or Path(".")
    out = out or study / "redcap-copy"
    client = connection.client()
    with DataLedger(ledger_path or study / DEFAULT_LEDGER) as ledger:
        result = _run(lambda: run_pull(client, out, ledger=ledger, now=dt.datetime.now(), full=full,
                                       overlap=dt.timedelta(minutes=overlap), progress=Progress("pull"),
                                       clock=dt.datetime.now))
    if fmt == "json":
        click.echo(dumps("redcap pull", True, result.to_dict()))
        return
    kind = "full" if result.full else "incremental"
    click.echo(f"pull {result.run_id} ({kind}): {result.records} record(s) in {out}; exported {result.fetched}, "
               f"dropped {result.deleted} deleted in REDCap; {result.stats.get('calls', 0)} calls, "
               f"{result.to_dict()['bytes']} bytes, {result.seconds:.1f} s")
    if result.log_note:
        click.echo(f"note: {result.log_note}")


@exit_codes("everything valid went through", "records were invalid (not sent), rejected by REDCap, or did not "
            f"read back as written; or {_REDCAP_FAILED}")
@click.command()
@_connection
@click.argument("data", type=click.Path(exists=True, allow_dash=True, path_type=Path))
@click.option("--clear-blanks", is_flag=True,
              help="A blank cell clears the value REDCap holds (only those cells are written with overwrite).")
@click.option("--auto-number", is_flag=True,
              help="Records are new: give them REDCap's next record numbers (source id -> REDCap id kept in the "
                   "ledger, so a rerun never makes a second record).")
@click.option("--dry-run", is_flag=True, help="Print the cells that would change; send nothing.")
@click.option("--as-of", "as_of", type=DATE, help="Validation date (default: today).")
@click.option("--findings", "findings_path", type=click.Path(dir_okay=False, path_type=Path), callback=csv_only,
              help="Write the validation findings here (CSV; identifier values masked).")
@_common
def push(connection, data, clear_blanks, auto_number, dry_run, as_of, findings_path, study_dir, ledger_path,
         fmt) -> None:
    """Send intake DATA (any format trialkit reads, or a pulled folder) to REDCap: validated first, then only
    the cells that change. Safe to rerun after any failure: nothing is lost or sent twice.

    \b
    Example:
      REDCAP_API_TOKEN=... trialkit redcap push intake.csv --url https://redcap.example.org/api/ --dry-run
    """
    from trialkit.definitions.loader import load_study
    from trialkit.redcap.data_ledger import DataLedger
    from trialkit.redcap.progress import Progress
    from trialkit.redcap.push import push as run_push

    writable(findings_path)
    study_path = study_dir or Path(".")
    study = load_study(study_path)
    client = connection.client()
    with DataLedger(ledger_path or study_path / DEFAULT_LEDGER) as ledger:
        result = _run(lambda: run_push(client, data, study, ledger=ledger, now=dt.datetime.now(), as_of=as_of,
                                       clear_blanks=clear_blanks, auto_number=auto_number, dry_run=dry_run,
                                       progress=Progress("push"), clock=dt.datetime.now))
    if findings_path is not None and result.findings is not None:
        write_findings(result.findings, findings_path)
    if fmt == "json":
        click.echo(dumps("redcap push", not result.failures, result.to_dict()))
    else:
        if dry_run:
            _print_changes(result.changes, study)
        verb = "would change" if dry_run else "changed"
        click.echo(f"push {result.run_id}{' (dry run)' if dry_run else ''}: {result.records} record(s) in the data; "
                   f"{verb} {result.changed_records} ({result.cells_set} cell(s) set, {result.cells_cleared} "
                   f"cleared, {result.created} new record(s)); {result.stats.get('calls', 0)} calls, "
                   f"{result.to_dict()['bytes']} bytes, {result.seconds:.1f} s")
    if result.deleted_in_redcap and fmt != "json":
        done = "would be written again" if dry_run else f"{result.recreated} written again"
        click.echo(f"{result.deleted_in_redcap} record(s) pushed before and unchanged in the data were deleted in "
                   f"REDCap since: {done} (what the data holds, REDCap holds)", err=True)
    if result.invalid:
        where = f"see {findings_path}" if findings_path else "use --findings FILE to list them"
        click.echo(f"{result.invalid} record(s) have validation errors and were not sent ({where})", err=True)
    for r in result.rejected:
        click.echo(f"rejected by REDCap: record {r.record}, field {r.field}: {r.message}", err=True)
    if result.unverified:
        click.echo(f"{len(result.unverified)} cell(s) did not read back as written, e.g. {result.unverified[0]} "
                   "(rerun the push)", err=True)
    if result.failures:
        sys.exit(1)


def _print_changes(changes, study) -> None:
    identifiers = {name for name, f in study.fields.items() if f.identifier}
    for record, event, _instrument, instance, name, old, new, kind in changes.select(
            "source_record", "event", "instrument", "instance", "field", "old", "new", "kind").iter_rows():
        where = " ".join(p for p in (f"record {record}", event, f"#{instance}" if instance else "") if p)
        if name.split("___")[0] in identifiers:
            shown = "(identifier: value not shown)"
        elif kind == "clear":
            shown = f"{old!r} -> blank"
        else:
            shown = f"{old or ''!r} -> {new!r}"
        click.echo(f"{where}: {name} {shown}")
