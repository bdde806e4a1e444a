"""Longitudinal projects: events, form-event mappings, repeating instruments and events, through PyCap."""

from __future__ import annotations

import json

import pytest
from redcap import RedcapError
from sandbox_data import post

SCREENING = {"record_id": "1", "redcap_event_name": "screening_arm_1", "consent_date": "2025-01-02",
             "phq_1": "2", "phq_flags___2": "1", "sbp": "120"}


def test_project_shape_exports(longitudinal):
    assert longitudinal.is_longitudinal is True
    info = longitudinal.export_project_info()
    assert info["is_longitudinal"] == 1 and info["has_repeating_instruments_or_events"] == 1
    assert longitudinal.export_arms() == [{"arm_num": 1, "name": "Arm 1"}]
    events = longitudinal.export_events()
    assert [e["unique_event_name"] for e in events] == ["screening_arm_1", "baseline_arm_1", "treatment_arm_1",
                                                       "followup_arm_1"]
    assert events[0] == {"event_name": "Screening", "arm_num": 1, "unique_event_name": "screening_arm_1",
                         "custom_event_label": "", "event_id": 101}
    mappings = longitudinal.export_instrument_event_mappings()
    assert {"arm_num": 1, "unique_event_name": "treatment_arm_1", "form": "session"} in mappings
    assert longitudinal.export_repeating_instruments_events() == [
        {"event_name": "treatment_arm_1", "form_name": "session", "custom_form_label": "Session [ses_date]"},
        {"event_name": "followup_arm_1", "form_name": "", "custom_form_label": ""},
    ]
    assert longitudinal.export_arms(arms=["1"]) == [{"arm_num": 1, "name": "Arm 1"}]


def test_rows_per_event_and_repeat_instance_types(longitudinal):
    longitudinal.import_records([
        SCREENING,
        {"record_id": "1", "redcap_event_name": "baseline_arm_1", "phq_1": "1"},
        {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": 2, "ses_dose": "0.5"},
        {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": 1, "ses_dose": "0.75"},
        {"record_id": "1", "redcap_event_name": "treatment_arm_1", "ae_term": "nausea"},
        {"record_id": "1", "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": 1, "fu_status": "1"},
    ])
    rows = longitudinal.export_records()
    keys = [(r["redcap_event_name"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"]) for r in rows]
    assert keys == [
        ("screening_arm_1", "", ""), ("baseline_arm_1", "", ""), ("treatment_arm_1", "", ""),
        ("treatment_arm_1", "session", 1), ("treatment_arm_1", "session", 2), ("followup_arm_1", "", 1),
    ]
    assert list(rows[0])[:4] == ["record_id", "redcap_event_name", "redcap_repeat_instrument",
                                 "redcap_repeat_instance"]
    screening, baseline, treatment, session1 = rows[0], rows[1], rows[2], rows[3]
    assert screening["phq_flags___2"] == "1" and screening["phq_flags___1"] == "0"
    assert screening["ses_dose"] == "" and screening["session_complete"] == ""  # not designated: blank
    assert baseline["enrolment_complete"] == "" and baseline["phq_complete"] == "0"
    assert treatment["ae_term"] == "nausea" and treatment["session_complete"] == ""  # repeating form: own rows
    assert session1["ses_dose"] == "0.75" and session1["ae_term"] == "" and session1["phq_flags___1"] == ""
    assert rows[5]["fu_status"] == "1" and rows[5]["phq_1"] == ""
    csv_text = longitudinal.export_records(format_type="csv", fields=["record_id", "ses_dose"])
    # the record id is in every row, so each row of the record comes back; other repeating instruments' do not
    assert csv_text.splitlines()[1:] == ["1,screening_arm_1,,,", "1,baseline_arm_1,,,", "1,treatment_arm_1,,,",
                                         "1,treatment_arm_1,session,1,0.75", "1,treatment_arm_1,session,2,0.5",
                                         "1,followup_arm_1,,1,"]
    no_sessions = longitudinal.export_records(fields=["record_id", "sbp"])
    assert [(r["redcap_event_name"], r["redcap_repeat_instrument"]) for r in no_sessions] == [
        ("screening_arm_1", ""), ("baseline_arm_1", ""), ("treatment_arm_1", ""), ("followup_arm_1", "")]


def test_count_is_records_not_rows(longitudinal):
    reply = longitudinal.import_records([SCREENING, {"record_id": "1", "redcap_event_name": "baseline_arm_1",
                                                     "sbp": "110"}])
    assert reply == {"count": 1}


def test_event_labels_in_label_mode_and_events_filter(longitudinal):
    longitudinal.import_records([SCREENING, {"record_id": "1", "redcap_event_name": "baseline_arm_1", "sbp": "1"}])
    rows = longitudinal.export_records(raw_or_label="label")
    assert [r["redcap_event_name"] for r in rows] == ["Screening", "Baseline"]
    rows = longitudinal.export_records(events=["baseline_arm_1"])
    assert [r["redcap_event_name"] for r in rows] == ["baseline_arm_1"]
    with pytest.raises(RedcapError) as err:
        longitudinal.export_records(events=["nope_arm_1"])
    assert "\"events\" are not valid: 'nope_arm_1'" in err.value.args[0]["error"]


def test_label_mode_names_a_repeating_instrument_by_its_label_not_its_piping_template(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "treatment_arm_1",
                                  "redcap_repeat_instrument": "session", "redcap_repeat_instance": 1,
                                  "ses_date": "2025-01-02"}])
    labels = {i["instrument_name"]: i["instrument_label"] for i in longitudinal.export_instruments()}
    rows = longitudinal.export_records(raw_or_label="label")
    assert [r["redcap_repeat_instrument"] for r in rows] == [labels["session"]]


def test_repeat_instance_new_appends(longitudinal):
    row = {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
           "redcap_repeat_instance": "new", "ses_dose": "1"}
    longitudinal.import_records([row, dict(row, ses_dose="2")])
    longitudinal.import_records([dict(row, ses_dose="3")])
    rows = longitudinal.export_records(fields=["record_id", "ses_dose"])
    assert [(r["redcap_repeat_instance"], r["ses_dose"]) for r in rows] == [(1, "1"), (2, "2"), (3, "3")]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"record_id": "1", "redcap_event_name": "nope", "sbp": "1"}, "The value is not a valid unique event name"),
        ({"record_id": "1", "redcap_event_name": "baseline_arm_1", "consent_date": "2025-01-01"},
         "is not designated for the event 'baseline_arm_1'"),
        ({"record_id": "1", "redcap_event_name": "treatment_arm_1", "ses_dose": "1"},
         "redcap_repeat_instrument and redcap_repeat_instance must be provided"),
        ({"record_id": "1", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "phq",
          "redcap_repeat_instance": "1", "phq_1": "1"}, "not a repeating instrument"),
        ({"record_id": "1", "redcap_event_name": "followup_arm_1", "fu_status": "1"},
         "is a repeating event, so redcap_repeat_instance must be provided"),
        ({"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
          "redcap_repeat_instance": "0", "ses_dose": "1"}, "The repeat instance must be a whole number"),
    ],
)
def test_event_and_repeat_rules(longitudinal, row, message):
    with pytest.raises(RedcapError) as err:
        longitudinal.import_records([SCREENING, row])
    assert message in err.value.args[0]["error"]
    assert longitudinal.export_records() == []


def test_delete_event_instrument_and_instance(longitudinal):
    session = {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session"}
    longitudinal.import_records([
        SCREENING,
        {"record_id": "1", "redcap_event_name": "baseline_arm_1", "sbp": "110", "phq_1": "0"},
        dict(session, redcap_repeat_instance=1, ses_dose="1"),
        dict(session, redcap_repeat_instance=2, ses_dose="2"),
    ])
    with pytest.raises(RedcapError):  # instrument without event in a longitudinal project
        longitudinal.delete_records(["1"], instrument="vitals")
    assert longitudinal.delete_records(["1"], instrument="vitals", event="baseline_arm_1") == 1
    assert longitudinal.delete_records(["1"], instrument="session", event="treatment_arm_1", repeat_instance=1) == 1
    rows = longitudinal.export_records()
    baseline = next(r for r in rows if r["redcap_event_name"] == "baseline_arm_1")
    assert baseline["sbp"] == "" and baseline["phq_1"] == "0"
    assert [r["redcap_repeat_instance"] for r in rows if r["redcap_repeat_instrument"] == "session"] == [2]
    assert longitudinal.delete_records(["1"], event="screening_arm_1") == 1
    assert [r["redcap_event_name"] for r in longitudinal.export_records()] == ["baseline_arm_1", "treatment_arm_1"]
    assert longitudinal.delete_records(["1"]) == 1
    assert longitudinal.export_records() == []


def test_eav_export_longitudinal(longitudinal):
    longitudinal.import_records([SCREENING])
    rows = longitudinal.export_records(record_type="eav", fields=["record_id", "sbp"])
    assert rows == [
        {"record": "1", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "",
         "redcap_repeat_instance": "", "field_name": "record_id", "value": "1"},
        {"record": "1", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "",
         "redcap_repeat_instance": "", "field_name": "sbp", "value": "120"},
    ]


def test_import_arms_events_mappings_and_repeats(longitudinal):
    assert longitudinal.import_arms([{"arm_num": 2, "name": "Open label"}]) == 1
    assert longitudinal.import_events([{"event_name": "Week 12 Visit", "arm_num": 2}]) == 1
    events = longitudinal.export_events(arms=["2"])
    assert [e["unique_event_name"] for e in events] == ["week_12_visit_arm_2"]
    assert longitudinal.import_instrument_event_mappings(
        [{"arm_num": 2, "unique_event_name": "week_12_visit_arm_2", "form": "phq"}]) == 1
    longitudinal.import_records([{"record_id": "9", "redcap_event_name": "week_12_visit_arm_2", "phq_1": "3"}])
    assert longitudinal.export_records(records=["9"])[0]["phq_1"] == "3"
    assert longitudinal.import_repeating_instruments_events(
        [{"event_name": "treatment_arm_1", "form_name": "session", "custom_form_label": ""}]) == 1
    assert len(longitudinal.export_repeating_instruments_events()) == 1
    assert longitudinal.delete_events(["week_12_visit_arm_2"]) == 1
    assert longitudinal.export_records(records=["9"]) == []
    assert longitudinal.delete_arms(["2"]) == 1
    assert longitudinal.export_arms() == [{"arm_num": 1, "name": "Arm 1"}]


def test_a_deleted_event_takes_its_mappings_repeat_settings_and_data_with_it(longitudinal):
    longitudinal.import_records([
        {"record_id": "1", "redcap_event_name": "screening_arm_1", "phq_1": "1"},
        {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": 1, "ses_date": "2025-01-02"},
    ])
    assert longitudinal.delete_events(["treatment_arm_1"]) == 1
    assert "treatment_arm_1" not in {m["unique_event_name"] for m in longitudinal.export_instrument_event_mappings()}
    assert "treatment_arm_1" not in {r["event_name"] for r in longitudinal.export_repeating_instruments_events()}
    assert {r["redcap_event_name"] for r in longitudinal.export_records()} == {"screening_arm_1"}
    # the event name is free again, with no data left behind
    assert longitudinal.import_events([{"event_name": "Treatment", "arm_num": 1}]) == 1
    assert [r["redcap_event_name"] for r in longitudinal.export_records()] == ["screening_arm_1"]


def test_deleting_an_arm_deletes_its_events_mappings_and_data(longitudinal):
    longitudinal.import_arms([{"arm_num": 2, "name": "Open label"}])
    longitudinal.import_events([{"event_name": "Week 12", "arm_num": 2}])
    longitudinal.import_instrument_event_mappings([{"arm_num": 2, "unique_event_name": "week_12_arm_2", "form": "phq"}])
    longitudinal.import_records([{"record_id": "10", "redcap_event_name": "week_12_arm_2", "phq_1": "2"}])
    assert longitudinal.delete_arms(["2"]) == 1
    assert [m for m in longitudinal.export_instrument_event_mappings() if m["arm_num"] == 2] == []
    assert longitudinal.export_records(records=["10"]) == []


def test_override_replaces_the_whole_schedule(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "baseline_arm_1", "phq_1": "1"}])
    # arms with override: every arm, event and mapping goes, then the import (redcap-api.md §1.3)
    assert longitudinal.import_arms([{"arm_num": 1, "name": "Only arm"}], override=1) == 1
    assert longitudinal.export_arms() == [{"arm_num": 1, "name": "Only arm"}]
    assert longitudinal.export_events() == []
    assert longitudinal.export_records() == []
    longitudinal.import_events([{"event_name": "Baseline", "arm_num": 1}, {"event_name": "Week 4", "arm_num": 1}])
    longitudinal.import_instrument_event_mappings(
        [{"arm_num": 1, "unique_event_name": "baseline_arm_1", "form": "phq"},
         {"arm_num": 1, "unique_event_name": "week_4_arm_1", "form": "phq"}])
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "week_4_arm_1", "phq_1": "2"}])
    # events with override: the events not imported again lose their mappings and data
    assert longitudinal.import_events([{"event_name": "Baseline", "arm_num": 1}], override=1) == 1
    assert [e["unique_event_name"] for e in longitudinal.export_events()] == ["baseline_arm_1"]
    assert longitudinal.export_instrument_event_mappings() == [
        {"arm_num": 1, "unique_event_name": "baseline_arm_1", "form": "phq"}]
    assert longitudinal.export_records() == []


def test_a_partial_delete_keeps_the_record(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "phq_1": "1"}])
    assert longitudinal.delete_records(["1"], event="screening_arm_1") == 1
    assert longitudinal.export_records() == []
    assert longitudinal.generate_next_record_name() == "2"  # the record still exists, with no data
    assert longitudinal.delete_records(["1"]) == 1
    assert longitudinal.generate_next_record_name() == "1"


@pytest.mark.parametrize("content, rows, message", [
    ("arm", [{"name": "No number"}], "The arm number '' is not valid"),
    ("arm", [{"arm_num": "two", "name": "Bad"}], "The arm number 'two' is not valid"),
    ("arm", [{"arm_num": 2}], 'The "name" of each row'),
    ("event", [{"event_name": "Week 4", "arm_num": "x"}], "The arm number 'x' is not valid"),
    ("event", [{"arm_num": 1}], 'The "event_name" of each row'),
])
def test_malformed_arm_and_event_rows_are_refused_not_crashed(sandbox, longitudinal, content, rows, message):
    reply = post(sandbox.url, token=longitudinal.token, content=content, action="import", format="json",
                 returnFormat="json", data=json.dumps(rows))
    assert reply.status_code == 400
    assert reply.json()["error"].startswith(message)
    assert longitudinal.export_arms() == [{"arm_num": 1, "name": "Arm 1"}]
    assert len(longitudinal.export_events()) == 4


def test_file_fields_in_events(sandbox, longitudinal):
    # no file field in this design: the error names the field
    reply = post(sandbox.url, token=longitudinal.token, content="file", action="export", record="1", field="sbp",
                 event="screening_arm_1")
    assert "The field 'sbp' does not exist or is not a 'file' field" in reply.text


def test_calcs_chain_and_read_other_events(sandbox):
    from sandbox_data import (
        LONGITUDINAL_EVENTS,
        LONGITUDINAL_MAPPINGS,
        LONGITUDINAL_METADATA,
        LONGITUDINAL_REPEATING,
        _row,
    )

    from trialkit.redcap.sandbox import ProjectSpec

    at = [r["field_name"] for r in LONGITUDINAL_METADATA].index("dbp") + 1
    calcs = [
        _row("sbp_change", "vitals", "calc", choices="[sbp] - [screening_arm_1][sbp]"),
        _row("sbp_double", "vitals", "calc", choices="[sbp_change] * 2"),  # reads the calc just before it
        _row("baseline_change", "vitals", "calc", choices="[baseline_arm_1][sbp_change]"),  # a calc of another event
    ]
    spec = ProjectSpec.classic(LONGITUDINAL_METADATA[:at] + calcs + LONGITUDINAL_METADATA[at:],
                               arms=({"arm_num": 1, "name": "Arm 1"},), events=LONGITUDINAL_EVENTS,
                               mappings=LONGITUDINAL_MAPPINGS, repeating=LONGITUDINAL_REPEATING)
    token = sandbox.create_project(spec)
    try:
        proj = sandbox.project(token)
        proj.import_records([
            {"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "150"},
            {"record_id": "1", "redcap_event_name": "baseline_arm_1", "sbp": "120"},
            {"record_id": "2", "redcap_event_name": "screening_arm_1", "sbp": "110"},
        ])
        rows = proj.export_records(fields=["record_id", "sbp_change", "sbp_double", "baseline_change"])
        got = [(r["record_id"], r["redcap_event_name"], r["sbp_change"], r["sbp_double"], r["baseline_change"])
               for r in rows]
        assert got == [("1", "screening_arm_1", "0", "0", "-30"), ("1", "baseline_arm_1", "-30", "-60", "-30"),
                       ("2", "screening_arm_1", "0", "0", "")]
    finally:
        sandbox.drop_project(token)
