"""`redcap push`: intake into the KAP-TRD project in the sandbox, through the real PyCap over HTTP (no mocks).

"Exactly as intended" is checked on REDCap's own export: every non-blank cell of the valid records' data is
there, no other record exists, and every cell that was there before and is not meant to change still is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import polars as pl
import pytest
from kap_data import ROOT, T0, cells, client_for, intake_frame
from sandbox_data import Clock

from trialkit.definitions import load_study
from trialkit.errors import DataError, RedcapError
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.push import KILL_HOOK_ENV, push
from trialkit.redcap.sandbox import FaultPlan, ProjectSpec

AS_OF = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def study():
    return load_study(ROOT)


@pytest.fixture(scope="module")
def sendable(study) -> list[str]:
    """The data columns REDCap stores as sent (calculated fields are REDCap's own)."""
    calc = {name for name, f in study.fields.items() if f.type.value in ("calc", "file", "descriptive")}
    return [c for c in intake_frame(1).columns if c.split("___")[0] not in calc]


def make_project(sandbox, study, *, autonumber: bool = False, metadata=None) -> str:
    spec = ProjectSpec.from_definition(study)
    if autonumber:
        spec = spec.with_(record_autonumbering=True)
    if metadata is not None:
        spec = spec.with_(metadata=metadata(spec.metadata))
    return sandbox.create_project(spec)


@pytest.fixture
def kap(sandbox, study):
    clock = Clock()
    clock.now = T0
    sandbox.set_clock(clock)
    token = make_project(sandbox, study)
    yield token, clock
    sandbox.set_faults(None)
    sandbox.set_clock(None)
    sandbox.drop_project(token)


def run(sandbox, token, data, study, ledger, clock, **kwargs):
    clock.now += dt.timedelta(minutes=1)
    client = kwargs.pop("client", None) or client_for(sandbox, token)
    # the sandbox's clock stands still during a run: the read-back is a second after the writes
    return push(client, data, study, ledger=ledger, now=clock.now, as_of=AS_OF,
                clock=lambda: clock.now + dt.timedelta(seconds=1), **kwargs)


def stored(sandbox, token) -> pl.DataFrame:
    return client_for(sandbox, token, chunk_size=500).export_frame()


def valid_part(frame: pl.DataFrame, result) -> pl.DataFrame:
    bad = result.findings.records_with_errors().to_list()
    return frame.filter(~pl.col("record_id").is_in(pl.Series(bad, dtype=pl.String).implode()))


def test_valid_records_go_through_invalid_ones_are_findings_and_a_rerun_sends_nothing(sandbox, kap, study,
                                                                                      sendable, tmp_path):
    token, clock = kap
    data = intake_frame(25)
    data.write_csv(tmp_path / "intake.csv")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    first = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)
    assert first.invalid >= 1 and first.findings.errors > 0
    good = valid_part(data, first)
    assert first.changed_records == good["record_id"].n_unique() == first.records - first.invalid
    after = stored(sandbox, token)
    assert set(after["record_id"]) == set(good["record_id"])  # invalid records were not sent
    assert cells(good, sendable) <= cells(after)
    assert not first.rejected and not first.unverified and first.failures == first.invalid

    second = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)
    assert second.changed_records == 0 and second.cells_set == 0
    assert second.imports == 0
    assert stored(sandbox, token).equals(after)
    assert [r["status"] for r in ledger.runs("push")] == ["ok", "ok"]
    ledger.close()


def test_records_redcap_did_not_hold_are_counted_as_new(sandbox, kap, study, tmp_path):
    # the summary said "0 new record(s)" for a first push into an empty project under the data's own ids
    token, clock = kap
    path = tmp_path / "intake.csv"
    intake_frame(6).write_csv(path)
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    dry = run(sandbox, token, path, study, ledger, clock, dry_run=True)
    first = run(sandbox, token, path, study, ledger, clock)
    sent = first.records - first.invalid
    assert sent >= 1 and dry.created == first.created == sent
    assert first.to_dict()["created"] == sent
    again = run(sandbox, token, path, study, ledger, clock)
    assert again.created == 0
    ledger.close()


def test_only_changed_cells_are_sent_and_blanks_clear_only_when_asked(sandbox, kap, study, sendable, tmp_path):
    token, clock = kap
    data = intake_frame(6).filter(pl.col("record_id") != "0005")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    run(sandbox, token, data.write_csv(tmp_path / "a.csv") or tmp_path / "a.csv", study, ledger, clock)
    # a coordinator types a note that is not in the intake file at all
    client_for(sandbox, token).import_records(
        [{"record_id": "0001", "redcap_event_name": "screening_arm_1", "consent_version": "v2-coordinator"}])
    screening = (pl.col("record_id") == "0002") & (pl.col("redcap_event_name") == "screening_arm_1") \
        & pl.col("redcap_repeat_instrument").is_null()
    edited = data.with_columns(
        pl.when(screening).then(pl.lit("19")).otherwise(pl.col("education_years")).alias("education_years"),
        pl.when(screening).then(None).otherwise(pl.col("phone")).alias("phone"),
    ).drop("consent_version")
    edited.write_csv(tmp_path / "b.csv")
    before = stored(sandbox, token)
    held_phone = before.filter(screening)["phone"].item()
    assert held_phone  # a value REDCap holds and the new file leaves blank

    plain = run(sandbox, token, tmp_path / "b.csv", study, ledger, clock)
    assert (plain.cells_set, plain.cells_cleared, plain.imports) == (1, 0, 1)
    now = stored(sandbox, token)
    assert now.filter(screening)["education_years"].item() == "19"
    assert now.filter(screening)["phone"].item() == held_phone  # a blank is not a clear
    assert now.filter(pl.col("record_id") == "0001")["consent_version"].drop_nulls().to_list() == ["v2-coordinator"]

    dry = run(sandbox, token, tmp_path / "b.csv", study, ledger, clock, clear_blanks=True, dry_run=True)
    assert dry.cells_cleared == 1 and stored(sandbox, token).equals(now)  # a dry run sends nothing

    cleared = run(sandbox, token, tmp_path / "b.csv", study, ledger, clock, clear_blanks=True)
    assert (cleared.cells_set, cleared.cells_cleared) == (0, 1)
    final = stored(sandbox, token)
    assert final.filter(screening)["phone"].item() is None
    # no stray blank: every other cell is as it was, the coordinator's note included
    assert cells(final) == cells(now) - {c for c in cells(now) if c[0] == "0002" and c[4] == "phone"}
    ledger.close()


def test_a_rejected_batch_is_split_until_the_bad_records_are_isolated(sandbox, study, sendable, tmp_path):
    # REDCap's project lacks a choice of atrq_drug that the study allows (a design that drifted)
    def drop_other(metadata):
        out = []
        for row in metadata:
            row = dict(row)
            if row["field_name"] == "atrq_drug":
                row["select_choices_or_calculations"] = " | ".join(
                    p.strip() for p in row["select_choices_or_calculations"].split("|")
                    if not p.strip().startswith("venlafaxine,"))
            out.append(row)
        return tuple(out)

    token = make_project(sandbox, study, metadata=drop_other)
    clock = Clock()
    clock.now = T0
    data = intake_frame(30)
    other = data.filter(pl.col("atrq_drug") == "venlafaxine")["record_id"].unique().to_list()
    assert other  # the example has such records
    try:
        with DataLedger(tmp_path / "ledger.sqlite") as ledger:
            data.write_csv(tmp_path / "intake.csv")
            result = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock,
                         client=client_for(sandbox, token, chunk_size=8))
        good = valid_part(data, result)
        rejected = {r.record for r in result.rejected}
        assert rejected == set(other) & set(good["record_id"])
        assert {r.field for r in result.rejected} == {"atrq_drug"}
        assert all("venlafaxine" not in r.message for r in result.rejected)  # no value quoted
        after = stored(sandbox, token)
        kept = good.filter(~pl.col("record_id").is_in(list(rejected)))
        assert set(after["record_id"]) == set(kept["record_id"])
        assert cells(kept, sendable) <= cells(after)
    finally:
        sandbox.drop_project(token)


def test_auto_numbering_makes_each_record_once_even_when_replies_are_lost(sandbox, study, sendable, tmp_path):
    token = make_project(sandbox, study, autonumber=True)
    clock = Clock()
    clock.now = T0
    data = intake_frame(12)
    data.write_csv(tmp_path / "intake.csv")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    try:
        # imports are committed but their replies are lost, and nothing is retried: runs die part-way through
        sandbox.set_faults(FaultPlan(kind="drop_after", share=0.4, seed=11, contents=("record",)))
        failures = 0
        for _ in range(4):
            try:
                run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, auto_number=True,
                    client=client_for(sandbox, token, chunk_size=2, attempts=1))
            except RedcapError:
                failures += 1
        sandbox.set_faults(None)
        assert failures
        final = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, auto_number=True)
        good = valid_part(data, final)
        id_map = ledger.id_map()
        assert {s for s, (_, state) in id_map.items() if state == "created"} == set(good["record_id"])
        after = stored(sandbox, token)
        assert after["record_id"].n_unique() == good["record_id"].n_unique()  # no duplicate record
        renamed = good.with_columns(pl.col("record_id").replace_strict({s: r for s, (r, _) in id_map.items()}))
        assert cells(renamed, sendable) <= cells(after)
        assert final.changed_records == 0 or not final.failures - final.invalid
        again = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, auto_number=True)
        assert again.created == 0 and stored(sandbox, token).equals(after)
    finally:
        ledger.close()
        sandbox.set_faults(None)
        sandbox.drop_project(token)


@pytest.mark.parametrize("kill_after", [1, 3])
def test_a_push_killed_mid_run_and_rerun_leaves_redcap_exactly_as_intended(sandbox, study, sendable, tmp_path,
                                                                          kill_after):
    token = make_project(sandbox, study, autonumber=True)
    data = intake_frame(20)  # record 0019 has validation errors
    data.write_csv(tmp_path / "intake.csv")
    env = {**os.environ, "REDCAP_API_TOKEN": token}
    command = [sys.executable, "-m", "trialkit", "redcap", "push", str(tmp_path / "intake.csv"), "--url",
               sandbox.url, "--study", str(ROOT), "--ledger", str(tmp_path / "ledger.sqlite"), "--chunk-size", "4",
               "--auto-number", "--as-of", AS_OF.isoformat(), "--format", "json"]
    try:
        killed = subprocess.run(command, env={**env, KILL_HOOK_ENV: str(kill_after)}, capture_output=True,
                                text=True, timeout=120)
        assert killed.returncode == -9  # SIGKILL right after an import call returned
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        summary = json.loads(rerun.stdout)
        assert rerun.returncode == 1 and summary["failures"] == summary["invalid_records"] > 0
        with DataLedger(tmp_path / "ledger.sqlite") as ledger:
            id_map = ledger.id_map()
            runs = ledger.runs("push")
        assert [r["status"] for r in runs] == ["interrupted", "ok"]
        after = stored(sandbox, token)
        valid = after["record_id"].n_unique()
        assert valid == len(id_map) == summary["records"] - summary["invalid_records"]  # nothing twice
        assert {state for _, state in id_map.values()} == {"created"}
        good = data.filter(pl.col("record_id").is_in(list(id_map)))
        renamed = good.with_columns(pl.col("record_id").replace_strict({s: r for s, (r, _) in id_map.items()}))
        assert cells(renamed, sendable) <= cells(after)  # nothing lost
        assert token not in rerun.stdout + rerun.stderr + killed.stdout + killed.stderr
    finally:
        sandbox.drop_project(token)


def test_a_rerun_compares_only_records_changed_in_the_data_or_in_redcap(sandbox, kap, study, tmp_path):
    token, clock = kap
    data = intake_frame(20).filter(pl.col("record_id") != "0019")
    data.write_csv(tmp_path / "a.csv")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    same_clock = dt.timedelta(0)  # the sandbox and the test share one clock: no skew to allow for
    first = run(sandbox, token, tmp_path / "a.csv", study, ledger, clock, overlap=same_clock)
    assert first.compared == 19
    clock.now += dt.timedelta(hours=1)  # beyond the overlap
    screening = (pl.col("redcap_event_name") == "screening_arm_1") & pl.col("redcap_repeat_instrument").is_null()
    data.with_columns(pl.when(screening & (pl.col("record_id") == "0004")).then(pl.lit("12"))
                      .otherwise(pl.col("education_years")).alias("education_years")).write_csv(tmp_path / "b.csv")
    # and a coordinator changes a value of another record in REDCap
    client_for(sandbox, token).import_records(
        [{"record_id": "0008", "redcap_event_name": "screening_arm_1", "education_years": "3"}])
    clock.now += dt.timedelta(hours=1)
    second = run(sandbox, token, tmp_path / "b.csv", study, ledger, clock, overlap=same_clock)
    assert second.compared == 2 and second.cells_set == 2  # 0004 from the data, 0008 set back to the data
    held = stored(sandbox, token).filter(screening).select("record_id", "education_years")
    assert dict(held.iter_rows())["0008"] == data.filter(screening & (pl.col("record_id") == "0008"))[
        "education_years"].item()
    clock.now += dt.timedelta(hours=1)
    third = run(sandbox, token, tmp_path / "b.csv", study, ledger, clock, overlap=same_clock)
    assert third.compared == 0 and third.imports == 0
    # and costs five small calls: project information, the data dictionary (once), the ids changed in REDCap, the
    # group list and the deletion log (a record deleted in REDCap is not in the changed export)
    assert third.stats["calls"] == 5
    ledger.close()


@pytest.mark.parametrize("groups", [False, True])
def test_a_record_deleted_in_redcap_is_written_again_from_the_data(sandbox, kap, study, sendable, tmp_path, groups):
    """Pushed, unchanged in the data, then deleted in REDCap: the next push finds it gone (from the deletion log;
    with data access groups, where a group user's log is partial, from the id list) and writes it again."""
    token, clock = kap
    editor = client_for(sandbox, token)
    if groups:
        editor._project.import_dags([{"data_access_group_name": "Site A", "unique_group_name": ""}])
    data = intake_frame(12)
    data.write_csv(tmp_path / "intake.csv")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    first = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, overlap=dt.timedelta(0))
    good = valid_part(data, first)
    before = stored(sandbox, token)
    gone, back = sorted(set(good["record_id"]))[:2]
    clock.now += dt.timedelta(hours=1)
    editor._project.delete_records([gone, back])
    # one of them is deleted, then created again in REDCap (with other data): it is there, not deleted
    editor.import_records([{"record_id": back, "redcap_event_name": "screening_arm_1", "education_years": "3"}])
    clock.now += dt.timedelta(hours=1)
    second = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, overlap=dt.timedelta(0))
    assert second.deleted_in_redcap == 1 and second.recreated == 1
    assert second.to_dict()["recreated"] == 1 and not second.failures
    after = stored(sandbox, token)
    assert cells(before.filter(pl.col("record_id") == gone)) == cells(after.filter(pl.col("record_id") == gone))
    assert cells(good, sendable) <= cells(after)  # the re-created record and the rest of the data
    third = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock, overlap=dt.timedelta(0))
    assert third.deleted_in_redcap == 0 and third.compared == 0 and third.imports == 0
    ledger.close()


def test_push_cli_dry_run_lists_changes_without_identifier_values_and_sends_nothing(sandbox, kap, tmp_path,
                                                                                   monkeypatch, capsys):
    from trialkit.cli import main

    token, _ = kap
    data = intake_frame(3)
    data.write_csv(tmp_path / "intake.csv")
    monkeypatch.setenv("REDCAP_API_TOKEN", token)
    base = ["redcap", "push", str(tmp_path / "intake.csv"), "--url", sandbox.url, "--study", str(ROOT),
            "--ledger", str(tmp_path / "ledger.sqlite"), "--as-of", AS_OF.isoformat()]
    with pytest.raises(SystemExit) as stop:
        main([*base, "--dry-run"])
    out = capsys.readouterr().out
    assert stop.value.code in (0, None)
    assert "record 0001 screening_arm_1: education_years" in out
    for identifier in ("email", "phone", "last_name"):
        value = data.filter(pl.col(identifier).is_not_null())[identifier][0]
        assert f"{identifier} (identifier: value not shown)" in out and value not in out
    assert stored(sandbox, token).height == 0

    with pytest.raises(SystemExit) as stop:
        main([*base, "--format", "json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert stop.value.code in (0, None) and summary["failures"] == 0 and summary["changed_records"] == 3
    assert {"calls", "bytes", "records", "seconds", "failures"} <= set(summary)
    assert captured.err == "" and token not in captured.out
    assert stored(sandbox, token)["record_id"].n_unique() == 3


def test_a_whole_number_in_a_one_decimal_field_is_sent_as_redcap_imports_it(sandbox, kap, study, tmp_path):
    # validation accepts 175 in a number_1dp field (REDCap's data entry does); REDCap's API import refuses it
    token, clock = kap
    data = intake_frame(1)
    height = pl.col("vs_height_cm")
    assert data.filter(height.is_not_null()).height
    data = data.with_columns(pl.when(height.is_not_null()).then(pl.lit("175")).otherwise(height).alias("vs_height_cm"),
                             pl.lit(None, pl.String).alias("vs_bmi"))  # REDCap's to compute
    data.write_csv(tmp_path / "intake.csv")
    ledger = DataLedger(tmp_path / "ledger.sqlite")
    first = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)
    assert not first.rejected and not first.unverified and first.invalid == 0
    assert set(stored(sandbox, token)["vs_height_cm"].drop_nulls()) == {"175.0"}
    again = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)
    assert again.cells_set == 0 and again.imports == 0
    ledger.close()


def test_push_reads_standard_input_for_dash(sandbox, kap, study, tmp_path, monkeypatch):
    import io
    import sys

    token, clock = kap
    data = intake_frame(1)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.write_csv().encode()), encoding="utf-8"))
    with DataLedger(tmp_path / "ledger.sqlite") as ledger:
        result = run(sandbox, token, "-", study, ledger, clock)
    assert result.records == 1 and result.changed_records == 1 - result.invalid
    assert set(stored(sandbox, token)["record_id"]) == set(valid_part(data, result)["record_id"])


def test_a_header_only_file_is_a_data_error_and_nothing_is_sent(sandbox, kap, study, tmp_path):
    # docs/cli.md: a data file with no records is exit 1 in redcap push too; it said "0 record(s)" and passed
    token, clock = kap
    path = tmp_path / "header.csv"
    intake_frame(1).head(0).write_csv(path)
    with DataLedger(tmp_path / "ledger.sqlite") as ledger, pytest.raises(DataError) as info:
        run(sandbox, token, path, study, ledger, clock)
    assert info.value.location is not None and info.value.location.file == str(path)
    assert "no data rows" in info.value.message


def test_a_stopped_push_is_recorded_as_stopped_and_runs_lists_the_data_ledger(sandbox, kap, study, tmp_path,
                                                                              capsys):
    from trialkit.cli import main

    token, clock = kap
    intake_frame(3).write_csv(tmp_path / "intake.csv")
    path = tmp_path / "ledger.sqlite"
    with DataLedger(path) as ledger:
        first = run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)

        stops = [KeyboardInterrupt]

        def stopped() -> dt.datetime:  # Ctrl-C (or the SIGTERM handler's SystemExit) during the read-back
            if stops:
                raise stops.pop()
            return clock.now + dt.timedelta(seconds=5)

        clock.now += dt.timedelta(minutes=1)
        intake_frame(5).write_csv(tmp_path / "more.csv")  # records to write, so the push reads them back
        with pytest.raises(KeyboardInterrupt):
            push(client_for(sandbox, token), tmp_path / "more.csv", study, ledger=ledger, now=clock.now,
                 as_of=AS_OF, clock=stopped, clear_blanks=True)
        runs = ledger.runs("push")
    assert [(r["status"], r["message"]) for r in runs][1] == ("failed", "stopped (interrupt or termination signal)")
    # when each run ended, not when it started
    assert runs[0]["finished_at"] > runs[0]["started_at"] and runs[1]["finished_at"] > runs[1]["started_at"]

    # `redcap runs` reads the pull/push ledger too: kind, status, records and what was written
    with pytest.raises(SystemExit) as exit_:
        main(["redcap", "runs", "--ledger", str(path)])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    rows = out.splitlines()
    assert rows[0].split()[:5] == ["run", "kind", "started", "ended", "status"]
    assert [r.split()[1:2] + r.split()[4:5] for r in rows[1:]] == [["push", "ok"], ["push", "failed"]]
    assert rows[1].split()[5:7] == [str(first.records), str(first.changed_records)]
    with pytest.raises(SystemExit):
        main(["redcap", "runs", "--ledger", str(path), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["status"]) for r in doc["runs"]] == [("push", "ok"), ("push", "failed")]
    assert doc["runs"][0]["summary"]["changed_records"] == first.changed_records


def test_a_column_that_is_no_field_of_the_study_stops_the_push_before_anything_is_sent(sandbox, kap, study,
                                                                                        tmp_path, capsys,
                                                                                        monkeypatch):
    from trialkit.cli import main

    token, clock = kap
    data = intake_frame(3)
    # a misspelt column: its values would be dropped silently while the push said "ok"
    data.rename({"madrs_1": "madrs_l"}).write_csv(tmp_path / "intake.csv")
    with DataLedger(tmp_path / "ledger.sqlite") as ledger, pytest.raises(DataError) as err:
        run(sandbox, token, tmp_path / "intake.csv", study, ledger, clock)
    assert "madrs_l" in err.value.message and "nothing sent" in err.value.message
    assert stored(sandbox, token).is_empty()

    monkeypatch.setenv("KAP_TOKEN_X", token)
    with pytest.raises(SystemExit) as exit_:
        main(["redcap", "push", str(tmp_path / "intake.csv"), "--url", sandbox.url, "--token-env", "KAP_TOKEN_X",
              "--study", str(ROOT), "--ledger", str(tmp_path / "l2.sqlite")])
    err_text = capsys.readouterr().err
    assert exit_.value.code == 1 and "madrs_l" in err_text and "Traceback" not in err_text
    assert stored(sandbox, token).is_empty()


def test_a_findings_file_that_cannot_be_written_is_a_usage_error_before_anything_is_sent(sandbox, kap, tmp_path,
                                                                                         monkeypatch, capsys):
    from trialkit.cli import main

    token, _ = kap
    intake_frame(3).write_csv(tmp_path / "intake.csv")
    monkeypatch.setenv("REDCAP_API_TOKEN", token)
    with pytest.raises(SystemExit) as stop:
        main(["redcap", "push", str(tmp_path / "intake.csv"), "--url", sandbox.url, "--study", str(ROOT),
              "--ledger", str(tmp_path / "ledger.sqlite"), "--findings", str(tmp_path / "none" / "f.csv")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "cannot write" in err and "Traceback" not in err, err
    assert stored(sandbox, token).height == 0  # nothing attempted
