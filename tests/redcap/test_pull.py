"""`redcap pull`: the KAP-TRD study in the sandbox, pulled through the real PyCap over HTTP (no mocks)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import polars as pl
import pytest
from kap_data import T0, client_for, intake_frame, rows_of
from sandbox_data import Clock

from trialkit.cli import main
from trialkit.definitions import load_study
from trialkit.errors import RedcapError
from trialkit.records.readers import read_pulled_folder, stringify
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.pull import MANIFEST, pull
from trialkit.redcap.sandbox import FaultPlan, ProjectSpec


@pytest.fixture(scope="module")
def study():
    from kap_data import ROOT

    return load_study(ROOT)


@pytest.fixture
def kap(sandbox, study):
    with clocked_project(sandbox, ProjectSpec.from_definition(study)) as (token, clock):
        client_for(sandbox, token, chunk_size=50).import_records(rows_of(intake_frame(40)))
        clock.now = T0 + dt.timedelta(hours=1)
        yield token, clock


@contextlib.contextmanager
def clocked_project(sandbox, spec: ProjectSpec):
    """A sandbox project whose server clock the test sets (starting at T0); dropped, faults and clock reset after."""
    clock = Clock()
    clock.now = T0
    sandbox.set_clock(clock)
    token = sandbox.create_project(spec)
    try:
        yield token, clock
    finally:
        sandbox.set_faults(None)
        sandbox.set_clock(None)
        sandbox.drop_project(token)


def full_export(client) -> pl.DataFrame:
    return client.export_frame()


def local_copy(out) -> pl.DataFrame:
    return stringify(read_pulled_folder(out))


def test_first_pull_writes_a_typed_table_per_instrument_that_reads_back_as_the_export(sandbox, kap, tmp_path):
    token, clock = kap
    client = client_for(sandbox, token)
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        result = pull(client, tmp_path / "copy", ledger=ledger, now=clock.now)
        runs = ledger.runs("pull")
    assert result.full and result.records == 40 and result.fetched == 40 and result.deleted == 0
    manifest = json.loads((tmp_path / "copy" / MANIFEST).read_text())
    assert manifest["ledger"]["run_id"] == result.run_id == runs[0]["id"] and runs[0]["status"] == "ok"
    assert manifest["pulled_at"] == clock.now.isoformat() and manifest["records"] == 40
    tables = {t["name"]: t for t in manifest["tables"]}
    assert tables["atrq"]["repeating"] and not tables["demographics"]["repeating"]
    atrq = pl.read_parquet(tmp_path / "copy" / tables["atrq"]["file"])
    assert set(atrq["redcap_repeat_instrument"]) == {"atrq"} and atrq["redcap_repeat_instance"].dtype == pl.Int64
    consent = pl.read_parquet(tmp_path / "copy" / tables["consent"]["file"])
    assert consent["screening_date"].dtype == pl.Date and consent["consent_complete"].dtype == pl.Int64
    assert consent["record_id"].dtype == pl.String  # ids such as 0001 keep their zeros
    # the instrument tables joined back are exactly REDCap's flat export, row for row
    assert local_copy(tmp_path / "copy").equals(full_export(client))


def test_incremental_pull_fetches_only_changes_drops_deleted_records_and_equals_a_full_pull(sandbox, kap, tmp_path):
    token, clock = kap
    client = client_for(sandbox, token)
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    first = pull(client, tmp_path / "copy", ledger=ledger, now=clock.now)

    clock.now = T0 + dt.timedelta(days=1)
    editor = client_for(sandbox, token)
    editor.import_records([{"record_id": "0003", "redcap_event_name": "screening_arm_1", "education_years": "17"},
                           {"record_id": "0007", "redcap_event_name": "screening_arm_1",
                            "redcap_repeat_instrument": "atrq", "redcap_repeat_instance": "9",
                            "atrq_drug": "sertraline"}])
    editor._project.delete_records(["0010"])
    clock.now += dt.timedelta(hours=1)
    again = client_for(sandbox, token)
    second = pull(again, tmp_path / "copy", ledger=ledger, now=clock.now)
    assert not second.full and second.fetched == 2 and second.deleted == 1 and second.records == 39
    assert local_copy(tmp_path / "copy").equals(full_export(client))
    # cost follows the change (here the data dictionary, read by every pull, is most of what is left)
    assert second.stats["bytes_received"] < first.stats["bytes_received"] * 0.75
    assert len(list((tmp_path / "copy").glob("data-*"))) == 1  # the previous copy is gone

    # the overlap is minutes: a change an hour before the last pull is not fetched again
    clock.now += dt.timedelta(hours=1)
    third = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    assert third.fetched == 0 and third.records == 39
    ledger.close()


def test_a_pull_that_fails_midway_keeps_the_previous_copy_and_a_rerun_completes(sandbox, kap, tmp_path):
    token, clock = kap
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    before = local_copy(tmp_path / "copy")
    clock.now = T0 + dt.timedelta(days=1)
    client_for(sandbox, token).import_records(
        [{"record_id": rid, "redcap_event_name": "screening_arm_1", "education_years": "11"}
         for rid in ("0001", "0002", "0004", "0005", "0006", "0008", "0009", "0011", "0012")])
    # the second chunk of the record export gets no reply, and the client does not retry
    sandbox.set_faults(FaultPlan(kind="drop", share=0.5, seed=3, contents=("record",)))
    with pytest.raises(RedcapError):
        pull(client_for(sandbox, token, chunk_size=2, attempts=1), tmp_path / "copy", ledger=ledger,
             now=clock.now + dt.timedelta(hours=1))
    sandbox.set_faults(None)
    assert local_copy(tmp_path / "copy").equals(before)
    assert ledger.runs("pull")[-1]["status"] == "failed"
    pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now + dt.timedelta(hours=2))
    assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))
    ledger.close()


def test_a_pull_killed_while_writing_keeps_the_previous_copy_and_a_rerun_completes(sandbox, kap, tmp_path):
    """SIGKILL once the new copy's first table is on disk, before the manifest switches to it: the previous copy
    is still the one read, whole; the rerun (the run left 'interrupted') brings the change, and no half-written
    folder stays."""
    import os
    import subprocess
    import sys

    from kap_data import ROOT

    from trialkit.redcap.pull import KILL_HOOK_ENV

    token, _ = kap
    env = {**os.environ, "REDCAP_API_TOKEN": token}
    command = [sys.executable, "-m", "trialkit", "redcap", "pull", "--url", sandbox.url,
               "--out", str(tmp_path / "copy"), "--study", str(ROOT), "--ledger", str(tmp_path / "ledger.sqlite"),
               "--full", "--format", "json"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    before = local_copy(tmp_path / "copy")
    client_for(sandbox, token).import_records(
        [{"record_id": "0003", "redcap_event_name": "screening_arm_1", "education_years": "19"}])
    killed = subprocess.run(command, env={**env, KILL_HOOK_ENV: "1"}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9
    assert local_copy(tmp_path / "copy").equals(before)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))
    assert not local_copy(tmp_path / "copy").equals(before)
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        assert [r["status"] for r in ledger.runs("pull")] == ["ok", "interrupted", "ok"]
    manifest = json.loads((tmp_path / "copy" / MANIFEST).read_text())
    folders = {p.name for p in (tmp_path / "copy").iterdir() if p.is_dir()}
    assert folders == {manifest["tables"][0]["file"].split("/")[0]}
    assert token not in killed.stdout + killed.stderr + rerun.stdout + rerun.stderr


def test_a_record_is_never_split_across_chunks(sandbox, kap, tmp_path):
    token, clock = kap
    client = client_for(sandbox, token, chunk_size=3)  # records have up to 7 rows each
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        pull(client, tmp_path / "copy", ledger=ledger, now=clock.now)
    copy = local_copy(tmp_path / "copy")
    assert copy.equals(full_export(client_for(sandbox, token, chunk_size=500)))
    assert copy.select(pl.struct(["record_id", "redcap_event_name", "redcap_repeat_instrument",
                                  "redcap_repeat_instance"]).is_unique().all()).item()


def test_screen_and_validate_read_the_pulled_folder(sandbox, kap, tmp_path, monkeypatch, capsys):
    from kap_data import ROOT

    token, clock = kap
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    csv_copy = tmp_path / "copy.csv"
    local_copy(tmp_path / "copy").write_csv(csv_copy)
    outputs = {}
    for source in (tmp_path / "copy", csv_copy):
        for command in (["validate", str(source), "--study", str(ROOT), "--as-of", "2026-11-01", "--format", "csv"],
                        ["screen", str(source), "--rules", str(ROOT / "eligibility_rules" / "kap_trd.yaml"),
                         "--as-of", "2026-11-01", "--format", "csv"]):
            with pytest.raises(SystemExit) as stop:
                main(command)
            outputs[(command[0], source.suffix)] = (stop.value.code, capsys.readouterr().out)
    # the folder gives what the same data as a CSV export gives
    assert outputs[("validate", "")] == outputs[("validate", ".csv")]
    assert outputs[("screen", "")] == outputs[("screen", ".csv")]
    assert "record_id" in outputs[("screen", "")][1]


def test_pull_cli_prints_a_json_summary_and_is_quiet_when_piped(sandbox, kap, tmp_path, monkeypatch, capsys):
    token, _ = kap
    monkeypatch.setenv("KAP_SANDBOX_TOKEN", token)
    (tmp_path / "trialkit.toml").write_text(
        f'[redcap.sandbox]\nurl = "{sandbox.url}"\ntoken_env = "KAP_SANDBOX_TOKEN"\nchunk_size = 9\n')
    with pytest.raises(SystemExit) as stop:
        main(["redcap", "pull", "--connection", "sandbox", "--out", str(tmp_path / "copy"), "--study", str(tmp_path),
              "--format", "json"])
    assert stop.value.code in (0, None)
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["records"] == 40 and summary["bytes"] > 0 and summary["failures"] == 0
    assert summary["calls"] == 4 + 5  # project, log of design changes, dictionary, id list, 40 records by 9
    assert captured.err == ""  # no progress line when stderr is not a terminal
    assert token not in captured.out


def test_progress_is_one_rewritten_line_on_a_terminal_only():
    import io

    from trialkit.redcap.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        report = Progress("pull", stream)
        report.update("chunk 1, 500/1000 records, 3 calls, 0 retries", force=True)
        report.done()
    assert tty.getvalue().startswith("\r") and "chunk 1, 500/1000 records" in tty.getvalue()
    assert pipe.getvalue() == ""


# -- what changed, from REDCap's log --------------------------------------------------------------------------------


def _edit(sandbox, token, clock, rows, delete=()):
    editor = client_for(sandbox, token)
    if rows:
        editor.import_records(rows)
    if delete:
        editor._project.delete_records(list(delete))


def test_an_incremental_pull_learns_deletions_from_the_log_not_from_the_whole_project(sandbox, kap, tmp_path):
    token, clock = kap
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    clock.now = T0 + dt.timedelta(days=1)
    # 0010 goes; 0012 goes and comes back with other data (REDCap logs both); 0003 changes
    _edit(sandbox, token, clock, [{"record_id": "0003", "redcap_event_name": "screening_arm_1",
                                   "education_years": "17"}], delete=["0010", "0012"])
    _edit(sandbox, token, clock, [{"record_id": "0012", "redcap_event_name": "screening_arm_1", "age_screening": "44"}])
    clock.now += dt.timedelta(hours=1)
    client = client_for(sandbox, token)
    second = pull(client, tmp_path / "copy", ledger=ledger, now=clock.now)
    assert not second.full and second.deletions_from == "log" and second.deleted == 1 and second.records == 39
    assert second.fetched == 2  # 0003 and the new 0012
    assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))
    # neither the whole id list nor the data dictionary was exported: nothing the size of the project
    assert "record id export" not in client.calls
    dictionary = client_for(sandbox, token)
    dictionary.metadata()
    assert second.stats["bytes_received"] < dictionary.stats.bytes_received
    ledger.close()


def test_a_design_change_in_the_log_makes_the_pull_export_the_dictionary_once(sandbox, kap, tmp_path):
    token, clock = kap
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    dictionary = client_for(sandbox, token)
    dictionary.metadata()
    # a design change (a new field) is in the log: the dictionary is exported again, and the copy follows it
    clock.now += dt.timedelta(hours=1)
    admin = client_for(sandbox, token)
    metadata = admin.metadata()
    at = next(i for i, r in enumerate(metadata) if r["field_name"] == "education_years")
    extra = {**metadata[at], "field_name": "shoe_size", "field_label": "Shoe size"}
    admin.import_metadata([*metadata[: at + 1], extra, *metadata[at + 1:]])
    admin.import_records([{"record_id": "0005", "redcap_event_name": "screening_arm_1", "shoe_size": "9"}])
    clock.now += dt.timedelta(minutes=5)
    third = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    assert third.full and "shoe_size" in local_copy(tmp_path / "copy").columns
    assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))
    # the next window still holds that design change (10 minutes' overlap): the copy already reflects it
    clock.now += dt.timedelta(minutes=1)
    fourth = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    assert not fourth.full and fourth.stats["bytes_received"] < dictionary.stats.bytes_received
    ledger.close()


def test_a_pull_without_the_logging_right_finds_deletions_with_the_id_list_and_says_so(sandbox, study, tmp_path):
    with clocked_project(sandbox, ProjectSpec.from_definition(study, user_logging=False)) as (token, clock):
        client_for(sandbox, token, chunk_size=50).import_records(rows_of(intake_frame(12)))
        with DataLedger(tmp_path / "ledger.sqlite") as ledger:
            pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
            _delete_an_hour_later(sandbox, token, clock, "0004")
            second = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
        assert second.deleted == 1 and second.deletions_from == "id list"
        assert "Logging" in second.to_dict()["log_note"]
        assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))


def _delete_an_hour_later(sandbox, token, clock, record):
    """Delete `record` in REDCap an hour after the last pull, and move the clock an hour on for the next one."""
    clock.now += dt.timedelta(hours=1)
    _edit(sandbox, token, clock, [], delete=[record])
    clock.now += dt.timedelta(hours=1)


def test_a_user_in_a_data_access_group_gets_deletions_from_the_id_list(sandbox, study, tmp_path):
    from trialkit.redcap.sandbox.project import dag_rows

    with clocked_project(sandbox, ProjectSpec.from_definition(study, dags=dag_rows(["Site A"]))) as (token, clock):
        rows = [{**r, "redcap_data_access_group": "site_a"} for r in rows_of(intake_frame(12))]
        client_for(sandbox, token, chunk_size=50).import_records(rows)
        with DataLedger(tmp_path / "ledger.sqlite") as ledger:
            pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
            _delete_an_hour_later(sandbox, token, clock, "0004")
            # a user in no group sees REDCap's group column, so the whole log
            second = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
            assert second.deleted == 1 and second.deletions_from == "log"
            client_for(sandbox, token)._project.switch_dag("site_a")
            _delete_an_hour_later(sandbox, token, clock, "0005")
            third = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
        assert third.deleted == 1 and third.deletions_from == "id list"
        assert "data access group" in third.to_dict()["log_note"]
        assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))


def test_a_deletion_before_a_failed_pull_is_still_found_by_the_rerun(sandbox, kap, tmp_path):
    token, clock = kap
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now)
    clock.now = T0 + dt.timedelta(days=1)
    _edit(sandbox, token, clock, [{"record_id": rid, "redcap_event_name": "screening_arm_1", "education_years": "11"}
                                  for rid in ("0001", "0002", "0004", "0005", "0006")], delete=["0010"])
    # the changed-record export gets no reply, and the client does not retry: the pull fails, its copy stays
    sandbox.set_faults(FaultPlan(kind="drop", share=1.0, seed=3, contents=("record",)))
    with pytest.raises(RedcapError):
        pull(client_for(sandbox, token, attempts=1), tmp_path / "copy", ledger=ledger,
             now=clock.now + dt.timedelta(hours=1))
    sandbox.set_faults(None)
    # the rerun's window starts at the last pull that finished, so the log still holds the deletion
    rerun = pull(client_for(sandbox, token), tmp_path / "copy", ledger=ledger, now=clock.now + dt.timedelta(days=1))
    assert rerun.deletions_from == "log" and rerun.deleted == 1 and rerun.fetched == 5
    assert local_copy(tmp_path / "copy").equals(full_export(client_for(sandbox, token)))
    ledger.close()


def test_a_pull_into_a_folder_with_other_files_leaves_them_alone(sandbox, kap, tmp_path):
    token, clock = kap
    out = tmp_path / "copy"
    # the user's own folders whose names start like the pull's: not the pull's to clear
    for name in ("data-exports", "data-2", "data-1"):
        (out / name).mkdir(parents=True)
        (out / name / "notes.csv").write_text("precious\n")
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        first = pull(client_for(sandbox, token), out, ledger=ledger, now=clock.now)
        clock.now += dt.timedelta(hours=1)
        pull(client_for(sandbox, token), out, ledger=ledger, now=clock.now)
    assert first.run_id == 1
    for name in ("data-exports", "data-2", "data-1"):
        assert (out / name / "notes.csv").read_text() == "precious\n"
    assert local_copy(out).equals(full_export(client_for(sandbox, token)))
