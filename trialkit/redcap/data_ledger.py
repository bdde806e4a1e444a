"""The ledger of `trialkit redcap pull` and `push`: runs, the source id -> REDCap id map, and what each push wrote.

A small SQLite file of its own (the nightly job keeps another); one process at a time (a lock file next to it,
the nightly ledger's lock). It belongs to one REDCap project: the first run stamps the project's id and URL in it,
and a run against another project is refused, because an id map applied to the wrong project would merge
participants.

Auto-numbered records are made exactly once with a write-ahead protocol on the id map:
`reserved` (an id is set aside for a source record, committed before anything is sent) -> `sending` (committed
just before the import that creates it) -> `created` (REDCap said so and the read-back agreed). A rerun after a
kill finds each source record's state and knows what the import it may have missed did: see trialkit.redcap.push.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trialkit.errors import UsageError
from trialkit.redcap.sync import _has_table, _lock_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS data_runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, watermark TEXT, full INTEGER NOT NULL DEFAULT 0, summary TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS id_map (
    source_id TEXT PRIMARY KEY, redcap_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    run_id INTEGER NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS push_writes (
    run_id INTEGER NOT NULL, record_id TEXT NOT NULL, kind TEXT NOT NULL, cells INTEGER NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (run_id, record_id, kind));
CREATE TABLE IF NOT EXISTS pushed (
    source_id TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL, run_id INTEGER NOT NULL, at TEXT NOT NULL);
"""


def _stamp(at: dt.datetime) -> str:
    return at.isoformat(timespec="seconds")


class DataLedger:
    """Runs of pull and push against one project, and the id map of auto-numbered records."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._lock = _lock_file(Path(f"{self.path}.lock"))
        except UsageError as exc:
            if "another nightly run" in exc.message:
                raise UsageError(f"another pull or push is using the ledger {self.path}: wait for it to end") from None
            raise
        try:
            self._db = sqlite3.connect(self.path)
            if _has_table(self._db, "runs"):
                self._db.close()
                self._release()
                raise UsageError(f"{self.path} is the nightly ledger: give `redcap pull` and `push` their own "
                                 "(--ledger; default STUDY/trialkit-data-ledger.sqlite)")
            self._db.executescript(_SCHEMA)
            # this process holds the lock: a run still 'running' was killed or lost its machine
            self._db.execute(
                "UPDATE data_runs SET status = 'interrupted', message = 'did not finish (killed or stopped)' "
                "WHERE status = 'running'"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            self._release()
            raise UsageError(f"{self.path}: cannot use it as the data ledger ({exc})") from None

    def close(self) -> None:
        self._db.close()
        self._release()

    def __enter__(self) -> DataLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- which project ----------------------------------------------------------------------------------------

    def bind(self, project_id: str, url: str) -> None:
        """Stamp the project on first use; refuse another project later."""
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", [("project_id", project_id), ("url", url)])
            self._db.commit()
            return
        if stored.get("project_id") != project_id or stored.get("url") != url:
            raise UsageError(
                f"the ledger {self.path} belongs to REDCap project {stored.get('project_id')} at {stored.get('url')}, "
                f"not project {project_id} at {url}: give each project its own ledger"
            )

    # -- runs ---------------------------------------------------------------------------------------------------

    def begin(self, kind: str, started_at: dt.datetime, *, full: bool = False) -> int:
        cur = self._db.execute(
            "INSERT INTO data_runs (kind, started_at, status, full) VALUES (?, ?, 'running', ?)",
            (kind, _stamp(started_at), int(full)),
        )
        self._db.commit()
        return int(cur.lastrowid)

    def finish(self, run_id: int, status: str, *, at: dt.datetime, watermark: dt.datetime | None = None,
               summary: Mapping[str, Any] | None = None, message: str = "") -> None:
        self._db.execute(
            "UPDATE data_runs SET status = ?, finished_at = ?, watermark = ?, summary = ?, message = ? WHERE id = ?",
            (status, _stamp(at), _stamp(watermark) if watermark else None,
             json.dumps(dict(summary)) if summary else None, message, run_id),
        )
        self._db.commit()

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM data_runs", ()
        if kind:
            sql, args = sql + " WHERE kind = ?", (kind,)
        return self._rows(sql + " ORDER BY id", args)

    # -- id map -------------------------------------------------------------------------------------------------

    def id_map(self) -> dict[str, tuple[str, str]]:
        """source id -> (REDCap id, state)."""
        return {s: (r, st) for s, r, st in self._db.execute("SELECT source_id, redcap_id, state FROM id_map")}

    def reserve(self, pairs: Iterable[tuple[str, str]], run_id: int, at: dt.datetime) -> None:
        """Set REDCap ids aside for source records (replacing an earlier reservation that was never sent)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO id_map (source_id, redcap_id, state, run_id, at) VALUES (?, ?, 'reserved', ?, ?)",
            [(s, r, run_id, _stamp(at)) for s, r in pairs],
        )
        self._db.commit()

    def mark(self, source_ids: Iterable[str], state: str, at: dt.datetime) -> None:
        self._db.executemany(
            "UPDATE id_map SET state = ?, at = ? WHERE source_id = ?",
            [(state, _stamp(at), s) for s in source_ids],
        )
        self._db.commit()

    # -- writes -------------------------------------------------------------------------------------------------

    def record_writes(self, run_id: int, cells: Mapping[str, int], kind: str, at: dt.datetime) -> None:
        """How many cells of each record a push set (or cleared) and read back as sent."""
        self._db.executemany(
            "INSERT OR REPLACE INTO push_writes (run_id, record_id, kind, cells, at) VALUES (?, ?, ?, ?, ?)",
            [(run_id, rid, kind, n, _stamp(at)) for rid, n in cells.items()],
        )
        self._db.commit()

    def pushed(self) -> dict[str, str]:
        """source id -> content hash of the data that REDCap was last seen to hold for it."""
        return dict(self._db.execute("SELECT source_id, content_sha256 FROM pushed").fetchall())

    def record_pushed(self, hashes: Mapping[str, str], run_id: int, at: dt.datetime) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO pushed (source_id, content_sha256, run_id, at) VALUES (?, ?, ?, ?)",
            [(s, h, run_id, _stamp(at)) for s, h in hashes.items()],
        )
        self._db.commit()

    def forget_pushed(self, source_ids: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM pushed WHERE source_id = ?", [(s,) for s in source_ids])
        self._db.commit()

    def last_push_watermark(self) -> dt.datetime | None:
        """When the last push that finished read REDCap back (a dry run has no watermark)."""
        row = self._db.execute(
            "SELECT watermark FROM data_runs WHERE kind = 'push' AND status IN ('ok', 'partial') "
            "AND watermark IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    def writes(self, run_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM push_writes", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        return self._rows(sql + " ORDER BY run_id, record_id, kind", args)

    def _rows(self, sql: str, args: tuple) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def read_data_runs(path: str | Path, *, last: int | None = None) -> list[dict[str, Any]] | None:
    """The pull and push runs of a data ledger, read without taking it (a listing must not wait for a run), each
    with its summary decoded; None when `path` is not a data ledger (the nightly job keeps another kind). A run
    still 'running' while no run holds the ledger is shown 'interrupted', as the next run will mark it."""
    from trialkit.redcap.sync import _lock_is_free

    path = Path(path)
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'data_runs'").fetchone() is None:
                return None
            sql = "SELECT * FROM data_runs ORDER BY id DESC" + (f" LIMIT {int(last)}" if last is not None else "")
            cur = db.execute(sql)
            names = [d[0] for d in cur.description]
            runs = [dict(zip(names, row, strict=True)) for row in reversed(cur.fetchall())]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: cannot read it as a ledger ({exc})") from None
    free = _lock_is_free(Path(f"{path}.lock"))
    for r in runs:
        r["summary"] = json.loads(r["summary"]) if r.get("summary") else None
        if r["status"] == "running" and free:
            r["status"], r["message"] = "interrupted", "did not finish (killed or stopped)"
    return runs
