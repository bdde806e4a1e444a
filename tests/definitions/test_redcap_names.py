from __future__ import annotations

import pytest

from trialkit.definitions import load_study
from trialkit.definitions.redcap_names import (
    checkbox_column,
    export_field_names,
    export_field_names_rows,
    name_problem,
    record_columns,
    unique_event_name,
)


@pytest.mark.parametrize(
    ("code", "column"),
    [("-4", "cb____4"), ("k>=9", "cb___k__9"), ("ABC", "cb___abc"), ("1", "cb___1"), ("x y", "cb___x_y")],
)
def test_checkbox_column_follows_redcap(code, column):
    assert checkbox_column("cb", code) == column


@pytest.mark.parametrize(
    ("label", "arm", "name"),
    [
        ("Screening & Enrollment", 1, "screening__enrollm_arm_1"),
        ("Screening", 1, "screening_arm_1"),
        ("End of series", 2, "end_of_series_arm_2"),
        ("Follow-up 1m", 1, "followup_1m_arm_1"),
        ("!!!", 1, "event_arm_1"),
    ],
)
def test_unique_event_name(label, arm, name):
    assert unique_event_name(label, arm) == name


def test_unique_event_name_avoids_names_taken():
    first = unique_event_name("Visit", 1)
    second = unique_event_name("Visit", 1, {first})
    assert first == "visit_arm_1" and second != first and second.endswith("_arm_1")


@pytest.mark.parametrize(
    ("name", "ok"),
    [("age", True), ("a1_b2", True), ("Age", False), ("1a", False), ("a__b", False), ("a_", False), ("", False)],
)
def test_name_rules(name, ok):
    assert (name_problem(name) is None) is ok


def test_kap_export_columns(repo_root):
    study = load_study(repo_root)
    cols = export_field_names(study)
    assert cols[0] == "record_id"
    assert "race___1" in cols and "race" not in cols
    assert "cssrs_intro" not in cols  # descriptive: no data column
    assert cols.index("consent_complete") == cols.index("consent_file") + 1
    assert cols[-1] == "followup_complete"
    rows = export_field_names_rows(study)
    assert {"original_field_name": "race", "choice_value": "9", "export_field_name": "race___9"} in rows
    assert record_columns(study) == [
        "record_id",
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
    ]


def test_unique_event_names_never_run_out():
    taken: set[str] = set()
    for _ in range(60):
        taken.add(unique_event_name("Visit", 1, taken))
    assert len(taken) == 60
    assert {"visit_arm_1", "visit_a_arm_1", "visit_z_arm_1", "visit_aa_arm_1"} <= taken
