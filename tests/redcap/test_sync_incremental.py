"""What an incremental nightly run pulls: only records that really changed since the last successful run (its own
write-backs excluded), with the sandbox's clock moving as a real server's does. PyCap over HTTP, no mocks."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from test_sync import AS_OF, intake_rows, kap, offline_results, rules, stored_results, study

__all__ = ["intake_rows", "kap", "rules", "study"]  # the fixtures of the nightly's first tests, used here too

from trialkit.redcap.client import RedcapClient, RetryPolicy, Token
from trialkit.redcap.sandbox import FaultPlan
from trialkit.redcap.sync import Ledger, run_nightly

ROOT = Path(__file__).resolve().parents[2]
START = dt.datetime(2026, 11, 2, 2, 0, 0)


class Ticking:
    """One clock for the server and the job: each reading moves it on a second, so a write-back is stamped after
    the run's start and an edit after the write-back, as on a real server."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def ticking(kap, sandbox):
    clock = Ticking(START)
    sandbox.set_clock(clock)
    return clock


def night(client, study, rules, ledger, clock: Ticking, **kwargs):
    return run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=clock(), clock=clock, **kwargs)


def test_the_night_after_a_write_back_pulls_nothing_and_makes_a_handful_of_requests(kap, ticking, study, rules,
                                                                                     tmp_path):
    client, _, _ = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = night(client, study, rules, ledger, ticking)
    assert first.written == 60 and first.dispositions.get("pending")  # undecided candidates exist
    ticking.now += dt.timedelta(days=1)
    client.calls.clear()
    second = night(client, study, rules, ledger, ticking)
    assert (second.full, second.pulled, second.written) == (False, 0, 0)
    assert "record export" not in client.calls  # no full rows at all
    assert len(client.calls) <= 12, "|".join(client.calls)
    # and the same the night after
    ticking.now += dt.timedelta(days=1)
    assert night(client, study, rules, ledger, ticking).pulled == 0


def test_a_rerun_minutes_later_does_not_make_the_next_night_pull_the_first_runs_writes(kap, ticking, study, rules,
                                                                                    tmp_path):
    """An operator reruns the job right after it wrote: the rerun pulls nothing and writes nothing, and the night
    after still knows the first run's write-backs (inside its window) as the job's own."""
    client, _, _ = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = night(client, study, rules, ledger, ticking)
    assert first.written == 60
    ticking.now += dt.timedelta(minutes=3)
    rerun = night(client, study, rules, ledger, ticking)
    assert (rerun.pulled, rerun.written) == (0, 0)
    rows = client.export_records(fields=["record_id"], events=["screening_arm_1"])
    edited = rows[0]["record_id"]
    ticking.now += dt.timedelta(hours=3)  # and a coordinator edits one record the next morning
    client.import_records([{"record_id": edited, "redcap_event_name": "screening_arm_1", "education_years": "9"}])
    ticking.now += dt.timedelta(hours=20)
    third = night(client, study, rules, ledger, ticking)
    assert third.pulled == 1 and not third.full


def _pregnancy_found_after_a_night(client, study, rules, ledger, ticking, after: dt.timedelta) -> str:
    """A night that writes results, then, `after` it, a coordinator records a positive pregnancy test on an eligible
    candidate of childbearing potential (a record that night wrote): its id."""
    night(client, study, rules, ledger, ticking)
    before = stored_results(client)
    rows = client.export_records(fields=["record_id", "childbearing_potential"], events=["screening_arm_1"])
    target = next(r["record_id"] for r in rows
                  if before[r["record_id"]][0] == "eligible" and r.get("childbearing_potential") == "1")
    ticking.now += after
    client.import_records([{"record_id": target, "redcap_event_name": "screening_arm_1",
                            "preg_test_result": "1", "pregnant": "1"}])
    return target


def test_an_edit_after_the_write_back_is_pulled_alone_and_rescreened(kap, ticking, study, rules, tmp_path):
    client, _, _ = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    # a coordinator, the next morning: a record this run wrote
    target = _pregnancy_found_after_a_night(client, study, rules, ledger, ticking, dt.timedelta(hours=3))
    ticking.now += dt.timedelta(hours=20)
    second = night(client, study, rules, ledger, ticking)
    assert (second.pulled, second.written) == (1, 1)
    assert stored_results(client)[target][0] == "ineligible"
    # with the exclusion off, every record the first run wrote comes back
    ticking.now += dt.timedelta(minutes=1)
    assert night(client, study, rules, ledger, ticking, own_writes=False).pulled == 1  # only the second's write


def test_an_edit_minutes_after_the_write_back_is_pulled_the_next_night(kap, ticking, study, rules, tmp_path):
    # inside the clock-skew overlap the change times cannot tell the coordinator's edit from the job's own write:
    # the record was taken for the write-back and its result stayed stale (REDCap's log tells them apart)
    client, _, _ = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    target = _pregnancy_found_after_a_night(client, study, rules, ledger, ticking, dt.timedelta(minutes=3))
    ticking.now += dt.timedelta(days=1)
    second = night(client, study, rules, ledger, ticking)
    assert (second.pulled, second.written) == (1, 1)
    assert stored_results(client)[target][0] == "ineligible"


class _EditsDuringTheRun(RedcapClient):
    """A real client whose project sees a coordinator's edit after the pull, before the write-back."""

    edit: dict | None = None

    def export_frame(self, records=None, **kwargs):
        frame = super().export_frame(records, **kwargs)
        if self.edit is not None:
            self.import_records([self.edit])
            self.edit = None
        return frame


def test_an_edit_between_the_pull_and_the_write_back_is_not_lost(kap, sandbox, ticking, study, rules, intake_rows,
                                                                  tmp_path):
    _, token, _ = kap
    client = _EditsDuringTheRun(sandbox.url, Token(token), chunk_size=25, retry=RetryPolicy(attempts=1))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    offline = offline_results(study, rules, intake_rows)
    rows = {r["record_id"]: r for r in intake_rows
            if r.get("redcap_event_name") == "screening_arm_1" and not r.get("redcap_repeat_instrument")}
    target = next(r for r, (d, _) in offline.items()
                  if d == "eligible" and rows[r].get("childbearing_potential") == "1")
    edit = {"record_id": target, "redcap_event_name": "screening_arm_1", "preg_test_result": "1",
            "pregnant": "1"}
    client.edit = edit
    first = night(client, study, rules, ledger, ticking)
    # screened on the data before the edit: written, but not taken for the run's own write the next night
    assert first.moved == 1 and first.written == 60
    notes = {w["record_id"]: w["note"] for w in ledger.writes(first.run_id)}
    assert notes[target] == "written, changed during the run"
    assert stored_results(client)[target][0] == "eligible"  # stale until the next run
    ticking.now += dt.timedelta(days=1)
    second = night(client, study, rules, ledger, ticking)
    assert (second.pulled, second.written) == (1, 1)
    edited = [{**r, **edit} if r is rows[target] else r for r in intake_rows]
    assert stored_results(client) == offline_results(study, rules, edited)
    assert stored_results(client)[target][0] == "ineligible"


def test_a_quiet_night_does_not_import_pandera(kap, sandbox, ticking, study, rules, tmp_path):
    _, token, _ = kap
    client = RedcapClient(sandbox.url, Token(token))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    night(client, study, rules, ledger, ticking)
    ledger.close()
    ticking.now += dt.timedelta(days=1)
    script = (
        "import datetime as dt, os, sys\n"
        "from pathlib import Path\n"
        "from trialkit.definitions import load_study\n"
        "from trialkit.redcap.client import RedcapClient, load_token\n"
        "from trialkit.redcap.sync import Ledger, run_nightly\n"
        "from trialkit.screening.run import load_rules\n"
        "root = Path(sys.argv[1]); study = load_study(root)\n"
        "rules = load_rules(root / 'eligibility_rules' / 'kap_trd.yaml', study)\n"
        "client = RedcapClient(sys.argv[2], load_token())\n"
        "now = dt.datetime.fromisoformat(sys.argv[4])\n"
        "r = run_nightly(client, study, rules, ledger=Ledger(sys.argv[3]), as_of=dt.date(2026, 11, 2), now=now)\n"
        "print(r.pulled, 'pandera' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), sandbox.url, str(tmp_path / "ledger.sqlite"),
         ticking().isoformat()],
        env={**os.environ, "REDCAP_API_TOKEN": token}, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "False", "False"]


def test_the_csv_pull_holds_what_the_json_export_holds(kap):
    client, _, _ = kap
    awkward = 'a "quoted", comma\nand a new line, and ünïcode'
    client.import_records([{"record_id": "0001", "redcap_event_name": "screening_arm_1", "current_ad": "1",
                            "current_ad_name": awkward}])
    ids = client.record_ids()[:30]
    frame = client.export_frame(ids).with_columns(pl.all().fill_null(""))
    rows = client.export_records(ids)
    expected = pl.DataFrame([{k: "" if v is None else str(v) for k, v in row.items()} for row in rows],
                            infer_schema_length=None)
    assert frame.columns == expected.columns
    assert frame.equals(expected)
    assert awkward in frame["current_ad_name"].to_list()


@pytest.mark.parametrize("kind", ["http500", "html_fatal"])
def test_a_server_failure_during_the_csv_pull_is_retried_not_read_as_data(kap, sandbox, kind):
    client, _, _ = kap
    ids = client.record_ids()[:30]
    clean = client.export_frame(ids)
    sandbox.set_faults(FaultPlan(kind=kind, next_n=1, contents=("record",)))
    assert client.export_frame(ids).equals(clean)


def test_changed_ids_are_the_records_changed_in_the_window(kap):
    client, _, clock = kap
    clock.now = dt.datetime(2026, 11, 5, 9, 0, 0)
    client.import_records([{"record_id": r, "redcap_event_name": "baseline_arm_1", "vs_sbp_1": "120"}
                           for r in ("0007", "0003")])
    clock.now = dt.datetime(2026, 11, 6, 9, 0, 0)
    client.import_records([{"record_id": "0005", "redcap_event_name": "screening_arm_1", "current_ad_name": "y"}])
    assert sorted(client.changed_ids(dt.datetime(2026, 11, 5))) == ["0003", "0005", "0007"]
    assert sorted(client.changed_ids(dt.datetime(2026, 11, 5), until=dt.datetime(2026, 11, 6))) == ["0003", "0007"]
    assert client.changed_ids(dt.datetime(2026, 11, 7)) == []
    assert client.changed_ids(dt.datetime(2026, 11, 5)) == client.record_ids(changed_since=dt.datetime(2026, 11, 5))
