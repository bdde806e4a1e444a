"""Calculated fields on import, their frame built from the checked columns (records.CheckedRows ->
calcs.CalcPlan._frame_of_shapes) when every imported row is new and stored as checked, against the frame built
from the stored row dicts that it replaces: the same stored rows, whatever the rows. Through PyCap over HTTP.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_data import _row
from test_sandbox_import_calcs import METADATA, _spec

from trialkit.redcap.sandbox import calcs

_general_apply = calcs.CalcPlan.apply
# also calcs that read a converted cell (an MDY date, stored as YMD) and a `<form>_complete` default
EXTRA = [
    _row("consent_days", "enrolment", "calc", choices="datediff([consent_date], '2024-12-31', 'd', 'ymd')"),
    _row("phq_done", "enrolment", "calc", choices="[phq_complete] + 1"),
]


def _rows_of(records: list[tuple[int, int, int, bool, int]]) -> list[dict[str, str]]:
    """Clean rows (no blank, no unchecked box, no calc value): the shapes path's case. Dates in MDY, so a
    shape's cells are converted; a box ticked or not named; sessions 1..n; followup on a repeating event."""
    rows: list[dict[str, str]] = []
    for i, (phq, sbp, sessions, tired, status) in enumerate(records, start=1):
        rid = str(i)
        screening = {"record_id": rid, "redcap_event_name": "screening_arm_1", "consent_date": f"0{1 + i % 9}/02/2024",
                     "phq_1": str(phq), "phq_2": str((phq + i) % 4), "sbp": str(sbp)}
        if tired:
            screening["phq_flags___1"] = "1"
        rows.append(screening)
        rows.append({"record_id": rid, "redcap_event_name": "treatment_arm_1", "tx_weight": str(50 + sbp % 40)})
        rows.extend({"record_id": rid, "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
                     "redcap_repeat_instance": str(n), "ses_dose": f"{n * 0.25 + phq:.2f}"}
                    for n in range(1, sessions + 1))
        rows.append({"record_id": rid, "redcap_event_name": "visit_arm_1", "sbp": str(sbp - 5)})
        rows.append({"record_id": rid, "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": "1",
                     "fu_status": str(status)})
    return rows


def _import(sandbox, monkeypatch, rows: list[dict[str, str]], *, columns: bool) -> tuple[list[dict], int]:
    """The export after importing `rows` into a new project, and how often the frame came from the columns."""
    used = []
    of_shapes = calcs.CalcPlan._frame_of_shapes

    def spy(self, shapes):
        used.append(len(shapes))
        return of_shapes(self, shapes)

    def general(self, rows, today, shapes=None):
        return _general_apply(self, rows, today)

    monkeypatch.setattr(calcs, "FRAME_BY_KIND_ROWS", 0)
    monkeypatch.setattr(calcs.CalcPlan, "_frame_of_shapes", spy)
    monkeypatch.setattr(calcs.CalcPlan, "apply", _general_apply if columns else general)
    project = sandbox.project(sandbox.create_project(_spec([*METADATA[:2], *EXTRA, *METADATA[2:]])))
    try:
        project.import_records(rows, date_format="MDY")
        return project.export_records(), len(used)
    finally:
        sandbox.drop_project(project.token)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(90, 180), st.integers(1, 3), st.booleans(),
                          st.integers(1, 2)), min_size=1, max_size=6))
def test_calcs_from_the_checked_columns_store_what_the_row_dicts_give(sandbox, monkeypatch, records):
    rows = _rows_of(records)
    from_columns, used = _import(sandbox, monkeypatch, rows, columns=True)
    from_dicts, unused = _import(sandbox, monkeypatch, rows, columns=False)
    assert (used, unused) == (1, 0)
    assert from_columns == from_dicts


def test_computed_values_from_the_columns(sandbox, monkeypatch):
    exported, used = _import(sandbox, monkeypatch, _rows_of([(2, 120, 2, True, 1), (3, 100, 1, False, 2)]),
                             columns=True)
    assert used == 1
    row = {(r["record_id"], r["redcap_event_name"], r["redcap_repeat_instance"]): r for r in exported}
    screening = row[("1", "screening_arm_1", "")]
    # phq 2 + (2 + 1) % 4 = 3, box ticked: 6; risk reads the computed total; MDY date stored as YMD
    assert (screening["phq_total"], screening["risk"], screening["consent_date"]) == ("6", "1", "2024-02-02")
    assert (screening["phq_complete"], screening["phq_done"]) == ("0", "1")  # a clean row's complete default
    assert screening["consent_days"] == "333"  # from 2024-02-02, the converted cell
    assert row[("2", "screening_arm_1", "")]["phq_total"] == "4"  # 3 + (3 + 2) % 4, no box
    assert row[("1", "treatment_arm_1", 2)]["ses_mgkg"] == str(round(2.5 / 50, 3))  # reads its event's weight
    assert (row[("1", "followup_arm_1", 1)]["fu_done"], row[("2", "followup_arm_1", 1)]["fu_done"]) == ("1", "0")


def test_a_row_named_twice_takes_the_row_dicts(sandbox, monkeypatch):
    """The second row of a key merges into the first (the general steps): the columns are not the stored rows."""
    rows = _rows_of([(1, 110, 1, True, 1)])
    rows.append({"record_id": "1", "redcap_event_name": "visit_arm_1", "sbp": "150"})
    exported, used = _import(sandbox, monkeypatch, rows, columns=True)
    assert used == 0
    visit = next(r for r in exported if r["redcap_event_name"] == "visit_arm_1")
    assert (visit["sbp"], visit["late"]) == ("150", "300")
