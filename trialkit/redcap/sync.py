"""The nightly job: pull intake from REDCap, validate, screen, write results back, and keep a ledger.

Guarantees, and how they are kept:
- *Nothing lost.* The pull watermark (for REDCap's dateRangeBegin) only moves when a run finishes, and each
  pull reaches back an overlap (24 h by default) so clock skew between this machine and the server cannot
  hide a change. Candidates still pending (or never screened) are re-screened every night whatever their
  change time, because missing data may arrive by other routes and a new rule set may decide them.
- *Nothing duplicated.* Results are written to fixed fields of the screening event (a keyed upsert, never a
  new instance), and only where REDCap's current values differ from the new ones: a rerun after a crash
  writes only what did not land. Writes are read back and compared before the ledger records them.
- *Clears are deliberate.* A result field that must become blank (an old primary reason once a candidate is
  eligible) is written with overwrite behaviour, and the payload holds only the result fields, so nothing
  else in the record can be cleared.

The ledger is a small SQLite file: one row per run, one row per record written, with a content hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import RedcapError, UsageError
from trialkit.redcap.client import RedcapClient
from trialkit.screening.writeback import WRITEBACK_FIELDS

RESULT_FORM = "eligibility_result"
STAMP_FIELD = "elig_screened_at"
#: The result fields compared with REDCap's; the screening time stamp alone is never a change.
RESULT_FIELDS = tuple(name for name in WRITEBACK_FIELDS if name != STAMP_FIELD)
_UNDECIDED = f"[{RESULT_FIELDS[0]}] <> 'eligible' and [{RESULT_FIELDS[0]}] <> 'ineligible'"


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "full": self.full,
            "pulled": self.pulled,
            "written": self.written,
            "unchanged": self.unchanged,
            "invalid_records": self.invalid_records,
            "dispositions": dict(self.dispositions),
        }


class Ledger:
    """What each run pulled and wrote, so reruns are incremental and auditable."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
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
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def last_success(self) -> tuple[dt.datetime, str] | None:
        row = self._db.execute(
            "SELECT started_at, ruleset_sha256 FROM runs WHERE status = 'ok' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return (dt.datetime.fromisoformat(row[0]), row[1]) if row else None

    def begin(self, started_at: dt.datetime, as_of: dt.date, sha256: str, full: bool) -> int:
        cur = self._db.execute(
            "INSERT INTO runs (started_at, status, as_of, ruleset_sha256, full) VALUES (?, 'running', ?, ?, ?)",
            (started_at.isoformat(timespec="seconds"), as_of.isoformat(), sha256, int(full)),
        )
        self._db.commit()
        return int(cur.lastrowid)

    def record_writes(self, run_id: int, rows: Sequence[Mapping[str, str]], record_id: str, at: dt.datetime) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?)",
            [(run_id, row[record_id], content_hash(row), at.isoformat(timespec="seconds")) for row in rows],
        )
        self._db.commit()

    def finish(self, run_id: int, status: str, *, at: dt.datetime, pulled: int = 0, written: int = 0,
               message: str = "") -> None:
        self._db.execute(
            "UPDATE runs SET status = ?, finished_at = ?, pulled = ?, written = ?, message = ? WHERE id = ?",
            (status, at.isoformat(timespec="seconds"), pulled, written, message, run_id),
        )
        self._db.commit()

    def runs(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM runs ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def writes(self, run_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM writes", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        cur = self._db.execute(sql + " ORDER BY run_id, record_id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def content_hash(row: Mapping[str, str]) -> str:
    payload = json.dumps({k: row[k] for k in sorted(row) if k != STAMP_FIELD}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def run_nightly(
    client: RedcapClient,
    study: Any,
    rules: Any,
    *,
    ledger: Ledger,
    as_of: dt.date,
    now: dt.datetime,
    full: bool = False,
    overlap: dt.timedelta = dt.timedelta(hours=24),
    clock: Callable[[], dt.datetime] | None = None,
) -> NightlyResult:
    """One nightly pass. `now` stamps the run's start (and the pull watermark); `clock`, when given, stamps its
    end in the ledger (else the start time is used, which keeps tests deterministic)."""
    finished = clock or (lambda: now)
    from trialkit.records import IntakeData
    from trialkit.screening import result_records, screen
    from trialkit.validation import validate

    _require_result_fields(study)
    event = _result_event(study)
    sha = rules.stamp()["sha256"]
    previous = ledger.last_success()
    full = full or previous is None or previous[1] != sha
    run_id = ledger.begin(now, as_of, sha, full)
    try:
        record_id = client.def_field
        if full:
            ids = client.record_ids()
        else:
            changed = client.record_ids(changed_since=previous[0] - overlap)
            undecided = client.record_ids(filter_logic=_UNDECIDED)
            ids = list(dict.fromkeys([*changed, *undecided]))
        rows = client.export_records(ids) if ids else []
        if not rows:
            ledger.finish(run_id, "ok", at=finished())
            return NightlyResult(run_id, as_of, full, 0, 0, 0, 0, {})

        frame = pl.DataFrame(
            [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows],
            infer_schema_length=None,
        )
        intake = IntakeData.from_frame(frame, study, event=event)
        findings = validate(intake, study, as_of=as_of)
        # REDCap leaves a calc blank when it was never recomputed (e.g. data imported before the calc existed)
        screening = screen(rules, intake.with_calculations(as_of=as_of), as_of=as_of)

        current = _current_results(rows, record_id, event)
        results = result_records(screening, screened_at=now, event=event)
        counts = dict(results.group_by("elig_disposition").len().iter_rows())
        to_write = [
            row
            for row in results.to_dicts()
            if current.get(row[record_id]) != {name: row[name] for name in RESULT_FIELDS}
        ]

        if to_write:
            client.import_records(to_write, overwrite=True)
            problems = client.verify(to_write, blanks_clear=True)
            if problems:
                raise RedcapError(
                    f"{len(problems)} result cell(s) did not read back as written, e.g. {problems[0]}"
                )
            ledger.record_writes(run_id, to_write, record_id, now)
        invalid = findings.records_with_errors().n_unique()
        ledger.finish(run_id, "ok", at=finished(), pulled=len(current), written=len(to_write))
        return NightlyResult(
            run_id, as_of, full, len(current), len(to_write), len(current) - len(to_write), invalid, counts, findings
        )
    except BaseException as exc:
        message = exc.message if isinstance(exc, RedcapError | UsageError) else type(exc).__name__
        ledger.finish(run_id, "failed", at=finished(), message=message)
        raise


def _require_result_fields(study: Any) -> None:
    missing = [name for name in WRITEBACK_FIELDS if name not in study.fields]
    if missing:
        raise UsageError(
            f"the study has no field(s) {', '.join(missing)} to hold screening results: add the "
            f"'{RESULT_FORM}' instrument (see instruments/{RESULT_FORM}.yaml in the KAP-TRD study)"
        )


def _result_event(study: Any) -> str | None:
    if not study.longitudinal:
        return None
    events = study.events_of(study.field(RESULT_FIELDS[0]).form)
    return events[0] if events else None


def _current_results(rows: Sequence[Mapping[str, Any]], record_id: str, event: str | None) -> dict[str, dict]:
    """The result values REDCap holds now, per record (every pulled record appears, blank if never screened)."""
    out: dict[str, dict] = {}
    for row in rows:
        rid = str(row[record_id])
        out.setdefault(rid, dict.fromkeys(RESULT_FIELDS, ""))
        if row.get("redcap_repeat_instrument"):
            continue
        if event is not None and row.get("redcap_event_name") != event:
            continue
        out[rid] = {name: str(row.get(name, "") or "") for name in RESULT_FIELDS}
    return out
