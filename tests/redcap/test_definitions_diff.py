"""`trialkit redcap diff`: every change classified as REDCap's production review would, with the records a
critical change lands on counted from the project (sandbox over HTTP, real PyCap); the nightly job's guard."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest
from definitions_data import ROOT, classic_study, edit_field, new_project, run_cli

from trialkit.definitions import load_study
from trialkit.definitions.model import Choice, FieldType
from trialkit.redcap.definitions.diff import DefinitionsDiff, Severity, count_affected, diff_definitions
from trialkit.redcap.definitions.guard import DefinitionsDrift, check_definitions
from trialkit.redcap.definitions.project import fetch, from_study
from trialkit.redcap.sandbox import ProjectSpec

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def kap_study():
    return load_study(ROOT)


def changes_of(local, remote) -> dict[tuple[str, str, str], Severity]:
    diff = diff_definitions(from_study(local), from_study(remote))
    return {(c.area, c.target, c.attribute or c.what): c.severity for c in diff.changes}


# ---- classification (pure) -----------------------------------------------------------------------------------------

def test_the_same_study_has_no_differences():
    study = classic_study()
    assert diff_definitions(from_study(study), from_study(study)).empty


@pytest.mark.parametrize(("field", "changes", "key", "severity"), [
    ("age", {"label": "Age in years"}, ("field", "age", "field_label"), Severity.SAFE),
    ("age", {"note": "whole years"}, ("field", "age", "field_note"), Severity.SAFE),
    ("cigs_day", {"show_if": "[smoker] = '1' and [age] > 17"}, ("field", "cigs_day", "branching_logic"),
     Severity.CARE),
    ("bmi", {"calculation": "round([weight]/(([height]/100)^2),2)"},
     ("field", "bmi", "select_choices_or_calculations"), Severity.CARE),
    ("age", {"validation": "number"}, ("field", "age", "text_validation_type_or_show_slider_number"), Severity.CARE),
    ("weight", {"validation": "integer"}, ("field", "weight", "text_validation_type_or_show_slider_number"),
     Severity.CRITICAL),
    ("weight", {"validation": ""}, ("field", "weight", "text_validation_type_or_show_slider_number"), Severity.CARE),
    ("enrol_date", {"validation": "date_dmy"}, ("field", "enrol_date", "text_validation_type_or_show_slider_number"),
     Severity.CARE),
    ("age", {"min": "21"}, ("field", "age", "text_validation_min"), Severity.CRITICAL),
    ("age", {"min": "16"}, ("field", "age", "text_validation_min"), Severity.CARE),
    ("age", {"max": "80"}, ("field", "age", "text_validation_max"), Severity.CRITICAL),
    ("age", {"max": ""}, ("field", "age", "text_validation_max"), Severity.CARE),
    ("enrol_date", {"min": "2021-06-01"}, ("field", "enrol_date", "text_validation_min"), Severity.CRITICAL),
    ("severity", {"choices": (Choice("0", "None"), Choice("1", "Mild"), Choice("2", "Moderate"))},
     ("field", "severity", "select_choices_or_calculations"), Severity.CRITICAL),
    ("severity", {"choices": (Choice("0", "None"), Choice("1", "Mild"), Choice("2", "Moderate"),
                              Choice("3", "Severe"), Choice("4", "Life-threatening"))},
     ("field", "severity", "select_choices_or_calculations"), Severity.SAFE),
    ("severity", {"choices": (Choice("0", "None"), Choice("1", "Slight"), Choice("2", "Moderate"),
                              Choice("3", "Severe"))},
     ("field", "severity", "select_choices_or_calculations"), Severity.CARE),
    ("severity", {"type": FieldType.RADIO}, ("field", "severity", "field_type"), Severity.CARE),
    ("age", {"type": FieldType.NOTES, "validation": "", "min": "", "max": ""}, ("field", "age", "field_type"),
     Severity.CRITICAL),
    ("initials", {"identifier": False}, ("field", "initials", "identifier"), Severity.CARE),
    ("enrol_date", {"annotation": "@TODAY @READONLY"}, ("field", "enrol_date", "field_annotation"), Severity.CARE),
    ("ae_serious", {"form": "measures"}, ("field", "ae_serious", "form_name"), Severity.CARE),
])
def test_each_field_change_is_classified(field, changes, key, severity):
    base = classic_study()
    found = changes_of(edit_field(base, field, **changes), base)
    assert found.get(key) is severity, found


def test_recoding_a_choice_is_critical_and_says_so():
    base = classic_study()
    recoded = edit_field(base, "sex", choices=(Choice("1", "Female"), Choice("2", "Male"), Choice("9", "Other")))
    diff = diff_definitions(from_study(recoded), from_study(base))
    (change,) = diff.changes
    assert change.severity is Severity.CRITICAL
    assert "recoded: 3" in change.detail
    assert change.probe.codes == ("3",)


def test_added_and_deleted_fields_and_forms():
    base = classic_study()
    fewer = edit_field(base, "cigs_day", remove=True)
    fewer = replace(fewer, instruments=fewer.instruments[:2], repeating_instruments=())
    found = changes_of(fewer, base)
    assert found[("field", "cigs_day", "removed")] is Severity.CRITICAL
    assert found[("form", "adverse_events", "removed")] is Severity.CRITICAL
    # the form's fields are said once, with the form
    assert not any(k[1].startswith("ae_") for k in found)
    back = changes_of(base, fewer)
    assert back[("field", "cigs_day", "added")] is Severity.SAFE
    assert back[("form", "adverse_events", "added")] is Severity.SAFE


def test_schedule_changes(kap_study):
    arm = kap_study.arms[0]
    fewer_events = [e for e in arm.events if e.name != "followup_6m_arm_1"]
    screening = fewer_events[0]
    fewer_events[0] = replace(screening, instruments=tuple(i for i in screening.instruments if i != "gad7"))
    fewer_events[1] = replace(fewer_events[1], label="Baseline visit")
    local = replace(kap_study, arms=(replace(arm, name="KAP open label", events=tuple(fewer_events)),))
    found = changes_of(local, kap_study)
    assert found == {
        ("arm", "1", "name"): Severity.SAFE,
        ("event", "followup_6m_arm_1", "removed"): Severity.CRITICAL,
        ("event", "baseline_arm_1", "event_name"): Severity.SAFE,
        ("mapping", "screening_arm_1 / gad7", "removed"): Severity.CRITICAL,
    }
    assert changes_of(kap_study, local)[("event", "followup_6m_arm_1", "added")] is Severity.SAFE


def test_repeating_and_project_settings(kap_study):
    base = classic_study()
    found = changes_of(replace(base, repeating_instruments=()), base)
    assert found[("repeating", "adverse_events", "removed")] is Severity.CRITICAL
    assert found[("project", "repeating", "repeating")] is Severity.CARE
    classic = replace(kap_study, arms=())
    assert changes_of(classic, kap_study)[("project", "longitudinal", "longitudinal")] is Severity.CRITICAL


# ---- counting affected records against the project ----------------------------------------------------------------

RECORDS = [
    {"record_id": "1", "initials": "AB", "age": "34", "sex": "3", "weight": "70.5", "symptoms___2": "1",
     "severity": "3"},
    {"record_id": "2", "initials": "CD", "age": "51", "sex": "1", "weight": "88", "severity": "1"},
    {"record_id": "3", "initials": "EF", "age": "", "sex": "2", "symptoms___1": "1"},
]


def golden_changes(base):
    study = edit_field(base, "age", label="Age (years)", min="21")
    study = edit_field(study, "cigs_day", show_if="[smoker] = '1' and [age] >= 18")
    study = edit_field(study, "initials", remove=True)
    study = edit_field(study, "sex", choices=(Choice("1", "Female"), Choice("2", "Male")))
    study = edit_field(study, "symptoms", choices=(Choice("1", "Headache"), Choice("3", "Fatigue"),
                                                   Choice("4", "Dizziness")))
    study = edit_field(study, "height", validation="integer")
    return study


def test_critical_changes_count_the_records_holding_data_there(sandbox):
    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records(RECORDS)
        remote = fetch(client)
        diff = diff_definitions(from_study(golden_changes(base)), remote)
        before = len(client.calls)
        counted = {(c.target, c.attribute or c.what): c.records for c in count_affected(client, diff, remote).changes
                   if c.severity is Severity.CRITICAL}
        # one export of the probed fields after the id list (the record id field comes from the dictionary already
        # fetched: no request)
        assert client.calls[before:].count("record export") == 1
        assert set(client.calls[before:]) == {"record id export", "record export"}
        assert counted == {
            ("age", "text_validation_min"): 2,  # two records hold an age
            ("initials", "removed"): 3,
            ("sex", "select_choices_or_calculations"): 1,  # only record 1 holds the removed code 3
            ("symptoms", "select_choices_or_calculations"): 1,  # only record 1 ticked the removed choice 2
            ("height", "text_validation_type_or_show_slider_number"): 0,
        }
    finally:
        sandbox.drop_project(token)


def test_diff_cli_text_and_json_match_the_golden_files(sandbox, tmp_path, capsys, monkeypatch):
    from trialkit.definitions.yamlwrite import write_study

    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records(RECORDS)
        write_study(golden_changes(base), tmp_path)
        monkeypatch.setenv("REDCAP_API_TOKEN", token)
        args = ["redcap", "diff", "--url", sandbox.url, "--study", str(tmp_path)]
        code, out, err = run_cli(args, capsys)
        assert code == 1, err
        assert out == (GOLDEN / "classic_diff.txt").read_text(encoding="utf-8")
        code, out, err = run_cli([*args, "--format", "json"], capsys)
        assert code == 1, err
        assert json.loads(out) == json.loads((GOLDEN / "classic_diff.json").read_text(encoding="utf-8"))
        assert token not in out + err
    finally:
        sandbox.drop_project(token)


def test_diff_cli_exit_status(sandbox, tmp_path, capsys, monkeypatch):
    from trialkit.definitions.yamlwrite import write_study

    token, _ = new_project(sandbox, classic_study())
    try:
        write_study(classic_study(), tmp_path)
        monkeypatch.setenv("REDCAP_API_TOKEN", token)
        code, out, _ = run_cli(["redcap", "diff", "--url", sandbox.url, "--study", str(tmp_path)], capsys)
        assert (code, out) == (0, "no differences: the project matches the study\n")
        monkeypatch.setenv("REDCAP_API_TOKEN", "A" * 32)  # a token the project does not know
        code, _, err = run_cli(["redcap", "diff", "--url", sandbox.url, "--study", str(tmp_path)], capsys)
        # a configuration error (2), which also no longer reads as "the project differs" (1)
        assert code == 2 and "permissions" in err and "Traceback" not in err
        code, _, err = run_cli(["redcap", "diff", "--study", str(tmp_path)], capsys)
        assert code == 2 and "--connection NAME" in err
    finally:
        sandbox.drop_project(token)


# ---- the nightly job stops when screening would read definitions REDCap no longer has -----------------------------

def test_guard_stops_on_what_screening_reads_and_lets_labels_pass(sandbox, kap_study):
    token, client = new_project(sandbox, kap_study)
    try:
        assert check_definitions(client, kap_study).empty
        relabelled = edit_field(kap_study, "phq9_1", label="Little interest or pleasure (past two weeks)")
        sandbox.redefine(ProjectSpec.from_definition(relabelled), token)
        assert not check_definitions(client, kap_study).empty  # differs, but nothing screening reads
        field = kap_study.field("atrq_class")
        recoded = edit_field(kap_study, "atrq_class",
                             choices=tuple(Choice("9" if c.code == "1" else c.code, c.label) for c in field.choices))
        sandbox.redefine(ProjectSpec.from_definition(recoded), token)
        with pytest.raises(DefinitionsDrift) as info:
            check_definitions(client, kap_study)
        assert info.value.exit_code == 2
        assert "atrq_class" in info.value.message and "critical" in info.value.message
        assert "phq9_1" not in info.value.message  # a label is not what screening reads
    finally:
        sandbox.drop_project(token)


def test_nightly_run_stops_before_the_ledger_opens_a_run(sandbox, kap_study, tmp_path):
    from trialkit.redcap.sync import Ledger, run_nightly
    from trialkit.screening.run import load_rules

    rules = load_rules(ROOT / "eligibility_rules" / "kap_trd.yaml", kap_study)
    changed = edit_field(kap_study, "vs_bmi", calculation="round([vs_weight_kg] / ([vs_height_cm] / 100) ^ 2, 1)")
    token, client = new_project(sandbox, changed)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(DefinitionsDrift, match="vs_bmi"):
            run_nightly(client, kap_study, rules, ledger=ledger, as_of=dt.date(2026, 11, 1),
                        now=dt.datetime(2026, 11, 2, 2, 0))
        assert ledger.last_success() is None
        assert not any("record" in call for call in client.calls)  # no data was read, none written
    finally:
        ledger.close()
        sandbox.drop_project(token)


def test_swapping_two_choices_labels_is_a_recode():
    # "1, Female | 2, Male" -> "1, Male | 2, Female": no code is removed, but every stored 1 and 2 now reads as the
    # other sex: docs/redcap-definitions.md calls a label now under another code critical, and screening reads it
    base = classic_study()
    old = base.field("sex").choices
    swapped = edit_field(base, "sex", choices=(Choice(old[0].code, old[1].label), Choice(old[1].code, old[0].label),
                                               *old[2:]))
    (change,) = diff_definitions(from_study(swapped), from_study(base)).changes
    assert change.severity is Severity.CRITICAL and change.screening
    assert "recoded" in change.detail
    assert set(change.probe.codes) == {old[0].code, old[1].code}


@pytest.mark.parametrize(("was", "now", "severity"), [
    ("08:00", "07:30", Severity.CARE),  # an earlier minimum time lets more values in
    ("08:00", "09:15", Severity.CRITICAL),
    ("2021-01-01 08:00", "2020-12-31 23:00", Severity.CARE),
])
def test_a_time_minimum_is_compared_as_a_time(was, now, severity):
    base = edit_field(classic_study(), "age", validation="time", min=was, max="")
    found = changes_of(edit_field(base, "age", min=now), base)
    assert found[("field", "age", "text_validation_min")] is severity, found


def _renamed_measures(base):
    inst = next(i for i in base.instruments if i.name == "measures")
    renamed = replace(inst, name="measures_v2", fields=tuple(replace(f, form="measures_v2") for f in inst.fields))
    return replace(base, instruments=tuple(renamed if i is inst else i for i in base.instruments))


def test_a_renamed_form_says_its_fields_move_and_probes_only_what_is_lost():
    base = classic_study()
    diff = diff_definitions(from_study(_renamed_measures(base)), from_study(base))
    (gone,) = [c for c in diff.changes if c.area == "form" and c.what == "removed"]
    assert gone.severity is Severity.CRITICAL
    assert "5 field(s) move to other forms" in gone.detail and "deleted with its" not in gone.detail
    # the fields keep their data; the form's status values do not
    assert gone.probe.fields == ("measures_complete",)


def test_a_deleted_form_counts_records_that_only_hold_its_status(sandbox):
    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records([{"record_id": "1", "measures_complete": "2"}, {"record_id": "2", "age": "40"}])
        local = replace(base, instruments=tuple(i for i in base.instruments if i.name != "measures"))
        remote = fetch(client)
        diff = count_affected(client, diff_definitions(from_study(local), remote), remote)
        (gone,) = [c for c in diff.changes if c.area == "form"]
        assert gone.records == 1
    finally:
        sandbox.drop_project(token)


def test_diff_names_the_records_a_critical_change_lands_on(sandbox):
    base = classic_study()
    token, client = new_project(sandbox, base)
    try:
        client.import_records([{"record_id": "1", "cigs_day": "10", "smoker": "1"},
                               {"record_id": "2", "smoker": "0"}, {"record_id": "3", "cigs_day": "5", "smoker": "1"}])
        remote = fetch(client)
        diff = count_affected(client, diff_definitions(from_study(edit_field(base, "cigs_day", remove=True)), remote),
                              remote)
        (change,) = diff.changes
        assert change.records == 2 and change.record_ids == ("1", "3")
        assert change.to_dict()["record_ids"] == ["1", "3"]
        assert "records: 1, 3" in diff.render()
        # a record id field marked as an identifier: its values are never shown, only counted
        token2, client2 = new_project(sandbox, edit_field(base, "record_id", identifier=True))
        try:
            client2.import_records([{"record_id": "1", "cigs_day": "10"}])
            remote = fetch(client2)
            local = from_study(edit_field(edit_field(base, "record_id", identifier=True), "cigs_day", remove=True))
            (change,) = count_affected(client2, diff_definitions(local, remote), remote).changes
            assert change.records == 1 and change.record_ids == ()
            assert "records:" not in DefinitionsDiff((change,)).render()
        finally:
            sandbox.drop_project(token2)
    finally:
        sandbox.drop_project(token)


def test_removed_events_and_mappings_count_records_that_only_hold_a_form_status(sandbox, kap_study):
    # a form marked Complete with no value (all answers left blank on purpose) is data the removal loses too
    arm = kap_study.arms[0]
    events = [e for e in arm.events if e.name != "followup_6m_arm_1"]
    events[1] = replace(events[1], instruments=tuple(i for i in events[1].instruments if i != "vital_signs"))
    local = replace(kap_study, arms=(replace(arm, events=tuple(events)),))
    token, client = new_project(sandbox, kap_study)
    try:
        client.import_records([{"record_id": "1", "redcap_event_name": "followup_6m_arm_1", "phq9_complete": "2"},
                               {"record_id": "2", "redcap_event_name": "baseline_arm_1", "vital_signs_complete": "1"}])
        remote = fetch(client)
        diff = count_affected(client, diff_definitions(from_study(local), remote), remote)
        counted = {(c.area, c.target): c.record_ids for c in diff.of(Severity.CRITICAL)}
        assert counted == {("event", "followup_6m_arm_1"): ("1",), ("mapping", "baseline_arm_1 / vital_signs"): ("2",)}
    finally:
        sandbox.drop_project(token)
