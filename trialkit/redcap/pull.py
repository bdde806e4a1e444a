"""`trialkit redcap pull`: a local typed copy of a REDCap project, one Parquet table per instrument.

The folder holds `manifest.json` (project, time of pull, ledger run, tables) and a `data-<run>/` folder of
Parquet files. A pull writes a new data folder and then replaces the manifest in one rename, so a pull that is
killed leaves the previous copy whole; the old data folder is removed last.

After the first pull, a pull is incremental: REDCap's `dateRangeBegin` gives the records changed since the last
pull (less an overlap of a few minutes for clock skew between this machine and the server: REDCap compares
against its own clock), exported in one CSV call read straight into polars. REDCap's log (`content=log`) of the
same window tells which records were deleted and whether the design changed, so neither the full record id list
nor the data dictionary is exported again: an incremental pull costs what changed, whatever the project's size.
When the log is refused (the user lacks the Logging right) or cannot be whole (the user is in a data access
group: REDCap shows such a user only the group's events), the pull compares the full id list instead and says so
in its summary. A change of the data dictionary makes the pull a full one. The merged copy has the same rows in
the same order as a full pull would give. See docs/redcap-data-sync.md.

Tables: every instrument is a table keyed by the record id and the REDCap key columns that the project has
(`redcap_event_name`, `redcap_repeat_instrument`, `redcap_repeat_instance`); a repeating instrument's table holds
its instances. Columns are typed from the data dictionary (integers, numbers, dates, date-times, form status)
wherever the typed value writes back to exactly the text REDCap holds; otherwise the column stays text, so a
pull never changes a value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import DataError, Location, RedcapError, UsageError
from trialkit.records.readers import stringify
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.connections import Connection
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.progress import Progress
from trialkit.redcap.sync import failure_message

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "trialkit-redcap-pull/1"
KEY_COLUMNS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
DEFAULT_OVERLAP = dt.timedelta(minutes=10)
#: tests only: SIGKILL this process once the new copy's first table is written, before the manifest's switch
KILL_HOOK_ENV = "TRIALKIT_TEST_KILL_PULL_WRITING"


@dataclass(frozen=True)
class PullResult:
    run_id: int
    out: Path
    full: bool
    records: int  # records in the local copy after the pull
    fetched: int  # records exported by this pull
    deleted: int  # local records no longer in REDCap, dropped
    tables: Mapping[str, int] = field(default_factory=dict)  # table -> rows
    stats: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    deletions_from: str = "full"  # "log" (REDCap's log), "id list" (the full record id list) or "full"
    log_note: str = ""  # why REDCap's log was not used, when it was not

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "pull",
            "run_id": self.run_id,
            "out": str(self.out),
            "full": self.full,
            "records": self.records,
            "fetched": self.fetched,
            "deleted": self.deleted,
            "deletions_from": self.deletions_from,
            **({"log_note": self.log_note} if self.log_note else {}),
            "tables": dict(self.tables),
            **dict(self.stats),
            "bytes": self.stats.get("bytes_sent", 0) + self.stats.get("bytes_received", 0),
            "seconds": round(self.seconds, 3),
            "failures": 0,
        }


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError("not a readable pull manifest", location=Location(file=str(path))) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"not a {MANIFEST_FORMAT} manifest", location=Location(file=str(path)))
    return manifest


def pull(
    connection: RedcapClient | Connection,
    out: str | Path,
    *,
    ledger: DataLedger,
    now: dt.datetime,
    full: bool = False,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    progress: Progress | None = None,
    clock: Any = None,
) -> PullResult:
    """Pull the project into `out` (created if needed). `now` is the pull's watermark (this machine's clock,
    read once by the caller); `clock`, when given, stamps the end in the ledger."""
    client = connection.client() if isinstance(connection, Connection) else connection
    finished = clock or (lambda: now)
    started = time.monotonic()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the pull folder {out}: {exc.strerror}") from None
    info = client.project_info()
    project_id = str(info.get("project_id", ""))
    ledger.bind(project_id, client.url)
    manifest = read_manifest(out)
    if manifest is not None and str(manifest["project"].get("id")) != project_id:
        raise UsageError(f"{out} holds a copy of REDCap project {manifest['project'].get('id')}, not {project_id}: "
                         "pull into another folder")
    log = LogView()
    since = None
    metadata = None
    if not full and manifest is not None:
        since = dt.datetime.fromisoformat(manifest["watermark"]) - overlap
        log = read_log(client, since, seen=manifest.get("log_design_seen", ()))
        stored = _stored_metadata(out, manifest)
        # with groups in the project the user may see only a group's log, in which a design change can be missing
        if log.complete and not log.groups and not log.design_changed and stored is not None:
            metadata = stored  # no design change logged since the last pull: its dictionary is current
            client.seed_metadata(metadata)
    else:
        # what the next pull's window will find already reflected in the dictionary exported just after
        log = LogView(design_seen=_design_events(client, now - overlap) or ())
    if metadata is None:
        metadata = client.metadata()
    meta_sha = _sha(metadata)
    full = full or manifest is None or manifest.get("metadata_sha256") != meta_sha
    run_id = ledger.begin("pull", now, full=full)
    try:
        def_field = client.def_field
        report = progress or Progress("pull", enabled=False)
        chunks = [0]

        def on_chunk(done: int, total: int) -> None:
            chunks[0] += 1
            report.update(f"chunk {chunks[0]}, {done}/{total} records, {client.stats.calls} calls, "
                          f"{client.stats.retries} retries")

        source = "full"
        if full:
            wanted = client.record_id_frame()
            fresh = client.export_frame(wanted.to_list(), on_chunk=on_chunk) if wanted.len() else pl.DataFrame()
            tables = split_tables(fresh, metadata, def_field)
            fetched, deleted = wanted.len(), 0
        else:
            old = _read_tables_as_text(out, manifest)
            local_ids = _local_ids(old, def_field)
            fresh, group_column = client.export_changed(since, with_dag_column=bool(log.groups))
            fresh_ids = fresh[def_field].unique() if fresh.width else pl.Series(def_field, [], pl.String)
            if log.complete and log.groups and not group_column:
                # REDCap sends its group column only to a user in no group (and not at all with no record to send)
                log = log.refused("the project has data access groups and REDCap did not show that this user is "
                                  "in none (a group user's log holds only the group's events)")
            gone = _deleted_by_log(client, log, local_ids, fresh_ids) if log.complete else None
            if gone is None:
                # the log cannot be trusted to hold every deletion: compare with the full record id list
                log = log if not log.complete else log.refused("a deletion in REDCap's log names no record of "
                                                                "this copy")
                all_ids = client.record_id_frame()
                gone = set(local_ids.filter(~local_ids.is_in(all_ids.implode())).to_list())
            source = "log" if log.complete else "id list"
            tables = _merge(old, split_tables(fresh, metadata, def_field), gone, def_field)
            fetched, deleted = fresh_ids.len(), len(gone)
        report.done()
        tables = {name: _in_record_order(frame, def_field) for name, frame in tables.items()}
        typed = {name: type_table(frame, metadata, def_field) for name, frame in tables.items()}
        records = _local_ids(typed, def_field).len()
        _write(out, run_id, typed, metadata, {
            "format": MANIFEST_FORMAT,
            "project": {"id": project_id, "title": info.get("project_title", ""), "url": client.url},
            "pulled_at": now.isoformat(timespec="seconds"),
            "watermark": now.isoformat(timespec="seconds"),
            "ledger": {"path": ledger.path, "run_id": run_id},
            "record_id": def_field,
            "metadata_sha256": meta_sha,
            "records": records,
            # the design events this copy's dictionary already reflects: the next pull's window overlaps this one
            "log_design_seen": list(log.design_seen),
        })
        result = PullResult(run_id, out, full, records, fetched, deleted,
                            {n: f.height for n, f in typed.items()}, client.stats.to_dict(),
                            time.monotonic() - started, deletions_from=source, log_note=log.note)
        ledger.finish(run_id, "ok", at=finished(), watermark=now, summary=result.to_dict())
        return result
    except BaseException as exc:
        message = failure_message(exc)
        ledger.finish(run_id, "failed", at=finished(), message=message)
        raise


# -- what REDCap's log says ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogView:
    """The record deletions and design changes REDCap logged since a pull's window began, or why the log is not
    used (`note`). `groups`: the project's Data Access Groups, which decide whether the user's log is whole."""

    complete: bool = False
    deletions: tuple[Mapping[str, Any], ...] = ()
    design_changed: bool = True
    groups: tuple[str, ...] = ()
    note: str = ""
    design_seen: tuple[str, ...] = ()  # a hash of each design event in the window (no event text is kept)

    def refused(self, why: str) -> LogView:
        return LogView(note=f"{why}: deletions found with the full record id list instead")


def log_start(since: dt.datetime) -> dt.datetime:
    # REDCap keeps log times to the minute and takes beginTime to the minute (rounded, not floored): a minute
    # earlier, on the minute, holds every event at or after `since`
    return (since - dt.timedelta(minutes=1)).replace(second=0, microsecond=0)


def read_log(client: RedcapClient, since: dt.datetime, *, seen: Sequence[str] = ()) -> LogView:
    """What REDCap logged since `since`: deletions and design changes, in two small calls (and the group list).

    `seen`: the design events the last pull found in its window, which its dictionary reflects. Windows overlap
    (by the overlap, and by REDCap's minutes), so an event counts as new only when it occurs more often now than
    then: an identical event in the same minute after the last pull read the log still counts."""
    start = log_start(since)
    try:
        deletions = client.log_entries("record_delete", start)
    except (RedcapError, UsageError) as exc:
        return LogView().refused(f"REDCap did not give its log ({exc.message}; the Logging user right is needed)")
    events = _design_events(client, since)
    if events is None:
        return LogView().refused("REDCap did not give its log of design changes")
    try:
        groups = tuple(str(g.get("unique_group_name", "")) for g in client.dags())
    except (RedcapError, UsageError) as exc:
        return LogView().refused(f"REDCap did not list its data access groups ({exc.message})")
    before = Counter(seen)
    design = any(n > before[h] for h, n in Counter(events).items())
    return LogView(True, tuple(deletions), design, groups, design_seen=tuple(events))


def _design_events(client: RedcapClient, since: dt.datetime) -> list[str] | None:
    """A hash of each design change REDCap logged since `since`; None when the log is refused."""
    try:
        manage = client.log_entries("manage", log_start(since))
    except (RedcapError, UsageError):
        return None
    return [_event_hash(e) for e in manage if not str(e.get("details", "")).startswith(_READ_ONLY_DESIGN_EVENTS)]


def _event_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([str(entry.get(k, "")) for k in ("timestamp", "username", "action", "details")])
                          .encode()).hexdigest()[:32]


# REDCap files some API exports (of the log, the project information, the groups ...) under Manage/Design too:
# they change nothing. Anything else under Manage/Design counts as a design change (the cost of a false alarm is
# one dictionary export).
_READ_ONLY_DESIGN_EVENTS = ("Export ", "Download ")
_DELETE_ACTION = "Delete record"


def logged_record(entry: Mapping[str, Any]) -> str | None:
    """The record a deletion names: REDCap's `record` column (13.4.9 on), else the action, 'Delete record <id>'."""
    if entry.get("record") not in (None, ""):
        return str(entry["record"])
    action = str(entry.get("action", "")).strip()
    if not action.startswith(_DELETE_ACTION):
        return None
    rest = action[len(_DELETE_ACTION):].strip()
    if rest.startswith("(") and ") " in rest:  # a qualifier such as "(API)" before the id
        rest = rest.split(") ", 1)[1]
    return rest or None


def _deleted_by_log(client: RedcapClient, log: LogView, local_ids: pl.Series,
                    fresh_ids: pl.Series) -> set[str] | None:
    """The local records that REDCap logged as deleted and no longer holds; None when an entry cannot be tied to
    a record (then only the full id list can tell)."""
    local, fetched = set(local_ids.to_list()), set(fresh_ids.to_list())
    named: set[str] = set()
    for entry in log.deletions:
        record = logged_record(entry)
        if record is None or (record not in local and entry.get("record") in (None, "")):
            return None  # a record never pulled (created and deleted since), or an action read wrongly
        named.add(record)
    candidates = sorted((named & local) - fetched)
    if not candidates:
        return set()
    # deleted, then created again (or deleted from one arm only): REDCap still holds it, so it stays
    still = client.export_frame(candidates, fields=[client.def_field])
    held = set(still[client.def_field].to_list()) if still.width else set()
    return set(candidates) - held


# -- tables -----------------------------------------------------------------------------------------------------


def _form_columns(columns: Sequence[str], metadata: Sequence[Mapping[str, str]], def_field: str) -> dict[str, list]:
    """Each form's export columns (metadata order), from the columns the export holds."""
    form_of = {row["field_name"]: row["form_name"] for row in metadata}
    forms = list(dict.fromkeys(row["form_name"] for row in metadata))
    out: dict[str, list[str]] = {f: [] for f in forms}
    for column in columns:
        if column == def_field or column in KEY_COLUMNS:
            continue
        form = form_of.get(column.split("___")[0])
        if form is None and column.endswith("_complete"):
            form = column[: -len("_complete")]
        out.setdefault(form if form in out else forms[0], []).append(column)
    return out


def split_tables(flat: pl.DataFrame, metadata: Sequence[Mapping[str, str]], def_field: str) -> dict[str, pl.DataFrame]:
    """A flat export (text) as one frame per instrument; every row lands in at least one table."""
    forms = list(dict.fromkeys(row["form_name"] for row in metadata))
    if not flat.width:
        return {f: pl.DataFrame() for f in forms}
    keys = [def_field, *(k for k in KEY_COLUMNS if k in flat.columns)]
    by_form = _form_columns(flat.columns, metadata, def_field)
    instrument = pl.col("redcap_repeat_instrument") if "redcap_repeat_instrument" in flat.columns else pl.lit(None)
    claimed = pl.lit(False)
    masks = {}
    for form in forms:
        cells = by_form.get(form, [])
        has_data = pl.any_horizontal([pl.col(c).is_not_null() for c in cells]) if cells else pl.lit(False)
        masks[form] = (instrument == form).fill_null(False) | (instrument.is_null() & has_data)
        claimed = claimed | masks[form]
    masks[forms[0]] = masks[forms[0]] | ~claimed  # a row with no data at all still says the record exists
    return {form: flat.filter(masks[form]).select([*keys, *by_form.get(form, [])]) for form in forms}


def _merge(old: Mapping[str, pl.DataFrame], fresh: Mapping[str, pl.DataFrame], gone: set[str],
           def_field: str) -> dict[str, pl.DataFrame]:
    """The old tables without the fetched or deleted records, plus the fetched rows."""
    touched = pl.concat([f[def_field] for f in fresh.values() if f.width] or [pl.Series(def_field, [], pl.String)])
    drop = pl.concat([touched, pl.Series(def_field, sorted(gone), pl.String)])
    merged = {}
    for name in dict.fromkeys([*old, *fresh]):
        parts = []
        before = old.get(name)
        if before is not None and before.width:
            parts.append(before.filter(~pl.col(def_field).is_in(drop.implode())))
        if fresh.get(name) is not None and fresh[name].width:
            parts.append(fresh[name])
        merged[name] = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    return merged


def _in_record_order(frame: pl.DataFrame, def_field: str) -> pl.DataFrame:
    """Rows in REDCap's record order, numeric ids by number and then the others by text (the sandbox's order),
    each record's rows as REDCap gave them: a full and an incremental pull give the same rows in the same order,
    without the full id list to sort by."""
    if not frame.width or not frame.height:
        return frame
    rid = pl.col(def_field)
    digits = rid.str.contains(r"^[0-9]+$")
    number = rid.str.strip_chars_start("0").str.pad_start(20, "0")
    key = pl.when(digits).then(pl.lit("0") + number + pl.lit("|") + rid).otherwise(pl.lit("1") + rid)
    return frame.sort(key, maintain_order=True)


def _local_ids(tables: Mapping[str, pl.DataFrame], def_field: str) -> pl.Series:
    cols = [t[def_field] for t in tables.values() if t.width]
    return pl.concat(cols).unique() if cols else pl.Series(def_field, [], pl.String)


# -- types ------------------------------------------------------------------------------------------------------


def _target(column: str, meta: Mapping[str, str] | None) -> tuple[pl.DataType, str | None] | None:
    if column == "redcap_repeat_instance" or (column.endswith("_complete") and meta is None):
        return pl.Int64(), None
    if meta is None:
        return None
    ftype = meta.get("field_type", "")
    validation = meta.get("text_validation_type_or_show_slider_number", "")
    if ftype in ("yesno", "truefalse"):
        return pl.Int64(), None
    if ftype == "calc":
        return pl.Float64(), None
    if ftype != "text":
        return None
    if validation == "integer":
        return pl.Int64(), None
    if validation == "number" or (validation.startswith("number_") and validation.endswith("dp")):
        return pl.Float64(), None
    if validation.startswith("date_"):
        return pl.Date(), "%Y-%m-%d"
    if validation.startswith("datetime_seconds_"):
        return pl.Datetime("us"), "%Y-%m-%d %H:%M:%S"
    if validation.startswith("datetime_"):
        return pl.Datetime("us"), "%Y-%m-%d %H:%M"
    return None


def type_table(frame: pl.DataFrame, metadata: Sequence[Mapping[str, str]], def_field: str) -> pl.DataFrame:
    """Type each column where the typed value turns back into exactly the same text; else keep it as text."""
    if not frame.width:
        return frame
    meta = {row["field_name"]: row for row in metadata}
    exprs = []
    for name in frame.columns:
        target = None if name == def_field else _target(name, meta.get(name))
        if target is None:
            continue
        dtype, fmt = target
        col = pl.col(name)
        if fmt is None:
            exprs.append(col.cast(dtype, strict=False).alias(name))
        elif dtype == pl.Date():
            exprs.append(col.str.to_date(fmt, strict=False).alias(name))
        else:
            exprs.append(col.str.to_datetime(fmt, strict=False, time_unit="us").alias(name))
    if not exprs:
        return frame
    candidate = frame.with_columns(exprs)
    typed_names = [e.meta.output_name() for e in exprs]
    back = stringify(candidate.select(typed_names))
    keep = [
        name for name in typed_names
        if frame.select((pl.col(name).is_null() == back[name].is_null()).all()
                        & (pl.col(name).eq_missing(back[name]) | pl.col(name).is_null()).all()).item()
    ]
    return frame.with_columns([candidate[name] for name in keep])


# -- files ------------------------------------------------------------------------------------------------------


def _read_tables_as_text(out: Path, manifest: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
    tables = {}
    for entry in manifest.get("tables", []):
        path = out / entry["file"]
        try:
            frame = pl.read_parquet(path)
        except Exception:
            raise DataError("cannot read this table of the pulled copy (pull again with --full)",
                            location=Location(file=str(path))) from None
        tables[entry["name"]] = stringify(frame) if frame.width else frame
    return tables


def _sha(metadata: Sequence[Mapping[str, str]]) -> str:
    return hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()


def _stored_metadata(out: Path, manifest: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """The data dictionary the last pull used, if the copy keeps it whole (a copy made before it was kept does
    not: then it is exported again)."""
    name = manifest.get("metadata_file")
    if not name:
        return None
    try:
        rows = json.loads((out / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) and _sha(rows) == manifest.get("metadata_sha256") else None


def _synced(path: Path) -> None:
    """`path` (a file or a folder's entries) on disk, not only in the system's cache."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write(out: Path, run_id: int, tables: Mapping[str, pl.DataFrame], metadata: Sequence[Mapping[str, str]],
           manifest: dict[str, Any]) -> None:
    folder = out / f"data-{run_id}"
    spare = 0
    while folder.exists() and not _pull_folder(folder):  # someone's own folder of that name: not ours to clear
        spare += 1
        folder = out / f"data-{run_id}.{spare}"
    if folder.exists():  # a pull's, half written by a run of the same id that was killed
        shutil.rmtree(folder)
    folder.mkdir()
    # the dictionary goes with the copy: the next pull reuses it when REDCap's log shows no design change
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    manifest["metadata_file"] = f"{folder.name}/metadata.json"
    entries = []
    for name, frame in tables.items():
        file = f"{folder.name}/{name}.parquet"
        frame.write_parquet(out / file)
        _synced(out / file)
        if os.environ.get(KILL_HOOK_ENV):
            os.kill(os.getpid(), signal.SIGKILL)
        repeating = "redcap_repeat_instrument" in frame.columns and frame["redcap_repeat_instrument"].eq(name).any()
        entries.append({"name": name, "file": file, "rows": frame.height, "repeating": bool(repeating)})
    _synced(folder / "metadata.json")
    _synced(folder)
    manifest["tables"] = entries
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _synced(tmp)
    # the switch: before it the old copy is whole, after it the new one (on disk: the tables it names are, before
    # the manifest that names them, so a power cut cannot leave a manifest pointing at unwritten tables)
    os.replace(tmp, out / MANIFEST)
    _synced(out)
    # the previous copy, and any half-written one of a pull that was killed before its switch
    for stale in out.glob("data-*"):
        if stale != folder and _pull_folder(stale):
            shutil.rmtree(stale, ignore_errors=True)


_PULL_FOLDER = re.compile(r"data-\d+(\.\d+)?")


def _pull_folder(path: Path) -> bool:
    """Whether `path` is a copy folder a pull wrote (its name, and nothing in it but the tables and the
    dictionary): the only kind a pull deletes. `--out` may be a folder that holds the user's own files too."""
    return (path.is_dir() and _PULL_FOLDER.fullmatch(path.name) is not None
            and all(entry.is_file() and (entry.suffix == ".parquet" or entry.name == "metadata.json")
                    for entry in path.iterdir()))
