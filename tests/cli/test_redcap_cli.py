"""`trialkit redcap nightly` against the sandbox: token from the environment only, exit codes, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trialkit.definitions import load_study
from trialkit.redcap.sandbox import ProjectSpec, running_sandbox

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"


@pytest.fixture(scope="module")
def kap_sandbox():
    study = load_study(ROOT)
    with running_sandbox(ProjectSpec.from_definition(study)) as sb:
        rows = [
            {"record_id": "0001", "redcap_event_name": "screening_arm_1", "screening_date": "2026-10-01",
             "dob": "1980-05-05", "consent_signed": "1", "consent_date": "2026-09-30"},
        ]
        sb.project().import_records(rows)
        yield sb


def run(args, env_token=None, tmp_path=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if env_token:
        env["KAP_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "trialkit", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_nightly_runs_and_reports_json(kap_sandbox, tmp_path):
    proc = run(["redcap", "nightly", "--url", kap_sandbox.url, "--token-env", "KAP_TOKEN", "--rules", str(RULES),
                "--ledger", str(tmp_path / "l.sqlite"), "--as-of", "2026-10-01", "--format", "json",
                "--findings", str(tmp_path / "findings.csv")],
               env_token=kap_sandbox.token, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out)[:2] == ["command", "ok"] and (out["command"], out["ok"]) == ("redcap nightly", True)
    assert out["pulled"] == 1 and out["written"] == 1 and out["dispositions"] == {"pending": 1}
    assert out["full"] and out["full_reason"] == "first run"
    assert kap_sandbox.token not in proc.stdout + proc.stderr
    findings = (tmp_path / "findings.csv").read_text().splitlines()
    header = findings[0].split(",")
    assert {"record", "field", "check", "message"} <= set(header)
    # the partly filled screening forms leave required fields blank: reported against record 0001
    assert any(line.split(",")[header.index("record")] == "0001" for line in findings[1:])


def test_missing_token_is_a_usage_error(kap_sandbox, tmp_path):
    proc = run(["redcap", "nightly", "--url", kap_sandbox.url, "--token-env", "KAP_TOKEN", "--rules", str(RULES),
                "--ledger", str(tmp_path / "l.sqlite")], tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "KAP_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_wrong_token_fails_cleanly_without_echoing_it(kap_sandbox, tmp_path):
    wrong = "F" * 32
    proc = run(["redcap", "nightly", "--url", kap_sandbox.url, "--token-env", "KAP_TOKEN", "--rules", str(RULES),
                "--ledger", str(tmp_path / "l.sqlite")], env_token=wrong, tmp_path=tmp_path)
    assert proc.returncode == 2  # configuration, not "network failure, rerun"
    assert "permissions to use the API" in proc.stderr
    assert wrong not in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_server_fails_cleanly(tmp_path):
    proc = run(["redcap", "nightly", "--url", "http://127.0.0.1:9/api/", "--token-env", "KAP_TOKEN",
                "--rules", str(RULES), "--ledger", str(tmp_path / "l.sqlite"), "--timeout", "2", "--attempts", "2"],
               env_token="A" * 32, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "failed after 2 attempts" in proc.stderr and "network" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stopped_run_is_recorded_as_stopped_not_running(kap_sandbox, tmp_path):
    import signal
    import sqlite3
    import time

    from trialkit.redcap.sandbox import FaultPlan

    ledger = tmp_path / "l.sqlite"
    # slow replies (the definitions check before the run makes a few requests too): the run waits on the server
    kap_sandbox.set_faults(FaultPlan(kind="slow", delay=0.5, share=1.0))
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KAP_TOKEN": kap_sandbox.token}
        proc = subprocess.Popen([sys.executable, "-m", "trialkit", "redcap", "nightly", "--url", kap_sandbox.url,
                                 "--token-env", "KAP_TOKEN", "--rules", str(RULES), "--ledger", str(ledger),
                                 "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _has_a_run(ledger):  # then it waits on the slow server
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        kap_sandbox.set_faults(None)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err and "Stopped." in err
    # a script reading the JSON gets its one object whatever happened (docs/cli.md): here, stopped
    envelope = json.loads(out)
    assert envelope["ok"] is False and envelope["error"]["exit_code"] == 143 and envelope["error"]["type"] == "Stopped"
    db = sqlite3.connect(ledger)
    try:
        assert db.execute("SELECT status, message FROM runs").fetchall() == [
            ("failed", "stopped (interrupt or termination signal)")]
    finally:
        db.close()


def _has_a_run(ledger: Path) -> bool:
    import sqlite3

    if not ledger.exists():
        return False
    try:
        db = sqlite3.connect(ledger)
        try:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:  # created but not set up yet
        return False


def test_diff_and_pull_json_share_the_envelope(kap_sandbox, tmp_path):
    """`redcap diff` and `redcap pull` print {"command", "ok", ...} like every command (docs/cli.md); ok is true
    exactly when the exit code is 0."""
    base = ["--url", kap_sandbox.url, "--token-env", "KAP_TOKEN", "--format", "json"]
    proc = run(["redcap", "diff", *base, "--study", str(ROOT)], env_token=kap_sandbox.token, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    assert (diff["command"], diff["ok"], diff["matches"]) == ("redcap diff", True, True)
    proc = run(["redcap", "pull", *base, "--study", str(ROOT), "--out", str(tmp_path / "copy"),
                "--ledger", str(tmp_path / "data.sqlite")], env_token=kap_sandbox.token, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pulled = json.loads(proc.stdout)
    assert (pulled["command"], pulled["ok"], pulled["records"], pulled["failures"]) == ("redcap pull", True, 1, 0)


@pytest.mark.parametrize("command", [["redcap", "push", "DATA"], ["redcap", "nightly", "--rules", "RULES"]])
def test_findings_named_for_another_format_is_a_usage_error_before_any_request(capsys, tmp_path, monkeypatch,
                                                                                command):
    from trialkit.cli import main

    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("REDCAP_API_TOKEN", "A" * 32)
    args = [a.replace("DATA", str(root / "examples" / "kap_trd_intake.csv"))
             .replace("RULES", str(root / "eligibility_rules" / "kap_trd.yaml")) for a in command]
    findings = tmp_path / "findings.json"
    with pytest.raises(SystemExit) as info:
        main([*args, "--url", "https://redcap.invalid/api/", "--findings", str(findings)])
    assert info.value.code == 2 and "name it .csv" in capsys.readouterr().err
    assert not findings.exists()
