"""The nightly job: pull intake from REDCap, validate, screen, write results back, and keep a ledger.

Guarantees, and how they are kept:
- *Nothing lost.* The pull watermark (for REDCap's dateRangeBegin) only moves when a run finishes, and each
  pull reaches back an overlap (10 minutes by default) so clock skew between this machine and the server cannot
  hide a change. Every route by which data reaches REDCap (form, survey, import) updates the record's change
  time, so a record that did not change cannot screen differently unless the definitions or the run date
  changed, and both of those are handled below: undecided candidates are not pulled again just for being
  undecided.
- *Own write-backs are not changes.* Writing a result updates the record's change time, so without care the
  night after a write-back would pull every record written. The ledger keeps when each run's write-back began
  and ended; the next run asks REDCap for the ids changed since the watermark (ids only) and, among those a run
  wrote in that window (the previous one, or an earlier one when runs are minutes apart), pulls only the ones
  also changed after that write-back ended (plus the overlap). A record
  edited between the run's start (less the overlap) and the write-back is asked for just before writing and
  is not counted as the run's own write (ledger note 'written, changed during the run'), so the next run
  screens it again. Inside the overlap after a write-back the change times cannot tell an edit from the job's
  own write, so REDCap's log is read too (one call, the record edits since the write-back ended): a record whose
  log shows a change to a field the write-back does not write is pulled. What remains is an edit made while the
  write-back runs, or, when REDCap's clock is behind this machine's, as far behind as that after it; without the
  Logging right, any edit within the overlap after the write-back. Such an edit is seen when the record next
  changes (`own_writes=False` turns the exclusion off).
- *Nothing duplicated.* Results are written to fixed fields of the screening event (a keyed upsert, never a
  new instance), and only where REDCap's current values differ from the new ones: a rerun after a crash
  writes only what did not land. Writes are read back and compared before the ledger records them.
- *A date is not a change.* When a result was screened (`elig_screened_at`, `elig_as_of`) is left out of the
  comparison and of the ledger's hashes: a new as-of date that changes no result writes nothing. The form status
  (Complete) is compared like a result, so a form an older trialkit left Incomplete is written once.
- *Clears are deliberate.* A result field that must become blank (an old primary reason once a candidate is
  eligible) is written with overwrite behaviour, and the payload holds only the result fields, so nothing
  else in the record can be cleared.

- *Nothing resurrected.* REDCap's import creates a record that does not exist: a record deleted in REDCap
  between the pull and the write-back (a withdrawn participant) would come back as a shell holding only the
  result. The ids are read again just before writing and such records are left out and counted (a few
  seconds of race remain: REDCap has no update-only import).

- *Nothing stale.* A result stays right only while what decided it stays the same. Each run records a fingerprint of
  the definitions as loaded (rule set, study file, every instrument, the event screened, trialkit's version;
  see trialkit.definitions.fingerprint); when it differs from the last successful run's, every record is
  rescreened, and the run says why ("instruments changed: madrs.yaml"). A rule file hash alone missed a changed
  calculated field: decided records kept results offline screening no longer gave.

The ledger is a small SQLite file: one row per run (with its definitions fingerprint and, for a full run, why it
was full), and one row per record result that reached REDCap, with a
content hash (`note` 'written' by the run, or 'found' there by a later run: the write of a run that was killed
or lost its reply). Only one run at a time uses a ledger (a lock file next to it); a run that never finished
(killed, power cut) is marked 'interrupted' by the next one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.definitions.fingerprint import Fingerprint, fingerprint
from trialkit.errors import RedcapError, TrialkitError, UsageError
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.stages import Report, StageEvent
from trialkit.screening.writeback import FORM_STATUS_FIELD, WRITEBACK_FIELDS

RESULT_FORM = "eligibility_result"
STAMP_FIELD = "elig_screened_at"
AS_OF_FIELD = "elig_as_of"
#: The result fields compared with REDCap's, and the form's status. When a result was screened (the time stamp,
#: the as-of date) is never a change by itself: a new --as-of date that changes no result writes nothing, and
#: REDCap keeps the date of the screening that last changed the result.
RESULT_FIELDS = (*(name for name in WRITEBACK_FIELDS if name not in (STAMP_FIELD, AS_OF_FIELD)), FORM_STATUS_FIELD)
#: What the write-back sends, by version: a change rescreens every record once, so results written by an older
#: trialkit are brought up to date (2: the form status Complete, every reason in words).
WRITEBACK_FORMAT = 2


@dataclass(frozen=True)
class NightlyResult:
    run_id: int
    as_of: dt.date
    full: bool
    pulled: int  # records pulled and screened
    written: int  # records whose result changed and was written
    unchanged: int
    invalid_records: int  # records with validation errors (screened all the same; reported)
    dispositions: Mapping[str, int] = field(default_factory=dict)
    findings: Any = field(default=None, repr=False)  # trialkit.validation.Findings of the pulled records
    deleted: int = 0  # records deleted in REDCap between the pull and the write-back: not written
    full_reason: str = ""  # why every record was rescreened ("first run", "rules changed", ...); "" if incremental
    moved: int = 0  # records written that changed in REDCap around the pull: screened again by the next run
    found: int = 0  # results already in REDCap that the ledger did not hold (a killed run's writes)
    previous: str = ""  # what went wrong with the run before this one ("" when it finished)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "full": self.full,
            "full_reason": self.full_reason,
            "pulled": self.pulled,
            "written": self.written,
            "unchanged": self.unchanged,
            "invalid_records": self.invalid_records,
            "deleted": self.deleted,
            "moved": self.moved,
            "found": self.found,
            "dispositions": dict(self.dispositions),
            "previous": self.previous,
        }

    def counts(self) -> dict[str, Any]:
        """What the ledger keeps of the run besides pulled and written."""
        return {"unchanged": self.unchanged, "invalid_records": self.invalid_records, "deleted": self.deleted,
                "moved": self.moved, "found": self.found, "dispositions": dict(self.dispositions)}


#: Columns added to `runs` after the first ledgers were written: added in place to an older ledger on opening.
_RUN_COLUMNS = {
    "fingerprint": "TEXT",  # sha256 of the definitions fingerprint (NULL: run recorded by an older trialkit)
    "definitions": "TEXT",  # the fingerprint's parts as JSON, to say what changed since
    "full_reason": "TEXT",  # why the run rescreened every record
    "writes_began": "TEXT",  # this machine's clock just before the write-back's first import (NULL: none)
    "writes_ended": "TEXT",  # ... and after its last one
    "counts": "TEXT",  # NightlyResult.counts() as JSON (unchanged, deleted, dispositions, ...)
}


@dataclass(frozen=True)
class PreviousRun:
    """The last successful run, as the next one needs it."""

    started_at: dt.datetime
    as_of: dt.date
    ruleset_sha256: str
    fingerprint: Fingerprint | None  # None: recorded before fingerprints (or unreadable)
    run_id: int = 0
    writes_ended: dt.datetime | None = None  # None: the run wrote nothing (or was recorded by an older trialkit)


class Ledger:
    """What each run pulled and wrote, so reruns are incremental and auditable."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = _lock_file(Path(f"{self.path}.lock"))
        try:
            self._db = sqlite3.connect(self.path)
            if _has_table(self._db, "data_runs"):
                self._db.close()
                self._release()
                raise UsageError(f"{self.path} is the ledger of `redcap pull` and `push`: give the nightly job its "
                                 "own (--ledger)")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS runs (
                    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
                    as_of TEXT NOT NULL, ruleset_sha256 TEXT NOT NULL, full INTEGER NOT NULL,
                    pulled INTEGER, written INTEGER, message TEXT);
                CREATE TABLE IF NOT EXISTS writes (
                    run_id INTEGER NOT NULL REFERENCES runs(id), record_id TEXT NOT NULL,
                    content_sha256 TEXT NOT NULL, written_at TEXT NOT NULL, PRIMARY KEY (run_id, record_id));
                """
            )
            if "note" not in {row[1] for row in self._db.execute("PRAGMA table_info(writes)")}:
                self._db.execute("ALTER TABLE writes ADD COLUMN note TEXT NOT NULL DEFAULT 'written'")
            have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            for name, kind in _RUN_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            # this process holds the lock: a run still 'running' is one that was killed or lost its machine
            self._db.execute(
                "UPDATE runs SET status = 'interrupted', message = 'did not finish (killed or stopped)' "
                "WHERE status = 'running'"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            self._release()
            raise UsageError(f"{self.path}: cannot use it as the nightly ledger ({exc})") from None

    def close(self) -> None:
        self._db.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the lock
            self._lock = None

    def last_success(self) -> PreviousRun | None:
        row = self._db.execute(
            "SELECT started_at, as_of, ruleset_sha256, definitions, id, writes_ended FROM runs WHERE status = 'ok' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return PreviousRun(dt.datetime.fromisoformat(row[0]), dt.date.fromisoformat(row[1]), row[2],
                           Fingerprint.from_json(row[3]), run_id=row[4],
                           writes_ended=dt.datetime.fromisoformat(row[5]) if row[5] else None)

    def mark_writes(self, run_id: int, began: dt.datetime, ended: dt.datetime) -> None:
        """When the run's write-back ran (this machine's clock): the next run tells its own writes by it."""
        self._db.execute("UPDATE runs SET writes_began = ?, writes_ended = ? WHERE id = ?",
                         (began.isoformat(timespec="seconds"), ended.isoformat(timespec="seconds"), run_id))
        self._db.commit()

    def write_backs_since(self, since: dt.datetime) -> list[tuple[int, dt.datetime]]:
        """(run id, end of its write-back) of every run whose write-back ended at or after `since`, oldest first."""
        rows = self._db.execute(
            "SELECT id, writes_ended FROM runs WHERE writes_ended IS NOT NULL AND writes_ended >= ? ORDER BY id",
            (since.isoformat(timespec="seconds"),),
        )
        return [(row[0], dt.datetime.fromisoformat(row[1])) for row in rows]

    def written_ids(self, run_id: int) -> set[str]:
        """The records whose result this run wrote itself (not those it found already there)."""
        rows = self._db.execute("SELECT record_id FROM writes WHERE run_id = ? AND note = 'written'", (run_id,))
        return {row[0] for row in rows}

    def begin(self, started_at: dt.datetime, as_of: dt.date, sha256: str, full: bool, *,
              definitions: Fingerprint | None = None, full_reason: str = "") -> int:
        cur = self._db.execute(
            "INSERT INTO runs (started_at, status, as_of, ruleset_sha256, full, fingerprint, definitions, "
            "full_reason) VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
            (started_at.isoformat(timespec="seconds"), as_of.isoformat(), sha256, int(full),
             definitions.sha256 if definitions is not None else None,
             definitions.to_json() if definitions is not None else None, full_reason or None),
        )
        self._db.commit()
        return int(cur.lastrowid)

    def record_writes(self, run_id: int, rows: Sequence[Mapping[str, str]], record_id: str, at: dt.datetime,
                      *, note: str = "written") -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO writes (run_id, record_id, content_sha256, written_at, note) VALUES (?,?,?,?,?)",
            [(run_id, row[record_id], content_hash(row), at.isoformat(timespec="seconds"), note) for row in rows],
        )
        self._db.commit()

    def latest_hashes(self) -> dict[str, str]:
        """The content hash of each record's last result in the ledger."""
        rows = self._db.execute(
            "SELECT record_id, content_sha256 FROM writes WHERE rowid IN "
            "(SELECT max(rowid) FROM writes GROUP BY record_id)"
        )
        return dict(rows.fetchall())

    def finish(self, run_id: int, status: str, *, at: dt.datetime, pulled: int = 0, written: int = 0,
               message: str = "", counts: Mapping[str, Any] | None = None) -> None:
        self._db.execute(
            "UPDATE runs SET status = ?, finished_at = ?, pulled = ?, written = ?, message = ?, counts = ? "
            "WHERE id = ?",
            (status, at.isoformat(timespec="seconds"), pulled, written, message,
             json.dumps(dict(counts), sort_keys=True) if counts is not None else None, run_id),
        )
        self._db.commit()

    def last_run(self) -> dict[str, Any] | None:
        """The latest run, whatever its status (an interrupted one is marked so by opening the ledger)."""
        runs = self.runs(last=1)
        return runs[0] if runs else None

    def runs(self, *, last: int | None = None) -> list[dict[str, Any]]:
        """The runs, oldest first (only the `last` few when given)."""
        return _runs(self._db, last)

    def writes(self, run_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM writes", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        cur = self._db.execute(sql + " ORDER BY run_id, record_id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _runs(db: sqlite3.Connection, last: int | None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM runs ORDER BY id DESC" + (f" LIMIT {int(last)}" if last is not None else "")
    cur = db.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in reversed(cur.fetchall())]


def read_runs(path: str | Path, *, last: int | None = None) -> list[dict[str, Any]]:
    """The runs of a ledger, read without taking it: a listing must not wait for, or disturb, a run in progress.
    A run still 'running' while no run holds the ledger is shown 'interrupted' (as the next run will mark it)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no nightly ledger there (give the --ledger the nightly runs with)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            runs = _runs(db, last)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: cannot read it as a nightly ledger ({exc})") from None
    if any(r["status"] == "running" for r in runs) and _lock_is_free(Path(f"{path}.lock")):
        for r in runs:
            if r["status"] == "running":
                r["status"], r["message"] = "interrupted", "did not finish (killed or stopped)"
    return runs


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether a ledger file holds `name`: the nightly ledger and the pull/push one must not share a file, or their
    listings (`redcap runs`) and their locks would mix two jobs."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _lock_is_free(path: Path) -> bool:
    try:
        handle = _lock_file(path)
    except UsageError:
        return False
    if handle is not None:
        handle.close()
    return True


def _lock_file(path: Path) -> Any:
    """Hold an exclusive lock on `path` for as long as the returned file is open (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one run at a time is then the operator's business
        return None
    try:
        handle = path.open("a")
    except OSError as exc:
        raise UsageError(f"{path.parent}: cannot keep the nightly ledger there ({exc.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(
            f"another nightly run is using the ledger {path.with_suffix('')}: wait for it to end"
        ) from None
    return handle


def content_hash(row: Mapping[str, str]) -> str:
    """The hash of a result as the ledger compares it: when it was screened is not part of it."""
    payload = json.dumps({k: row[k] for k in sorted(row) if k not in (STAMP_FIELD, AS_OF_FIELD)},
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _others_changes(client: RedcapClient, ledger: Ledger, changed: list[str], window: dt.datetime,
                    overlap: dt.timedelta, record_id: str) -> list[str]:
    """`changed` (the ids REDCap changed since `window`) less the run's own write-backs: a record whose last change
    in the window is a result this job wrote is not pulled again, unless it also changed after that write-back
    ended (plus the overlap): someone else's edit. Every run whose write-back ended in the window counts, not only
    the last one: after a run that wrote, a rerun minutes later that wrote nothing must not make the next night
    pull again everything the first one wrote. One small call per such write-back (usually one)."""
    pending = set(changed)
    last_write: dict[str, dt.datetime] = {}
    for run_id, ended in ledger.write_backs_since(window):  # oldest first: a later write-back wins
        for record in ledger.written_ids(run_id) & pending:
            last_write[record] = ended
    if not last_write:
        return changed
    edited: set[str] = set()
    for ended in sorted(set(last_write.values())):
        after = set(client.changed_ids(ended + overlap))
        edited |= {r for r, e in last_write.items() if e == ended and r in after}
    # Inside the overlap the change times cannot tell a coordinator's edit from the write-back (REDCap's clock may be
    # ahead): REDCap's log can, by what an entry changed, as a write-back changes the result fields only. Read from
    # the end of the write-back on, so that, clocks agreeing, it holds the edits since and not the write-back itself.
    rest = set(last_write) - edited
    if rest:
        edited |= _edited_beside_results(client, rest, min(last_write[r] for r in rest), record_id)
    return [r for r in changed if r not in last_write or r in edited]


#: a field named in a REDCap log entry's details: "phq9_1 = '2', meds(1) = checked, ..."
_LOGGED_FIELD = re.compile(r"(?:^|,\s*)([A-Za-z][A-Za-z0-9_]*)(?:\([^)]*\))? = ")


def _edited_beside_results(client: RedcapClient, records: set[str], since: dt.datetime,
                           record_id: str) -> set[str]:
    """The `records` whose data REDCap's log shows changed since `since` in a field a write-back does not write
    (someone's edit); any entry that cannot be read so counts as an edit. Nothing when the log cannot be read (no
    Logging right): the change times alone decide, as before."""
    if not records:
        return set()
    try:
        entries = client.log_entries("record_edit", since)
    except RedcapError:
        return set()
    ours = {*WRITEBACK_FIELDS, FORM_STATUS_FIELD, record_id, "redcap_event_name"}
    edited = set()
    for entry in entries:
        record = str(entry.get("record") or _updated_record(entry))
        if record not in records or record in edited:
            continue
        named = set(_LOGGED_FIELD.findall(str(entry.get("details") or "")))
        if not named or named - ours:
            edited.add(record)
    return edited


def _updated_record(entry: Mapping[str, Any]) -> str:
    """The record an older REDCap's log names only in its action: 'Update record 0042'."""
    action = str(entry.get("action", "")).strip()
    for word in ("Update record", "Delete record data"):
        if action.startswith(word):
            return action[len(word):].strip().split(" ", 1)[0]
    return ""


def run_nightly(
    client: RedcapClient,
    study: Any,
    rules: Any,
    *,
    ledger: Ledger,
    as_of: dt.date,
    now: dt.datetime,
    full: bool = False,
    overlap: dt.timedelta = dt.timedelta(minutes=10),
    clock: Callable[[], dt.datetime] | None = None,
    options: Mapping[str, Any] | None = None,
    own_writes: bool = True,
    report: Report | None = None,
) -> NightlyResult:
    """One nightly pass. `now` stamps the run's start (and the pull watermark); `clock`, when given, stamps its
    end in the ledger (else the start time is used, which keeps tests deterministic). `options`: anything else
    the caller's screening depends on (JSON-able); a change of it rescreens every record, like a changed
    definition. A run is full when asked (`full`), on the first run, or when the definitions fingerprint differs
    from the last successful run's. `overlap`: how far each time comparison with REDCap's clock reaches back
    (the clock skew allowed between this machine and the server). `own_writes=False` pulls records the
    previous run wrote even when nothing else changed them. `report` is told each stage's start, progress and
    end, and every retried request with its reason (trialkit.redcap.stages)."""
    stage = ["definitions"]

    def emit(status: str, done: int | None = None, total: int | None = None, detail: str = "",
             name: str | None = None) -> None:
        if name is not None:
            stage[0] = name
        if report is not None:
            report(StageEvent(stage[0], status, done, total, detail, client.stats.calls))

    def retried(what: str, reason: str, delay: float) -> None:
        emit("retry", detail=f"{what}: {reason}; next try in {delay:g} s")

    hook = client.on_retry
    if report is not None:
        client.on_retry = retried
    try:
        return _run_nightly(client, study, rules, ledger=ledger, as_of=as_of, now=now, full=full, overlap=overlap,
                            finished=clock or (lambda: now), options=options, own_writes=own_writes, emit=emit)
    finally:
        client.on_retry = hook


def _run_nightly(client: RedcapClient, study: Any, rules: Any, *, ledger: Ledger, as_of: dt.date,
                 now: dt.datetime, full: bool, overlap: dt.timedelta, finished: Callable[[], dt.datetime],
                 options: Mapping[str, Any] | None, own_writes: bool, emit: Callable[..., None]) -> NightlyResult:
    _require_result_fields(study)
    from trialkit.redcap.definitions.guard import check_definitions

    event = _result_event(study)
    sha = rules.stamp()["sha256"]
    definitions = fingerprint(study, rules.ruleset,
                              options={"event": event, "write-back": WRITEBACK_FORMAT, **(options or {})})
    previous = ledger.last_success()
    last = ledger.last_run()
    after = ""
    if last is not None and last["status"] != "ok":
        after = (f"the previous run ({last['id']}, started {last['started_at']}) {last['status']}"
                 f"{': ' + last['message'] if last['message'] else ''}")
    reason = _full_reason(full, previous, definitions)
    dated = _run_date_dependence(rules, study)
    if not reason and previous is not None and previous.as_of != as_of and dated == "all":
        reason = f"the run date changed ({previous.as_of} -> {as_of}) and the rules measure from it"
    full = bool(reason)
    run_id = ledger.begin(now, as_of, sha, full, definitions=definitions, full_reason=reason)
    pulled = 0  # what a run that fails later still tells the ledger it pulled
    try:
        # first of all: screening REDCap data with definitions REDCap no longer has is worse than none. Inside the
        # run, so a night that fails here (the server down, a refused token, drifted definitions) is in the ledger
        emit("start", name="definitions")
        check_definitions(client, study)
        emit("done")
        record_id = client.def_field
        emit("start", name="changes")
        if full:
            ids = client.record_ids()
        else:
            assert previous is not None
            window = previous.started_at - overlap
            changed = client.changed_ids(window)
            if own_writes and changed:
                changed = _others_changes(client, ledger, changed, window, overlap, record_id)
            undated: list[str] = []
            if dated == "undated" and previous.as_of != as_of:
                # 'today' is the run date for candidates without a reference date: their results move with it
                ref = f"[{event}][{rules.reference_field}]" if event else f"[{rules.reference_field}]"
                undated = client.record_ids(filter_logic=f"{ref} = ''")
            ids = list(dict.fromkeys([*changed, *undated]))
        emit("done", len(ids), detail="every record" if full else "changed or undated records")
        emit("start", 0, len(ids), name="pull")
        # blank cells as "", as REDCap's JSON gives them and intake files are read
        frame = (client.export_frame(ids, on_chunk=lambda done, total: emit("progress", done, total))
                 .with_columns(pl.all().fill_null("")) if ids else pl.DataFrame())
        emit("done", len(ids), len(ids))
        pulled = frame.get_column(record_id).n_unique() if record_id in frame.columns else 0
        if frame.is_empty():
            quiet = NightlyResult(run_id, as_of, full, 0, 0, 0, 0, {}, full_reason=reason, previous=after)
            ledger.finish(run_id, "ok", at=finished(), counts=quiet.counts())
            return quiet

        # imported only now: pandera (and pandas with it) costs most of a second, and a quiet night needs neither
        from trialkit.records import IntakeData
        from trialkit.screening import result_records, screen
        from trialkit.validation import validate

        emit("start", name="screen")
        intake = IntakeData.from_frame(frame, study, event=event)
        findings = validate(intake, study, as_of=as_of)
        # screen() prepares intake data as every path does: values failing their checks are blanked and listed,
        # then calcs are computed (REDCap leaves one blank when data was imported before the calc existed)
        screening = screen(rules, intake, as_of=as_of)

        current = _current_results(frame, record_id, event)
        results = result_records(screening, screened_at=now, event=event, study=study)
        counts = dict(results.group_by("elig_disposition").len().iter_rows())
        emit("done", results.height, detail=", ".join(f"{n} {d}" for d, n in sorted(counts.items())))
        to_write = [
            row
            for row in results.to_dicts()
            if current.get(row[record_id]) != {name: row[name] for name in RESULT_FIELDS}
        ]

        # results already in REDCap that the ledger does not hold: written by a run that was killed, or whose
        # reply was lost, after REDCap saved them. The ledger records where each result came from.
        known = ledger.latest_hashes()
        writing = {row[record_id] for row in to_write}
        found = [row for row in results.to_dicts()
                 if row[record_id] not in writing and known.get(row[record_id]) != content_hash(row)]
        if found:
            ledger.record_writes(run_id, found, record_id, now, note="found")
        deleted = 0
        if to_write:
            ids_now = client.export_records([row[record_id] for row in to_write], fields=[record_id])
            still_there = {str(row[record_id]) for row in ids_now}
            kept = [row for row in to_write if row[record_id] in still_there]
            deleted = len(to_write) - len(kept)
            to_write = kept
        moved: list[Mapping[str, str]] = []
        if to_write:
            # edited around the pull (since the run began, less the overlap): maybe screened on data already
            # stale. Written all the same, but not as this run's own write, so the next run screens them again.
            since = set(client.changed_ids(now - overlap))
            moved = [row for row in to_write if row[record_id] in since]
        emit("start", 0, len(to_write), name="write-back")
        if to_write:
            began = finished()
            step = client.chunk_size  # one row per record: chunks of records, as import_records makes them
            for start in range(0, len(to_write), step):
                client.import_records(to_write[start : start + step], overwrite=True)
                emit("progress", min(start + step, len(to_write)), len(to_write))
            ended = finished()
        emit("done", len(to_write), len(to_write), detail=f"{len(current) - len(to_write) - deleted} unchanged")
        if to_write:
            emit("start", 0, len(to_write), name="verify")
            problems = client.verify(to_write, blanks_clear=True)
            if problems:
                raise RedcapError(
                    f"{len(problems)} result cell(s) did not read back as written, e.g. {problems[0]}"
                )
            ledger.record_writes(run_id, to_write, record_id, now)
            if moved:
                ledger.record_writes(run_id, moved, record_id, now, note="written, changed during the run")
            ledger.mark_writes(run_id, began, ended)
            emit("done", len(to_write), len(to_write))
        invalid = findings.records_with_errors().n_unique()
        unchanged = len(current) - len(to_write) - deleted
        result = NightlyResult(
            run_id, as_of, full, len(current), len(to_write), unchanged, invalid, counts, findings, deleted=deleted,
            full_reason=reason, moved=len(moved), found=len(found), previous=after,
        )
        ledger.finish(run_id, "ok", at=finished(), pulled=len(current), written=len(to_write),
                      counts=result.counts())
        return result
    except BaseException as exc:
        message = failure_message(exc)
        with contextlib.suppress(sqlite3.Error):  # the ledger itself failing must not hide the first error
            ledger.finish(run_id, "failed", at=finished(), pulled=pulled, message=message)
        raise


def failure_message(exc: BaseException) -> str:
    """What a ledger says of a run that ended with `exc`: trialkit's own message (it quotes no value), that it was
    stopped (Ctrl-C, or SIGTERM, which the CLI turns into SystemExit), or only the class of anything else."""
    if isinstance(exc, TrialkitError):
        # its first line: the ledger's listing is one line a run (a definitions diff follows on the next ones)
        return (exc.message.splitlines() or [""])[0].removesuffix(":")
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "stopped (interrupt or termination signal)"
    return type(exc).__name__


def _full_reason(asked: bool, previous: PreviousRun | None, definitions: Fingerprint) -> str:
    """Why this run must rescreen every record, or "" when changed and undecided records are enough."""
    if asked:
        return "full run requested"
    if previous is None:
        return "first run"
    if previous.fingerprint is None:
        return "no definitions fingerprint in the ledger (run recorded by an older trialkit)"
    return "; ".join(definitions.changes(previous.fingerprint))


def _run_date_dependence(rules: Any, study: Any) -> str:
    """Whose results can change with the run's as-of date alone: "all" (a criterion reads 'now', or 'today'
    without a per-candidate reference date, or reads a calculated field that does), "undated" (only candidates
    whose reference date is blank: 'today' is the as-of date for them), or "" (nobody)."""
    from trialkit.logic import parse
    from trialkit.logic.ast import FieldRef, String, walk

    def dated(text: str | None, words: tuple[str, ...]) -> bool:
        if not text:
            return False
        try:
            tree = parse(text)
        except Exception:  # a compiled rule set parses; a broken calc is the checker's business
            return False
        return any(isinstance(n, String) and n.value.strip().lower() in words for n in walk(tree))

    def calc_refs(text: str) -> set[str]:
        try:
            return {n.name for n in walk(parse(text)) if isinstance(n, FieldRef)}
        except Exception:
            return set()

    exprs = [x for cc in rules.criteria for x in (cc.criterion.expression, cc.criterion.applies_if) if x]
    if any(dated(x, ("now",)) for x in exprs):
        return "all"
    # calculated fields are computed as of the run date (with_calculations), whatever the reference date
    seen: set[str] = set()
    todo = [c for c in rules.columns() if c in study.fields]
    todo += [i.column for cc in rules.criteria for i in cc.missing_items if i.column and i.column in study.fields]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        f = study.fields.get(name)
        if f is not None and str(f.type) == "calc" and f.calculation:
            if dated(f.calculation, ("today", "now")):
                return "all"
            todo += [r for r in calc_refs(f.calculation) if r in study.fields]
    if any(dated(x, ("today",)) for x in exprs):
        return "undated" if rules.reference_field else "all"
    return ""


def _require_result_fields(study: Any) -> None:
    missing = [name for name in WRITEBACK_FIELDS if name not in study.fields]
    if missing:
        raise UsageError(
            f"the study has no field(s) {', '.join(missing)} to hold screening results: add the "
            f"'{RESULT_FORM}' instrument (see instruments/{RESULT_FORM}.yaml in the KAP-TRD study)"
        )
    # the write-back also sets that form's status field, <form>_complete, which exists only under that name
    elsewhere = sorted({study.field(name).form for name in WRITEBACK_FIELDS} - {RESULT_FORM})
    if elsewhere:
        raise UsageError(
            f"the screening result fields must be on the '{RESULT_FORM}' instrument (the write-back marks that form "
            f"Complete); they are on {', '.join(repr(f) for f in elsewhere)}"
        )


def _result_event(study: Any) -> str | None:
    if not study.longitudinal:
        return None
    events = study.events_of(study.field(RESULT_FIELDS[0]).form)
    return events[0] if events else None


def _current_results(frame: pl.DataFrame, record_id: str, event: str | None) -> dict[str, dict]:
    """The result values REDCap holds now, per record (every pulled record appears, blank if never screened)."""
    ids = frame[record_id].unique(maintain_order=True)
    out: dict[str, dict] = {rid: dict.fromkeys(RESULT_FIELDS, "") for rid in ids}
    rows = frame
    if "redcap_repeat_instrument" in rows.columns:
        rows = rows.filter(pl.col("redcap_repeat_instrument") == "")
    if event is not None and "redcap_event_name" in rows.columns:
        rows = rows.filter(pl.col("redcap_event_name") == event)
    have = [name for name in RESULT_FIELDS if name in rows.columns]
    for row in rows.select(record_id, *have).iter_rows(named=True):
        out[row[record_id]] = {name: row.get(name) or "" for name in RESULT_FIELDS}
    return out
