"""`trialkit redcap push-definitions`: plan, refusal of data loss, ordered application, verification,
idempotence, and production status (draft-mode files instead of imports). Real PyCap over HTTP to the sandbox."""

from __future__ import annotations

from dataclasses import replace

import pytest
from definitions_data import ROOT, classic_study, edit_field, new_project, run_cli
from redcap import RedcapError as PyCapError

from trialkit.definitions import load_study
from trialkit.definitions.dictionary import import_dictionary, metadata_rows
from trialkit.definitions.model import Choice, Event, Field, FieldType, Instrument
from trialkit.errors import UsageError
from trialkit.redcap.definitions.diff import diff_definitions
from trialkit.redcap.definitions.project import fetch, from_study
from trialkit.redcap.definitions.push import push_definitions
from trialkit.redcap.sandbox.api import PRODUCTION_REFUSAL


@pytest.fixture(scope="module")
def kap_study():
    return load_study(ROOT)


def imports(calls: list[str]) -> list[str]:
    return [c for c in calls if "import" in c or "delete" in c]


def grown(study):
    """KAP-TRD with a new instrument on a new event (and repeating there), a new field and a new choice: every
    kind of object, so the order of imports matters (events before mappings, forms before mappings)."""
    diary = Instrument(name="side_effects", label="Side effects", fields=(
        Field(name="se_date", type=FieldType.TEXT, form="side_effects", label="Date", validation="date_ymd"),
        Field(name="se_nausea", type=FieldType.YESNO, form="side_effects", label="Nausea"),
    ))
    study = replace(study, instruments=(*study.instruments, diary))
    study = edit_field(study, "phq9_1", label="Little interest or pleasure in doing things (past 2 weeks)")
    arm = study.arms[0]
    event = Event(name="safety_call_arm_1", label="Safety call", arm=1, instruments=("side_effects",),
                  repeating=("side_effects",))
    return replace(study, arms=(replace(arm, events=(*arm.events, event)),))


def test_push_applies_in_order_verifies_and_a_second_push_sends_nothing(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study)
    try:
        local = from_study(grown(kap_study))
        planned = push_definitions(client, local, apply=False)
        assert planned.status == "planned" and not imports(client.calls)
        result = push_definitions(client, local, apply=True)
        assert result.status == "applied"
        assert imports(client.calls) == ["event import", "metadata import", "form-event mapping import",
                                         "repeating set-up import"]
        assert diff_definitions(local, fetch(client)).empty
        client.calls.clear()
        again = push_definitions(client, local, apply=True)
        assert again.status == "unchanged" and imports(client.calls) == []
    finally:
        sandbox.drop_project(token)


def test_removing_an_event_deletes_it_last_and_only_with_permission_when_it_holds_data(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study)
    try:
        client.import_records([{"record_id": "7", "redcap_event_name": "followup_6m_arm_1", "phq9_1": "2"}])
        client.calls.clear()
        arm = kap_study.arms[0]
        local = from_study(replace(kap_study, arms=(replace(arm, events=arm.events[:-1]),)))
        refused = push_definitions(client, local, apply=True)
        assert refused.status == "refused"
        (change,) = refused.diff.data_loss
        assert (change.target, change.records) == ("followup_6m_arm_1", 1)
        assert imports(client.calls) == []
        result = push_definitions(client, local, apply=True, allow_data_loss=True)
        assert result.status == "applied"
        assert imports(client.calls) == ["event delete"]
        assert "followup_6m_arm_1" not in {e["unique_event_name"] for e in client.events()}
    finally:
        sandbox.drop_project(token)


def test_a_critical_change_without_data_goes_through_with_yes(sandbox):
    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records([{"record_id": "1", "sex": "1"}])
        client.calls.clear()
        local = from_study(edit_field(base, "sex", choices=(Choice("1", "Female"), Choice("2", "Male"))))
        result = push_definitions(client, local, apply=True)
        assert result.status == "applied"  # nobody holds code 3
        assert imports(client.calls) == ["metadata import"]
        assert client.export_records(fields=["record_id", "sex"])[0]["sex"] == "1"
    finally:
        sandbox.drop_project(token)


def test_deleting_a_field_that_holds_data_needs_allow_data_loss(sandbox):
    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records([{"record_id": "1", "cigs_day": "10", "smoker": "1"}])
        local = from_study(edit_field(base, "cigs_day", remove=True))
        assert push_definitions(client, local, apply=True).status == "refused"
        assert "cigs_day" in fetch(client).fields
        assert push_definitions(client, local, apply=True, allow_data_loss=True).status == "applied"
        assert "cigs_day" not in fetch(client).fields
    finally:
        sandbox.drop_project(token)


def test_the_sandbox_in_production_refuses_dictionary_arm_and_event_imports(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study, in_production=True)
    try:
        assert client.project_info()["in_production"] == 1
        project = sandbox.project(token)
        rows = project.export_metadata()
        for call in (lambda: project.import_metadata(rows), lambda: project.import_arms([{"arm_num": 1, "name": "A"}]),
                     lambda: project.import_events([{"event_name": "X", "arm_num": 1}]),
                     lambda: project.delete_events(["followup_6m_arm_1"])):
            with pytest.raises(PyCapError) as info:
                call()
            assert PRODUCTION_REFUSAL.split(":")[0] in str(info.value)
        assert fetch(client).metadata == tuple(rows)
        assert project.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1"}]) == {"count": 1}
    finally:
        sandbox.drop_project(token)


def test_push_to_a_production_project_writes_the_draft_files_and_sends_nothing(sandbox, tmp_path):
    base = classic_study()
    token, client = new_project(sandbox, base, in_production=True)
    try:
        study = edit_field(base, "age", label="Age (years)")
        result = push_definitions(client, from_study(study), apply=True, draft_dir=tmp_path / "draft")
        assert result.status == "draft"
        assert imports(client.calls) == []
        csv_text = (tmp_path / "draft" / "data_dictionary.csv").read_text(encoding="utf-8")
        assert metadata_rows(import_dictionary(csv_text)) == metadata_rows(study)
        assert "age: label changed" in (tmp_path / "draft" / "change_report.txt").read_text(encoding="utf-8")
    finally:
        sandbox.drop_project(token)


def test_a_new_event_whose_name_redcap_would_not_give_is_refused_before_anything_is_sent(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study)
    try:
        arm = kap_study.arms[0]
        event = Event(name="call_arm_1", label="Safety call", arm=1, instruments=("phq9",))
        local = from_study(replace(kap_study, arms=(replace(arm, events=(*arm.events, event)),)))
        with pytest.raises(UsageError, match="safety_call_arm_1"):
            push_definitions(client, local, apply=True)
        assert imports(client.calls) == []
    finally:
        sandbox.drop_project(token)


def test_push_cli_plan_yes_and_exit_status(sandbox, tmp_path, capsys, monkeypatch):
    from trialkit.definitions.yamlwrite import write_study

    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        write_study(edit_field(base, "age", note="whole years"), tmp_path)
        monkeypatch.setenv("REDCAP_API_TOKEN", token)
        args = ["redcap", "push-definitions", "--url", sandbox.url, "--study", str(tmp_path)]
        code, out, err = run_cli(args, capsys)
        assert code == 1 and "age: note changed" in out and "--yes" in err
        assert fetch(client).fields["age"]["field_note"] == "years"
        code, out, err = run_cli([*args, "--yes"], capsys)
        assert code == 0, err
        assert "verified: the project now matches the study" in out
        assert fetch(client).fields["age"]["field_note"] == "whole years"
        code, out, _ = run_cli([*args, "--yes"], capsys)
        assert (code, out) == (0, "no differences: the project matches the study\n")
        assert token not in out
    finally:
        sandbox.drop_project(token)


def test_a_new_arm_is_pushed_and_removing_it_counts_only_its_own_data(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study)
    try:
        waitlist = replace(kap_study.arms[0], number=2, name="Waitlist", events=(
            Event(name="screening_arm_2", label="Screening", arm=2, instruments=("consent", "phq9")),
            Event(name="week_4_arm_2", label="Week 4", arm=2, instruments=("phq9",)),
        ))
        two_arms = replace(kap_study, arms=(kap_study.arms[0], waitlist))
        result = push_definitions(client, from_study(two_arms), apply=True)
        assert result.status == "applied"
        assert imports(client.calls) == ["arm import", "event import", "form-event mapping import"]
        client.import_records([
            {"record_id": "1", "redcap_event_name": "baseline_arm_1", "phq9_1": "1"},
            {"record_id": "2", "redcap_event_name": "week_4_arm_2", "phq9_1": "2"},
        ])
        client.calls.clear()
        refused = push_definitions(client, from_study(kap_study), apply=True)
        assert refused.status == "refused"
        (change,) = refused.diff.data_loss
        assert (change.area, change.target, change.records) == ("arm", "2", 1)  # record 1's phq9 is in arm 1
        assert push_definitions(client, from_study(kap_study), apply=True, allow_data_loss=True).status == "applied"
        assert imports(client.calls) == ["arm delete"]
        assert [a["arm_num"] for a in client.arms()] == [1]
    finally:
        sandbox.drop_project(token)


def test_sandbox_serve_sets_the_project_status_at_start_up(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from redcap import Project

    token = "ABCDEF0123456789ABCDEF0123456789"

    def serve(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "trialkit", "sandbox", "serve", "--format", "json",
                                 "--db", str(tmp_path / "s.db"), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "TRIALKIT_SANDBOX_TOKEN": token})

    for args, expected in ((("--study", str(ROOT), "--status", "production"), 1), ((), 1),
                           (("--status", "development"), 0)):
        proc = serve(*args)
        try:
            url = json.loads(proc.stdout.readline())["url"]
            assert Project(url, token, timeout=10).export_project_info()["in_production"] == expected, args
        finally:
            proc.terminate()
            proc.communicate(timeout=10)


def test_another_record_id_field_with_records_needs_allow_data_loss(sandbox):
    # a field moved above record_id makes it the record id: every stored record's identity changes
    base = classic_study()
    first = base.instruments[0]
    swapped = (first.fields[1], first.fields[0], *first.fields[2:])
    local = from_study(replace(base, instruments=(replace(first, fields=swapped), *base.instruments[1:])))
    token, client = new_project(sandbox, base)
    try:
        client.import_records([{"record_id": "1"}, {"record_id": "2"}])
        result = push_definitions(client, local, apply=True)
        assert result.status == "refused"
        (change,) = [c for c in result.diff.changes if c.attribute == "record id"]
        assert change.records == 2
        assert fetch(client).def_field == "record_id"
    finally:
        sandbox.drop_project(token)
