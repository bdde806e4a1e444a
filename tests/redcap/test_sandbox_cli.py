"""`trialkit sandbox serve` as a user runs it: a subprocess, PyCap against the printed URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redcap import Project

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ABCDEF0123456789ABCDEF0123456789"


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trialkit", "sandbox", "serve", "--format", "json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def test_serve_a_study_with_a_token_from_the_environment(tmp_path):
    db = tmp_path / "kap.db"
    proc = _serve("--study", str(ROOT), "--db", str(db), env={"TRIALKIT_SANDBOX_TOKEN": TOKEN})
    try:
        started = json.loads(proc.stdout.readline())
        assert started["token"] is None  # a token from the environment is never printed
        proj = Project(started["url"], TOKEN, timeout=10)
        assert proj.is_longitudinal
        assert "screening_arm_1" in [e["unique_event_name"] for e in proj.export_events()]
        proj.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "consent_signed": "1"}])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert TOKEN not in err
    # restart on the same file without a design: the project and its data are still there
    proc = _serve("--db", str(db), env={"TRIALKIT_SANDBOX_TOKEN": TOKEN})
    try:
        started = json.loads(proc.stdout.readline())
        rows = Project(started["url"], TOKEN, timeout=10).export_records(fields=["consent_signed"])
        assert rows[0]["consent_signed"] == "1"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_serve_a_dictionary_prints_a_new_token(tmp_path, shared_dictionaries):
    proc = _serve("--dictionary", str(shared_dictionaries / "bridge2ai_phq9_gad7_subset_DataDictionary.csv"),
                  "--db", str(tmp_path / "dd.db"), env={"TRIALKIT_SANDBOX_TOKEN": ""})
    try:
        started = json.loads(proc.stdout.readline())
        assert len(started["token"]) == 32
        proj = Project(started["url"], started["token"], timeout=10)
        assert proj.is_longitudinal is False
        assert proj.def_field == "record_id"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_serve_without_a_project_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--db", str(tmp_path / "x.db")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "holds no project yet" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where", ["missing/folder/x.db", "not_a_database.db"])
def test_an_unusable_database_file_is_a_usage_error(tmp_path, where):
    (tmp_path / "not_a_database.db").write_text("plain text, not SQLite\n" * 100)
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--study", str(ROOT), "--db",
                           str(tmp_path / where)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "cannot use it as the sandbox database" in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_help_has_an_example():
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0
    assert "trialkit sandbox serve --study" in done.stdout


def test_a_dictionary_that_is_not_utf8_is_located_not_an_internal_error(tmp_path):
    src = tmp_path / "dict.csv"
    src.write_bytes(b"Variable / Field Name,Form Name\nrecord_id,f1\nq1,Caf\xe9\n")
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--dictionary", str(src), "--db",
                           str(tmp_path / "x.db")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"{src}:3:7: IO002" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
