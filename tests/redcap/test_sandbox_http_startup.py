"""Starting a sandbox on a database file: the file is private, a different design is not served silently, and a
failed start leaves no file behind. `trialkit sandbox serve` as a user runs it, PyCap against the printed URL."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from redcap import Project
from sandbox_data import classic_spec

from trialkit.errors import UsageError
from trialkit.redcap.sandbox import Sandbox, running_sandbox

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ABCDEF0123456789ABCDEF0123456789"


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # what most shells use: new files are world-readable unless made otherwise
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path, open_umask):
    db = tmp_path / "sandbox.db"
    with running_sandbox(classic_spec(), db=db) as sb:
        sb.project().import_records([{"record_id": "1", "name": "Jane"}])
        assert _mode(db) == 0o600
        wal = Path(f"{db}-wal")
        assert not wal.exists() or _mode(wal) == 0o600


def test_an_existing_readable_database_file_is_made_private(tmp_path, open_umask):
    db = tmp_path / "sandbox.db"
    with running_sandbox(classic_spec(), db=db):
        pass
    db.chmod(0o644)
    with running_sandbox(db=db):
        assert _mode(db) == 0o600


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trialkit", "sandbox", "serve", "--format", "json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TRIALKIT_SANDBOX_TOKEN": TOKEN})


def _other_study(tmp_path: Path) -> Path:
    other = tmp_path / "other_dd.csv"
    header = ('"Variable / Field Name","Form Name","Section Header","Field Type","Field Label",'
              '"Choices, Calculations, OR Slider Labels","Field Note","Text Validation Type OR Show Slider Number",'
              '"Text Validation Min","Text Validation Max",Identifier?,"Branching Logic (Show field only if...)",'
              '"Required Field?","Custom Alignment","Question Number (surveys only)","Matrix Group Name",'
              '"Matrix Ranking?","Field Annotation"')
    rows = ["study_id,intake,,text,Study ID" + "," * 13, "score,intake,,text,Score" + "," * 13]
    other.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return other


def test_a_different_design_on_an_existing_database_needs_replace(tmp_path):
    db = tmp_path / "kap.db"
    proc = _serve("--study", str(ROOT), "--db", str(db))
    try:
        url = json.loads(proc.stdout.readline())["url"]
        Project(url, TOKEN, timeout=10).import_records(
            [{"record_id": str(i), "redcap_event_name": "screening_arm_1"} for i in range(1, 301)])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    other = _other_study(tmp_path)
    refused = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--dictionary", str(other),
                              "--db", str(db)], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "TRIALKIT_SANDBOX_TOKEN": TOKEN})
    assert refused.returncode == 2
    assert "300 records" in refused.stderr and "--replace" in refused.stderr
    assert "Traceback" not in refused.stderr and TOKEN not in refused.stderr
    # the same study again is served as stored, with its 300 records
    proc = _serve("--study", str(ROOT), "--db", str(db))
    try:
        url = json.loads(proc.stdout.readline())["url"]
        assert len(Project(url, TOKEN, timeout=10).export_records(fields=["record_id"])) == 300
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    proc = _serve("--dictionary", str(other), "--db", str(db), "--replace")
    try:
        url = json.loads(proc.stdout.readline())["url"]
        assert Project(url, TOKEN, timeout=10).def_field == "study_id"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_open_project_refuses_a_different_design_and_keeps_the_data(tmp_path):
    db = tmp_path / "x.db"
    with running_sandbox(classic_spec(), db=db) as sb:
        sb.project().import_records([{"record_id": "1", "age": "40"}])
    with running_sandbox(db=db) as sb:
        token = sb.token
        assert sb.open_project(classic_spec()) == token  # the same design is fine
        with pytest.raises(UsageError, match="1 records"):
            sb.open_project(classic_spec(title="Another"))
        assert sb.project().export_records(fields=["age"])[0]["age"] == "40"
        sb.open_project(classic_spec(title="Another"), replace=True)
        assert sb.project().export_project_info()["project_title"] == "Another"


def test_a_failed_start_leaves_no_database_file(tmp_path):
    db = tmp_path / "new.db"
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--db", str(db)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "holds no project yet" in done.stderr
    assert not db.exists() and not Path(f"{db}-wal").exists()  # the old server left new.db behind


def test_a_port_in_use_leaves_no_database_file(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "new.db"
        with pytest.raises(OSError):
            Sandbox(db=db, port=port)
        assert not db.exists()
        done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--study", str(ROOT), "--db",
                               str(db), "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "cannot listen" in done.stderr
    assert not db.exists()


def test_an_existing_file_survives_a_failed_start(tmp_path):
    db = tmp_path / "kept.db"
    with running_sandbox(classic_spec(), db=db) as sb:
        sb.project().import_records([{"record_id": "1"}])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            Sandbox(db=db, port=busy.getsockname()[1])
    with running_sandbox(db=db) as sb:
        assert len(sb.project().export_records()) == 1


def test_replacing_a_design_keeps_the_project_status(tmp_path):
    db = tmp_path / "x.db"
    with running_sandbox(classic_spec(in_production=True), db=db):
        pass
    with running_sandbox(db=db) as sb:
        sb.open_project(classic_spec(title="Another"), replace=True)
        info = sb.project().export_project_info()
        assert (info["project_title"], info["in_production"]) == ("Another", 1)
