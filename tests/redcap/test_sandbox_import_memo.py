"""What imports reuse from one batch to the next (cell checks, cell plans, the calc plan) against design changes,
and the storage's background checkpoint. Through PyCap over HTTP, except the storage test.

Checked cells and cell plans are kept per project design (records._import_memo, on the Schema): a metadata import
makes a new design, so what was remembered under the old dictionary must not decide the next import.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from redcap import RedcapError
from sandbox_data import classic_spec

from trialkit.redcap.sandbox import ProjectSpec, records, running_sandbox, wsgi
from trialkit.redcap.sandbox import storage as storage_module
from trialkit.redcap.sandbox.storage import Storage
from trialkit.redcap.sandbox.wsgi import Limits


def _changed(meta: list[dict], field: str, **change: str) -> list[dict]:
    return [{**row, **change} if row["field_name"] == field else row for row in meta]


def test_a_choice_accepted_before_a_metadata_import_is_checked_again_after_it(classic):
    classic.import_records([{"record_id": "1", "site": "b"}])  # "b" is checked (and remembered) as valid
    meta = classic.export_metadata()
    classic.import_metadata(_changed(meta, "site", select_choices_or_calculations="a, Alpha | c, Gamma"))
    with pytest.raises(RedcapError) as err:
        classic.import_records([{"record_id": "2", "site": "b"}])
    assert err.value.args[0]["error"] == '"2","site","b","The value is not a valid category for site"'
    assert classic.import_records([{"record_id": "2", "site": "c"}]) == {"count": 1}


def test_a_calc_changed_by_a_metadata_import_computes_with_its_new_expression(classic):
    classic.import_records([{"record_id": "1", "weight": "70", "height": "175.0"}])
    assert classic.export_records()[0]["bmi"] == "22.8571428571"  # the old plan is built and used
    meta = classic.export_metadata()
    classic.import_metadata(_changed(meta, "bmi", select_choices_or_calculations="[weight]*2"))
    classic.import_records([{"record_id": "1", "weight": "71"}, {"record_id": "2", "weight": "60"}])
    assert [r["bmi"] for r in classic.export_records(fields=["record_id", "bmi"])] == ["142", "120"]


def test_a_remembered_date_check_holds_for_its_date_format_only(classic):
    classic.import_records([{"record_id": "1", "dob": "02/03/2020"}], date_format="MDY")
    classic.import_records([{"record_id": "2", "dob": "02/03/2020"}], date_format="DMY")
    assert [r["dob"] for r in classic.export_records(fields=["record_id", "dob"])] == ["2020-02-03", "2020-03-02"]


def test_remembered_checks_give_what_fresh_checks_give(sandbox, classic):
    rows = [{"record_id": str(i), "age": str(20 + i % 3), "site": "ab"[i % 2], "dob": f"2020-01-0{1 + i % 3}",
             "weight": "70", "height": "170.0"} for i in range(1, 7)]
    classic.import_records(rows[:3])
    classic.import_records(rows[3:])  # the second batch's cells are remembered from the first
    fresh = sandbox.project(sandbox.create_project(classic_spec()))
    try:
        fresh.import_records(rows)
        assert fresh.export_records() == classic.export_records()
    finally:
        sandbox.drop_project(fresh.token)


def test_checks_are_forgotten_past_the_limit(sandbox, classic, monkeypatch):
    monkeypatch.setattr(records, "_CHECK_MEMO_LIMIT", 2)
    for i in range(1, 5):
        classic.import_records([{"record_id": str(i), "age": str(30 + i), "email": f"p{i}@example.org"}])
    assert [r["age"] for r in classic.export_records(fields=["record_id", "age"])] == ["31", "32", "33", "34"]
    con = sandbox.storage.connect()
    try:
        _, schema, _ = sandbox.storage.project_for_token(con, classic.token)
    finally:
        con.close()
    assert len(schema.import_memo[("checks", "YMD")]) <= 2 + 2  # cleared before a batch, then that batch's cells


def test_an_import_larger_than_the_in_memory_body_is_spooled_and_imported():
    with running_sandbox(classic_spec(), limits=Limits(body_in_memory=4096)) as sb:
        project = sb.project()
        rows = [{"record_id": str(i), "notes": "x" * 200} for i in range(1, 101)]  # ~25 KB of form data
        assert project.import_records(rows) == {"count": 100}
        assert len(project.export_records()) == 100


def _rows_in_database_file(path: Path) -> int:
    """Log rows in the database file alone, without its WAL: a copy of the file, opened with no WAL beside it."""
    copy = path.with_name("copy.db")
    shutil.copyfile(path, copy)
    con = sqlite3.connect(copy)
    try:
        return con.execute("SELECT count(*) FROM log").fetchone()[0]
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


def test_a_commit_leaves_the_checkpoint_to_the_background(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module, "CHECKPOINT_ROWS", 5000)
    path = tmp_path / "s.db"
    storage = Storage(path)
    held = storage.connect()  # SQLite checkpoints when the last connection closes: keep one open
    try:
        storage.create_project(ProjectSpec.classic(classic_spec().metadata))
        entries = [(1, "2025-01-01 00:00:00", "u", "Update record", "x" * 2000, str(i), "") for i in range(3000)]
        with storage.write() as con:  # ~6 MB of WAL: SQLite's own checkpoint (1000 pages) would copy it here
            storage.log(con, entries)
        assert _rows_in_database_file(path) < 3000
        with storage.write() as con:  # 6,000 rows: over CHECKPOINT_ROWS, the background thread copies the WAL
            storage.log(con, entries)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:  # a copy taken while the checkpoint is writing the file may be torn: try again
                if _rows_in_database_file(path) == 6001:  # and the "Create project" entry
                    break
            except sqlite3.DatabaseError:
                pass
            time.sleep(0.02)
        assert _rows_in_database_file(path) == 6001
    finally:
        held.close()
        storage.close()
    assert storage._checkpointer._thread is None  # stopped and joined by close()


def test_a_new_database_has_16_kb_pages_and_an_existing_one_keeps_its_own(tmp_path):
    storage = Storage(tmp_path / "new.db")
    con = storage.connect()
    try:
        assert con.execute("PRAGMA page_size").fetchone()[0] == storage_module.PAGE_SIZE == 16384
    finally:
        con.close()
        storage.close()
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE t(x)")  # a database written before: SQLite's default 4 KB pages
    con.close()
    storage = Storage(old)
    try:
        token = storage.create_project(ProjectSpec.classic(classic_spec().metadata))
        assert storage.tokens() == [token]
        con = storage.connect()
        assert con.execute("PRAGMA page_size").fetchone()[0] == 4096
        con.close()
    finally:
        storage.close()


def test_a_large_import_gives_its_memory_back_after_its_reply(sandbox, classic, monkeypatch):
    trims: list[float] = []
    monkeypatch.setattr(wsgi, "release_memory", lambda: trims.append(time.monotonic()))
    rows = [{"record_id": str(i), "notes": "x" * 400} for i in range(1, 3001)]  # ~1.3 MB of form data
    assert classic.import_records(rows) == {"count": 3000}
    replied = time.monotonic()
    deadline = replied + 5
    while not trims and time.monotonic() < deadline:  # the server trims once the reply is written
        time.sleep(0.01)
    assert len(trims) == 1
    classic.import_records(rows[:10])  # a small body: no trim
    assert len(trims) == 1


def test_what_a_large_import_made_is_freed_in_a_thread_after_its_reply(sandbox, classic, monkeypatch):
    handed: list[tuple[list, int]] = []
    free_later = wsgi._free_later

    def spy(keep: list) -> None:
        handed.append((keep, len(keep)))
        free_later(keep)

    trims: list[float] = []
    monkeypatch.setattr(wsgi, "_free_later", spy)
    monkeypatch.setattr(wsgi, "release_memory", lambda: trims.append(time.monotonic()))
    rows = [{"record_id": str(i), "notes": "x" * 400} for i in range(1, 3001)]
    assert classic.import_records(rows) == {"count": 3000}
    deadline = time.monotonic() + 5
    while not trims and time.monotonic() < deadline:
        time.sleep(0.01)
    # the request and the import's working data, in separate items: all freed, then trimmed
    assert len(handed) == 1 and handed[0][0] == [] and handed[0][1] > 2 and len(trims) == 1
    assert classic.export_records(records=["2999"], fields=["record_id", "notes"]) == [
        {"record_id": "2999", "notes": "x" * 400}]
