"""SQLite storage of sandbox projects: definitions, record rows, files and the change log.

One row of `rows` is one REDCap record row (record, event, repeat instrument, instance) holding its values as a
JSON object of export column -> value (blank values are not stored). That keeps a 100,000-record export to one
ordered index scan, with no per-cell rows to reassemble. Writers hold `write_lock` and an IMMEDIATE transaction,
so two imports never interleave, also across processes sharing the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trialkit.errors import UsageError
from trialkit.redcap.sandbox.project import ProjectSpec, Schema

_DDL = """
CREATE TABLE IF NOT EXISTS projects(
    id INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT UNIQUE NOT NULL, spec TEXT NOT NULL, version INTEGER NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(
    pid INTEGER NOT NULL, record TEXT NOT NULL, rkey TEXT NOT NULL, dag TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL, changed TEXT NOT NULL, PRIMARY KEY(pid, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows(
    pid INTEGER NOT NULL, rkey TEXT NOT NULL, ev INTEGER NOT NULL, rform TEXT NOT NULL, inst INTEGER NOT NULL,
    record TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY(pid, rkey, ev, rform, inst)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
    pid INTEGER NOT NULL, record TEXT NOT NULL, event TEXT NOT NULL, inst INTEGER NOT NULL, field TEXT NOT NULL,
    name TEXT NOT NULL, mime TEXT NOT NULL, content BLOB NOT NULL,
    PRIMARY KEY(pid, record, event, inst, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log(
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, ts TEXT NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL,
    details TEXT NOT NULL, record TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_pid ON log(pid, ts);
"""

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# REDCap logs project design changes under this action; the API's `logtype=manage` returns them
DESIGN_ACTION = "Manage/Design"


def record_key(record: str) -> str:
    """Sort key giving natural order for numeric ids (1, 2, 10) and text order after them; unique per id."""
    if record.isascii() and record.isdigit():  # isdigit() alone takes "²", which int() refuses
        return f"0{int(record):020d}|{record}"
    return f"1{record}"


# What makes two definitions the same project design (the rest, like a status, may change while it is served)
DESIGN_FIELDS = ("metadata", "title", "arms", "events", "mappings", "repeating", "form_labels", "dags",
                 "missing_data_codes", "record_autonumbering", "compute_calcs", "longitudinal")
_SIDE_FILES = ("-wal", "-shm", "-journal")


def new_token() -> str:
    return secrets.token_hex(16).upper()


def _create_private(path: Path) -> bool:
    """Create the database file readable by its owner only (it holds API tokens and patient data); tighten an
    existing one that others can read. True when the file is new."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077:
            with contextlib.suppress(PermissionError):  # another user's file: leave it, SQLite may still read it
                os.chmod(path, mode & 0o700)
        return False
    os.close(fd)
    return True


# A stored row (a record's row: its values as JSON) is ~0.3-2 KB, so with SQLite's 4 KB pages most rows of the
# WITHOUT ROWID `rows` table spill onto overflow pages; 16 KB pages take a batch's rows and log entries in ~25%
# less CPU (500 KAP-TRD records: 9,000 rows and as many log entries per import batch)
PAGE_SIZE = 16384
CHECKPOINT_ROWS = 2000  # rows changed (rows, log entries) between background checkpoints: about SQLite's own 1000 pages


class _Checkpointer:
    """Copies committed WAL frames into the database file in a thread of its own, after every CHECKPOINT_ROWS
    changed rows, instead of SQLite doing it inside the commit that crosses its threshold.

    PASSIVE: it never waits for a reader or a writer (an export streaming from an older snapshot keeps the frames
    it needs; a later checkpoint copies them). SQLite also checkpoints when the last connection closes."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._pending = 0
        self._thread: threading.Thread | None = None

    def written(self, changes: int) -> None:
        with self._lock:
            self._pending += changes
            if self._pending < CHECKPOINT_ROWS or self._stopping:
                return
            self._pending = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="trialkit-sandbox-checkpoint", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        con = self._storage.connect()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                # busy or gone: the next one (or the last connection's close) copies the frames
                with contextlib.suppress(sqlite3.Error):
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            con.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join()


class Storage:
    """The sandbox database. Thread-safe: each caller gets its own connection through `connect()`."""

    def __init__(self, path: str | Path | None = None, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        # No file given: a throw-away file in a temporary directory, not SQLite's shared-cache memory mode, whose
        # table locks would make an import fail at once while an export is streaming (WAL lets both run).
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        if path is None or str(path) == ":memory:":
            self._tmpdir = tempfile.TemporaryDirectory(prefix="trialkit-sandbox-")
            path = Path(self._tmpdir.name) / "sandbox.db"
        self.path = Path(path)
        self.created = False
        self.write_lock = threading.RLock()
        self.clock = clock or (lambda: dt.datetime.now().replace(microsecond=0))
        self._schemas: dict[tuple[int, int], Schema] = {}
        self._checkpointer = _Checkpointer(self)
        try:
            self.created = _create_private(self.path)
            self._uri = self.path.resolve().as_uri()
            con = self.connect()
            try:
                if self.created:  # only an empty file takes a page size; an existing database keeps its own
                    con.execute(f"PRAGMA page_size={PAGE_SIZE}")
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_DDL)
            finally:
                con.close()
        except (sqlite3.Error, OSError) as exc:  # a missing folder, no write permission, a file that is not a database
            self.close(remove_created=True)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"{path}: cannot use it as the sandbox database ({reason})") from None

    def now(self) -> str:
        return self.clock().strftime(TIME_FORMAT)

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self._uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the process-wide write lock: all or nothing.

        The commit does not copy the WAL into the database file (SQLite's automatic checkpoint, ~40 ms after an
        import batch of 500 KAP-TRD records, paid by the request): `_Checkpointer` does that in the background
        once enough rows were written. Durability is unchanged: a commit is in the WAL either way."""
        with self.write_lock:
            con = self.connect()
            try:
                con.execute("PRAGMA wal_autocheckpoint=0")
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
                self._checkpointer.written(con.total_changes)
            finally:
                con.close()

    def close(self, *, remove_created: bool = False) -> None:
        """Release the database; with `remove_created`, delete its files if this Storage created them (a server
        that failed to start leaves nothing behind)."""
        self._checkpointer.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        elif remove_created and self.created:
            for suffix in ("", *_SIDE_FILES):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            self.created = False

    # ---- projects ---------------------------------------------------------------------------------------
    def create_project(self, spec: ProjectSpec, token: str | None = None) -> str:
        token = token or new_token()
        if len(token) != 32:
            raise UsageError("a REDCap API token must be 32 characters long")
        with self.write() as con:
            cur = con.execute(
                "INSERT INTO projects(token, spec, version, created) VALUES (?,?,1,?)",
                (token, spec.to_json(), self.now()),
            )
            self.log_design(con, cur.lastrowid, spec.username, "Create project")
        return token

    def project_for_token(self, con: sqlite3.Connection, token: str) -> tuple[int, Schema, str] | None:
        row = con.execute("SELECT id, version, spec, created FROM projects WHERE token=?", (token,)).fetchone()
        if row is None:
            return None
        pid, version, spec_json, created = row
        key = (pid, version)
        schema = self._schemas.get(key)
        if schema is None:
            schema = Schema(ProjectSpec.from_json(spec_json))
            self._schemas[key] = schema
        return pid, schema, created

    def has_token(self, token: str) -> bool:
        con = self.connect()
        try:
            return con.execute("SELECT 1 FROM projects WHERE token=?", (token,)).fetchone() is not None
        finally:
            con.close()

    def stored_spec(self, token: str) -> ProjectSpec:
        con = self.connect()
        try:
            (stored,) = con.execute("SELECT spec FROM projects WHERE token=?", (token,)).fetchone()
        finally:
            con.close()
        return ProjectSpec.from_json(stored)

    def same_design(self, token: str, spec: ProjectSpec) -> bool:
        """Whether the stored project of `token` has the design of `spec` (DESIGN_FIELDS; not its status)."""
        # both through the same JSON round trip, so tuples/lists and metadata defaults compare alike
        old = json.loads(self.stored_spec(token).to_json())
        new = json.loads(ProjectSpec.from_json(spec.to_json()).to_json())
        return all(old.get(k) == new.get(k) for k in DESIGN_FIELDS)

    def summary(self, token: str) -> tuple[str, int]:
        """The title and record count of a stored project (for messages)."""
        con = self.connect()
        try:
            pid, spec = con.execute("SELECT id, spec FROM projects WHERE token=?", (token,)).fetchone()
            (n,) = con.execute("SELECT count(*) FROM records WHERE pid=?", (pid,)).fetchone()
        finally:
            con.close()
        return str(json.loads(spec).get("title", "")), n

    def tokens(self) -> list[str]:
        con = self.connect()
        try:
            return [r[0] for r in con.execute("SELECT token FROM projects ORDER BY id")]
        finally:
            con.close()

    def update_spec(self, con: sqlite3.Connection, pid: int, spec: ProjectSpec) -> None:
        con.execute("UPDATE projects SET spec=?, version=version+1 WHERE id=?", (spec.to_json(), pid))
        schema = Schema(spec)
        # keep row order keys in step with the event order
        for i, event in enumerate(schema.events):
            con.execute("UPDATE rows SET ev=? WHERE pid=? AND event=? AND ev<>?", (i, pid, event, i))

    def reset_project(self, token: str) -> None:
        """Delete every record, file and log entry of the project; keep its definition."""
        with self.write() as con:
            found = con.execute("SELECT id FROM projects WHERE token=?", (token,)).fetchone()
            if found is None:
                raise UsageError("no sandbox project has that token")
            for table in ("records", "rows", "files"):
                con.execute(f"DELETE FROM {table} WHERE pid=?", found)
            con.execute("DELETE FROM log WHERE pid=?", found)

    def replace_spec(self, token: str, spec: ProjectSpec) -> None:
        with self.write() as con:
            found = con.execute("SELECT id FROM projects WHERE token=?", (token,)).fetchone()
            if found is None:
                raise UsageError("no sandbox project has that token")
            self.update_spec(con, found[0], spec)

    def drop_project(self, token: str) -> None:
        with self.write() as con:
            found = con.execute("SELECT id FROM projects WHERE token=?", (token,)).fetchone()
            if found is None:
                return
            for table in ("records", "rows", "files", "log"):
                con.execute(f"DELETE FROM {table} WHERE pid=?", found)
            con.execute("DELETE FROM projects WHERE id=?", found)

    def log_design(self, con: sqlite3.Connection, pid: int, username: str, details: str) -> None:
        """One design change (project created, dictionary, arms, events, mappings, repeats, DAGs) in the log."""
        self.log(con, [(pid, self.now(), username, DESIGN_ACTION, details, "", "")])

    def log(self, con: sqlite3.Connection, entries: list[tuple[int, str, str, str, str, str, str]]) -> None:
        insert_many(con, "INSERT INTO log(pid, ts, username, action, details, record, event)", entries)


def insert_many(con: sqlite3.Connection, insert: str, rows: list[tuple]) -> None:
    """`insert` ("INSERT INTO t(a, b)") of `rows`, in their order, several rows to a statement: executemany steps
    one statement per row through the sqlite3 module (binding, reset, the GIL released and taken back each time),
    which was a third of writing a 500-record import batch (9,000 rows and 9,000 log entries: ~40 -> ~28 ms).
    SQLite inserts a VALUES list's rows in order, as one statement each would (log ids keep the entries' order)."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, min(_ROWS_PER_INSERT, con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    one = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        chunk = rows[i:i + per]
        con.execute(f"{insert} VALUES {','.join([one] * len(chunk))}", list(itertools.chain.from_iterable(chunk)))


_ROWS_PER_INSERT = 500
