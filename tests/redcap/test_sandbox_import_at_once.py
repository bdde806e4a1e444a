"""New records' rows stored all at once (records._new_rows_at_once: a column at a time, when every row is new, of a
checked shape and named once) against apply_import's loop, row by row: the same stored rows, groups and log
entries, in order and word for word, whatever the rows. Through PyCap over HTTP."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_data import longitudinal_spec

from trialkit.redcap.sandbox import records
from trialkit.redcap.sandbox.project import dag_rows

# rows of clean shapes (no blank, no unchecked box): screening, baseline, a session instance, a follow-up instance
_SHAPES = [
    lambda rid, n: {"record_id": rid, "redcap_event_name": "screening_arm_1", "consent_date": "2023-02-24",
                    "arm_choice": str(1 + n % 2), "phq_1": str(n % 4), "phq_flags___1": "1", "sbp": str(100 + n)},
    lambda rid, n: {"record_id": rid, "redcap_event_name": "baseline_arm_1", "phq_1": str(n % 4), "sbp": str(90 + n),
                    "phq_complete": str(n % 3)},
    lambda rid, n: {"record_id": rid, "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
                    "redcap_repeat_instance": str(n), "ses_dose": f"{n}.5"},
    lambda rid, n: {"record_id": rid, "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": str(n),
                    "fu_status": str(1 + n % 2)},
]
_ROW = st.tuples(st.integers(1, 4), st.sampled_from(range(len(_SHAPES))), st.integers(1, 3),
                 st.sampled_from([None, "", "site_a", "site_b"]))


def _imported(sandbox, monkeypatch, rows: list[dict[str, str]], *, at_once: bool) -> tuple[list, list, int]:
    """Export (with groups), log (oldest first, word for word) and how often the rows were stored at once."""
    made = []
    general = records._new_rows_at_once

    def spy(*args):
        found = general(*args) if at_once else None
        made.append(found is not None)
        return found

    project = sandbox.project(sandbox.create_project(longitudinal_spec(dags=dag_rows(["Site A", "Site B"]))))
    try:
        with monkeypatch.context() as m:
            m.setattr(records, "_new_rows_at_once", spy)
            project.import_records(rows)
        log = [(e["action"], e["record"], e["details"]) for e in reversed(project.export_logging())
               if e["action"] != "Manage/Design "]
        return project.export_records(export_data_access_groups=True), log, sum(made)
    finally:
        sandbox.drop_project(project.token)


def _rows(drawn: list[tuple[int, int, int, str | None]]) -> list[dict[str, str]]:
    rows = []
    for rid, shape, n, dag in drawn:
        row = _SHAPES[shape](str(rid), n)
        if dag is not None:
            row["redcap_data_access_group"] = dag
        rows.append(row)
    return rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ROW, min_size=1, max_size=10))
def test_rows_stored_at_once_are_what_the_loop_stores_and_logs(sandbox, monkeypatch, drawn):
    rows = _rows(drawn)
    at_once = _imported(sandbox, monkeypatch, rows, at_once=True)
    by_row = _imported(sandbox, monkeypatch, rows, at_once=False)
    assert at_once[:2] == by_row[:2]
    keys = {(r["record_id"], r["redcap_event_name"], r.get("redcap_repeat_instance", "")) for r in rows}
    assert at_once[2] == (len(keys) == len(rows))  # at once exactly when no row is named twice


def test_the_first_row_of_each_record_creates_it_and_groups_follow_the_rows(sandbox, monkeypatch):
    rows = _rows([(2, 1, 1, "site_a"), (1, 0, 1, None), (2, 2, 1, None), (1, 3, 2, "site_b"), (2, 3, 1, "site_b")])
    exported, log, at_once = _imported(sandbox, monkeypatch, rows, at_once=True)
    assert at_once == 1
    assert [(action, record) for action, record, _ in log] == [
        ("Create record 2 (baseline_arm_1)", "2"), ("Create record 1 (screening_arm_1)", "1"),
        ("Update record 2 (treatment_arm_1)", "2"), ("Update record 1 (followup_arm_1)", "1"),
        ("Update record 2 (followup_arm_1)", "2")]
    assert {r["record_id"]: r["redcap_data_access_group"] for r in exported} == {"1": "site_b", "2": "site_b"}
    baseline = next(r for r in exported if r["redcap_event_name"] == "baseline_arm_1")
    assert (baseline["phq_complete"], baseline["vitals_complete"]) == ("1", "0")  # as given; the default
