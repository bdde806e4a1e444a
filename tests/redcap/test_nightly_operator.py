"""What the operator of `trialkit redcap nightly` sees: progress and stage logs, configuration errors, the run
after an interrupted one, the ledger's runs, and no writes when only the run date moved. The KAP-TRD study in
the sandbox, driven through PyCap over HTTP."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from test_sync import AS_OF, NOW, intake_rows, kap, rules, study

__all__ = ["intake_rows", "kap", "rules", "study"]  # the nightly's fixtures, used here too

from trialkit.cli import main
from trialkit.redcap.sandbox import FaultPlan
from trialkit.redcap.stages import STAGES, StageReporter
from trialkit.redcap.sync import Ledger, run_nightly
from trialkit.screening.writeback import FORM_STATUS_FIELD

ROOT_RULES = "eligibility_rules/kap_trd.yaml"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_progress_on_a_terminal_names_stages_and_retries_and_is_quiet_when_piped(kap, sandbox, study, rules,
                                                                                tmp_path):
    client, _, _ = kap
    terminal, piped, log = io.StringIO(), io.StringIO(), io.StringIO()
    shown = [StageReporter(terminal, tty=True), StageReporter(piped), StageReporter(log, log=True)]
    # the first record export of the pull loses its connection: retried, and the operator is told why
    sandbox.set_faults(FaultPlan(kind="drop", next_n=1, contents=("record",)))
    result = run_nightly(client, study, rules, ledger=Ledger(tmp_path / "l.sqlite"), as_of=AS_OF, now=NOW,
                         report=lambda event: [r(event) for r in shown])
    for r in shown:
        r.close()
    assert result.written == 60

    drawn = terminal.getvalue()
    assert drawn.startswith("\r\033[K") and drawn.endswith("\r\033[K")  # redrawn in place, cleared at the end
    for text in ("nightly: pull", "nightly: screen 60", "nightly: write-back 60/60", "retrying (record id export: "
                 "network: ConnectionError"):
        assert text in drawn
    assert piped.getvalue() == ""  # StringIO is no terminal: nothing

    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [x["stage"] for x in lines if x["status"] == "done"] == list(STAGES)
    retries = [x for x in lines if x["status"] == "retry"]
    assert len(retries) == 1 and "ConnectionError" in retries[0]["detail"]
    pull = next(x for x in lines if x["stage"] == "pull" and x["status"] == "done")
    assert pull["done"] == pull["total"] == 60 and pull["seconds"] >= 0 and pull["requests"] > 0


def test_after_an_interrupted_run_a_new_as_of_date_writes_nothing_and_runs_lists_them(kap, study, rules, tmp_path,
                                                                                     capsys):
    client, _, _ = kap
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.begin(NOW - dt.timedelta(days=1), AS_OF, "0" * 64, True)  # then the machine died: never finished
    ledger.close()

    ledger = Ledger(path)
    first = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    assert first.previous == ("the previous run (1, started 2026-11-01T02:00:00) interrupted: did not finish "
                              "(killed or stopped)")
    # the eligibility form is Complete (green in REDCap), not Incomplete
    status = client.export_records(fields=["record_id", FORM_STATUS_FIELD], events=["screening_arm_1"])
    assert {r[FORM_STATUS_FIELD] for r in status if not r.get("redcap_repeat_instrument")} == {"2"}

    # every record screened again for a later date, and no result changes: nothing is sent, nothing 'found'
    later = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF + dt.timedelta(days=1),
                        now=NOW + dt.timedelta(days=1), full=True)
    assert (later.pulled, later.written, later.unchanged, later.found, later.previous) == (60, 0, 60, 0, "")
    assert {r["elig_as_of"] for r in client.export_records(fields=["record_id", "elig_as_of"],
                                                           events=["screening_arm_1"])} == {AS_OF.isoformat()}
    ledger.close()

    code, out, _ = cli(capsys, "redcap", "runs", "--ledger", str(path))
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["run", "started", "ended", "status"]
    assert [r.split()[3] for r in rows[1:]] == ["interrupted", "ok", "ok"]
    assert rows[2].split()[5:7] == ["60", "60"] and rows[3].split()[5:7] == ["60", "0"]  # pulled, written
    code, out, _ = cli(capsys, "redcap", "runs", "--ledger", str(path), "--format", "json", "--last", "1")
    doc = json.loads(out)
    assert doc["command"] == "redcap runs" and doc["ok"] is True
    (last,) = doc["runs"]
    assert last["status"] == "ok" and last["full_reason"] == "full run requested"
    assert last["counts"]["unchanged"] == 60 and sum(last["counts"]["dispositions"].values()) == 60


def test_runs_of_a_missing_ledger_is_a_usage_error(tmp_path, capsys):
    code, _, err = cli(capsys, "redcap", "runs", "--ledger", str(tmp_path / "none.sqlite"))
    assert code == 2 and "no nightly ledger" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [
    ["nightly", "--rules", ROOT_RULES],
    ["pull", "--out", "{tmp}/copy"],
    ["diff", "--study", "."],
])
def test_a_url_without_scheme_or_a_refused_token_is_a_configuration_error(sandbox, tmp_path, capsys, monkeypatch,
                                                                          command):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    wrong = "F" * 32
    monkeypatch.setenv("KAP_TOKEN", wrong)
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    if command[0] != "diff":
        args += ["--ledger", str(tmp_path / "l.sqlite")]
    bare = sandbox.url.split("://", 1)[1]
    for url, fix in ((bare, "e.g. https://redcap.example.org/api/"), (sandbox.url, "check that the token is")):
        code, out, err = cli(capsys, "redcap", args[0], "--url", url, "--token-env", "KAP_TOKEN", *args[1:])
        assert code == 2, err  # not 1, "network failure, rerun"
        assert fix in err and "Traceback" not in err and wrong not in out + err


def test_a_run_that_fails_before_its_pull_is_in_the_ledger_as_failed(kap, sandbox, study, rules, tmp_path):
    from trialkit.errors import DefinitionError, RedcapError

    client, _, _ = kap
    ledger = Ledger(tmp_path / "l.sqlite")
    run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    # the next night the server drops every metadata request (the definitions check's first): the run fails
    sandbox.set_faults(FaultPlan(kind="drop", share=1.0, contents=("metadata",)))
    with pytest.raises(RedcapError):
        run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=1))
    sandbox.set_faults(None)
    runs = ledger.runs()
    assert [r["status"] for r in runs] == ["ok", "failed"]  # the failed night is there for the operator
    assert "metadata export failed after 3 attempts" in runs[1]["message"] and runs[1]["pulled"] == 0
    # and it changes nothing for the next run: incremental from the last run that finished, told of the failure
    after = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=1, hours=1))
    assert not after.full and after.previous.startswith("the previous run (2, started 2026-11-03T02:00:00) failed")

    # definitions that drifted: refused (exit 2) and in the ledger too, on the one line a run gets there
    client.import_metadata([{**row, "select_choices_or_calculations": "[madrs_1]"}
                            if row["field_name"] == "madrs_total" else row for row in client.metadata()])
    with pytest.raises(DefinitionError):
        run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=2))
    last = ledger.runs()[-1]
    assert last["status"] == "failed" and last["message"].startswith("the REDCap project's definitions differ")
    assert "\n" not in last["message"]
    ledger.close()


def test_the_nightly_ledger_and_the_pull_push_ledger_are_not_mixed_up(tmp_path):
    from trialkit.errors import UsageError
    from trialkit.redcap.data_ledger import DataLedger

    nightly, data = tmp_path / "nightly.sqlite", tmp_path / "data.sqlite"
    Ledger(nightly).close()
    DataLedger(data).close()
    # each refuses the other's file (usage: exit 2), naming what it is, and leaves it as it was
    with pytest.raises(UsageError, match="is the nightly ledger"):
        DataLedger(nightly)
    with pytest.raises(UsageError, match="is the ledger of `redcap pull` and `push`"):
        Ledger(data)
    import sqlite3

    for path, foreign in ((nightly, "data_runs"), (data, "writes")):
        db = sqlite3.connect(path)
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (foreign,)).fetchone() is None
        db.close()
    Ledger(nightly).close()  # and each still opens its own (the lock was let go)
    DataLedger(data).close()


def test_a_findings_file_that_cannot_be_written_is_a_usage_error_before_the_run(sandbox, tmp_path, capsys,
                                                                                monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("KAP_TOKEN", "F" * 32)
    code, _, err = cli(capsys, "redcap", "nightly", "--url", sandbox.url, "--token-env", "KAP_TOKEN", "--rules",
                       ROOT_RULES, "--ledger", str(tmp_path / "l.sqlite"), "--findings",
                       str(tmp_path / "none" / "f.csv"))
    assert code == 2 and "cannot write" in err and "Traceback" not in err, err
    assert not (tmp_path / "l.sqlite").exists()  # no run was begun
