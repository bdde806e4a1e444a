"""filterLogic, evaluated by trialkit's logic language (REDCap mode)."""

from __future__ import annotations

import datetime as dt

import pytest
from redcap import RedcapError


def test_filter_logic_classic(classic):
    classic.import_records([
        {"record_id": "1", "age": "17", "race___2": "1", "sex": "1"},
        {"record_id": "2", "age": "40", "sex": "2"},
        {"record_id": "3", "age": "", "sex": "1"},
        {"record_id": "10", "age": "9"},
    ])
    ids = lambda logic: [r["record_id"] for r in classic.export_records(filter_logic=logic)]  # noqa: E731
    assert ids("[age] >= 18") == ["2"]
    assert ids("[age] < 18") == ["1", "10"]  # blank never passes an ordering comparison
    assert ids("[age] = ''") == ["3"]
    assert ids("[race(2)] = '1'") == ["1"]
    assert ids("[race(2)] = '0'") == ["2", "3", "10"]  # unchecked reads as '0'
    assert ids("[sex] = '1' and [age] <> 0") == ["1", "3"]
    assert ids("[age] > 5 or [sex] = 2") == ["1", "2", "10"]


@pytest.mark.parametrize("logic", ["[age] >", "[nope] = 1", "[age] = (1"])
def test_bad_filter_logic_is_an_error(classic, logic):
    classic.import_records([{"record_id": "1", "age": "5"}])
    with pytest.raises(RedcapError) as err:
        classic.export_records(filter_logic=logic)
    assert err.value.args[0]["error"].startswith("The filter logic is not valid")


def test_filter_logic_filters_record_events(longitudinal):
    longitudinal.import_records([
        {"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "150", "phq_1": "3"},
        {"record_id": "1", "redcap_event_name": "baseline_arm_1", "sbp": "120", "phq_1": "1"},
        {"record_id": "2", "redcap_event_name": "screening_arm_1", "sbp": "110", "phq_1": "0"},
        {"record_id": "2", "redcap_event_name": "baseline_arm_1", "sbp": "170", "phq_1": "2"},
    ])
    rows = longitudinal.export_records(filter_logic="[sbp] > 140")
    assert [(r["record_id"], r["redcap_event_name"]) for r in rows] == [("1", "screening_arm_1"),
                                                                        ("2", "baseline_arm_1")]
    rows = longitudinal.export_records(filter_logic="[screening_arm_1][sbp] > 140")
    assert [(r["record_id"], r["redcap_event_name"]) for r in rows] == [("1", "screening_arm_1"),
                                                                        ("1", "baseline_arm_1")]
    rows = longitudinal.export_records(filter_logic="[phq_1] > [screening_arm_1][phq_1]")
    assert [(r["record_id"], r["redcap_event_name"]) for r in rows] == [("2", "baseline_arm_1")]


def test_filter_logic_on_repeating_rows(longitudinal):
    longitudinal.import_records([
        {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": i, "ses_dose": dose}
        for i, dose in ((1, "0.5"), (2, "1.2"), (3, "0.8"))
    ])
    rows = longitudinal.export_records(filter_logic="[ses_dose] > 0.75")
    assert [r["redcap_repeat_instance"] for r in rows] == [2, 3]


def test_filter_logic_today_and_now_follow_the_server_clock(classic, clock):
    clock.now = dt.datetime(2025, 1, 1, 9, 0, 0)
    classic.import_records([
        {"record_id": "1", "dob": "2007-01-01", "visit_time": "2024-12-31 10:00"},  # 18 today; 23 h ago
        {"record_id": "2", "dob": "2007-01-02", "visit_time": "2024-12-31 08:00"},  # 18 tomorrow; 25 h ago
        {"record_id": "3"},
    ])
    ids = lambda logic: [r["record_id"] for r in classic.export_records(filter_logic=logic)]  # noqa: E731
    assert ids("datediff([dob], 'today', 'y') >= 18") == ["1"]
    assert ids("datediff([visit_time], 'now', 'h') < 24") == ["1"]
    assert ids("datediff([visit_time], 'now', 'h') >= 24") == ["2"]
    clock.now = dt.datetime(2025, 1, 2, 0, 30, 0)
    assert ids("datediff([dob], 'today', 'y') >= 18") == ["1", "2"]
    assert ids("datediff([visit_time], 'now', 'h') < 24") == []
