"""`trialkit validate`: exit codes 0/1/2 (docs/cli.md), formats, --out, masked identifiers, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import intake_data as shared
import polars as pl
import pytest

from trialkit.cli import main

MINI = str(shared.MINI_DIR)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys):
    """Run `trialkit validate ...` in-process through the console entry point (exit code, stdout, stderr)."""

    def call(*args: str) -> Result:
        with pytest.raises(SystemExit) as exc:
            main(["validate", *args])
        captured = capsys.readouterr()
        return Result(exc.value.code or 0, captured.out, captured.err)

    return call


def test_real_process_never_shows_a_traceback(tmp_path):
    """One end-to-end run as a child process: unreadable data, exit 1, a message and no traceback."""
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "trialkit", "validate", str(path), "--study", MINI],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "cannot read as parquet" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def clean_csv(tmp_path) -> Path:
    return shared.write_csv(tmp_path / "intake.csv", [dict(r) for r in shared.CLEAN_ROWS])


@pytest.fixture
def bad_csv(tmp_path) -> Path:
    rows = [dict(r) for r in shared.CLEAN_ROWS]
    rows[0].update(age="200", dob="1850-03-03")
    rows[3].update(pregnant="1")  # hidden for a male: warning only
    return shared.write_csv(tmp_path / "bad.csv", rows)


def test_clean_file_exits_0(run, clean_csv):
    proc = run(str(clean_csv), "--study", MINI, "--as-of", "2026-01-01")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 error(s), 0 warning(s)")
    assert "as of 2026-01-01" in proc.stdout


def test_findings_exit_1_and_identifiers_masked(run, bad_csv):
    proc = run(str(bad_csv), "--study", MINI, "--as-of", "2026-01-01")
    assert proc.returncode == 1
    assert "outside the range 18 to 75" in proc.stdout
    assert "1850-03-03" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_warnings_alone_pass_unless_strict(run, tmp_path):
    rows = [dict(r) for r in shared.CLEAN_ROWS]
    rows[3].update(pregnant="0")
    path = shared.write_csv(tmp_path / "w.csv", rows)
    assert run(str(path), "--study", MINI, "--as-of", "2026-01-01").returncode == 0
    assert run(str(path), "--study", MINI, "--as-of", "2026-01-01", "--strict").returncode == 1


def test_json_and_csv_output_to_file(run, bad_csv, tmp_path):
    out = tmp_path / "findings.json"
    proc = run(str(bad_csv), "--study", MINI, "--format", "json", "--out", str(out), "--as-of", "2026-01-01")
    assert proc.returncode == 1
    assert proc.stdout == ""
    data = json.loads(out.read_text())
    assert {(f["field"], f["check"]) for f in data["findings"]} == {
        ("age", "range"),
        ("dob", "range"),
        ("pregnant", "hidden_value"),
    }
    assert "1850-03-03" not in out.read_text()
    proc = run(str(bad_csv), "--study", MINI, "--format", "csv", "--as-of", "2026-01-01")
    table = pl.read_csv(proc.stdout.encode())
    assert table.columns == ["row", "record", "event", "instance", "field", "value", "check", "severity", "message"]
    assert table.height == 3


@pytest.mark.parametrize(
    ("content", "name", "expect"),
    [
        ("participant,age\nP1,30\n", "other.csv", "no 'record_id' column"),
        (b"\x00\x01\x02garbage", "x.parquet", "cannot read as parquet"),
        ("[1, 2", "broken.json", "JSON"),
        ("", "empty.csv", "empty"),
    ],
)
def test_unreadable_data_exits_1_without_traceback(run, tmp_path, content, name, expect):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = run(str(path), "--study", MINI)
    assert proc.returncode == 1, proc.stderr  # the data could not be read: exit 1, as in `screen`
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_missing_data_file_is_a_usage_error(run, tmp_path):
    proc = run(str(tmp_path / "missing.csv"), "--study", MINI)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_options_exit_2(run, clean_csv, tmp_path):
    assert run(str(clean_csv), "--study", MINI, "--as-of", "yesterday").returncode == 2
    assert run(str(clean_csv), "--study", MINI, "--format", "xml").returncode == 2
    assert run(str(clean_csv), "--study", str(tmp_path)).returncode == 2  # no study.yaml there
    proc = run(str(clean_csv), "--study", MINI, "--out", str(tmp_path / "no" / "such" / "dir.csv"))
    assert proc.returncode == 2 and "cannot write" in proc.stderr


def test_help_has_an_example(run):
    proc = run("--help")
    assert proc.returncode == 0
    assert "trialkit validate intake.csv" in proc.stdout


def test_a_header_only_file_exits_1_as_screen_does(run, tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(",".join(shared.rows_frame(shared.CLEAN_ROWS).columns) + "\n", encoding="utf-8")
    result = run(str(path), "--study", MINI)
    assert result.returncode == 1
    assert "header.csv" in result.stderr and "no data rows" in result.stderr and "Traceback" not in result.stderr
