"""Calculated fields on import: the frame built per kind of row (calcs.CalcPlan._frame, from the columns each
kind's calcs read) against the one frame of every calc input it replaces, and the server's warm-up.

Both ways must store the same rows: calcs that read another form's calc (computed on the reading row), a
forward reference (keeps the stored value), a checkbox, a repeating form's calc reading its event's
non-repeating row, a repeating event, a constant, and (second design) an [event][field] reference, for which the
per-kind frame is not used. Through PyCap over HTTP.
"""

from __future__ import annotations

import datetime as dt
import gc

from sandbox_data import _row

from trialkit.redcap.sandbox import ProjectSpec, calcs
from trialkit.redcap.sandbox.server import own_process
from trialkit.redcap.sandbox.storage import Storage

METADATA = [
    _row("record_id", "enrolment", label="Record ID"),
    _row("consent_date", "enrolment", validation="date_ymd"),
    _row("phq_1", "phq", "radio", choices="0, No | 1, Some | 2, Most | 3, All"),
    _row("phq_2", "phq", "radio", choices="0, No | 1, Some | 2, Most | 3, All"),
    _row("phq_flags", "phq", "checkbox", choices="1, Tired | 2, Restless"),
    _row("phq_total", "phq", "calc", choices="[phq_1] + [phq_2] + [phq_flags(1)]"),
    _row("phq_ten", "phq", "calc", choices="10"),
    _row("sbp", "vitals", validation="integer"),
    _row("risk", "vitals", "calc", choices="if([phq_total] >= 3, 1, 0)"),  # another form's calc
    _row("early", "vitals", "calc", choices="[late] + 1"),  # a later calc: its stored value
    _row("late", "vitals", "calc", choices="[sbp] * 2"),
    _row("tx_weight", "dosing", validation="number"),
    _row("ses_dose", "session", validation="number"),
    _row("ses_mgkg", "session", "calc", choices="round([ses_dose] / [tx_weight], 3)"),  # its event's row
    _row("fu_status", "followup", "radio", choices="1, Completed | 2, Lost"),
    _row("fu_done", "followup", "calc", choices="if([fu_status] = '1', 1, 0)"),
]
EVENTS = ("screening", "baseline", "treatment", "visit", "followup")
MAPPINGS = {
    "screening": ("enrolment", "phq", "vitals"),
    "baseline": ("phq",),
    "treatment": ("dosing", "session"),
    "visit": ("vitals",),
    "followup": ("followup",),
}


def _spec(metadata: list[dict[str, str]]) -> ProjectSpec:
    return ProjectSpec.classic(
        metadata,
        arms=({"arm_num": 1, "name": "Arm 1"},),
        events=tuple({"event_name": e.title(), "arm_num": 1, "unique_event_name": f"{e}_arm_1",
                      "custom_event_label": "", "event_id": 200 + i} for i, e in enumerate(EVENTS)),
        mappings=tuple({"arm_num": 1, "unique_event_name": f"{e}_arm_1", "form": f}
                       for e, forms in MAPPINGS.items() for f in forms),
        repeating=({"event_name": "treatment_arm_1", "form_name": "session", "custom_form_label": ""},
                   {"event_name": "followup_arm_1", "form_name": "", "custom_form_label": ""}),
    )


def _rows(first: int, last: int) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for i in range(first, last + 1):
        rid = str(i)
        rows.append({"record_id": rid, "redcap_event_name": "screening_arm_1", "consent_date": "2024-01-02",
                     "phq_1": str(i % 4), "phq_2": str((i + 1) % 4), "phq_flags___1": str(i % 2),
                     "sbp": str(110 + i), "late": "5"})
        rows.append({"record_id": rid, "redcap_event_name": "baseline_arm_1", "phq_1": str(i % 3)})
        rows.append({"record_id": rid, "redcap_event_name": "treatment_arm_1", "tx_weight": str(60 + i)})
        for n in (1, 2):
            rows.append({"record_id": rid, "redcap_event_name": "treatment_arm_1",
                         "redcap_repeat_instrument": "session", "redcap_repeat_instance": str(n),
                         "ses_dose": str(0.5 * n + i)})
        rows.append({"record_id": rid, "redcap_event_name": "visit_arm_1", "sbp": str(100 + i)})
        rows.append({"record_id": rid, "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": "1",
                     "fu_status": "1" if i % 3 else "2"})
    return rows


# a second batch changes inputs of stored rows: the weight read by stored sessions, a phq value, a box
CHANGES = [
    {"record_id": "1", "redcap_event_name": "treatment_arm_1", "tx_weight": "80"},
    {"record_id": "2", "redcap_event_name": "screening_arm_1", "phq_1": "3", "phq_flags___1": "1"},
    {"record_id": "3", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "new", "ses_dose": "4"},
]


def _import(sandbox, monkeypatch, metadata: list[dict[str, str]], by_kind_from: int) -> list[dict]:
    monkeypatch.setattr(calcs, "FRAME_BY_KIND_ROWS", by_kind_from)
    project = sandbox.project(sandbox.create_project(_spec(metadata)))
    try:
        assert project.import_records(_rows(1, 6)) == {"count": 6}
        assert project.import_records(CHANGES) == {"count": 3}
        return project.export_records()
    finally:
        sandbox.drop_project(project.token)


def test_calcs_from_a_frame_per_kind_of_row_store_what_one_frame_stores(sandbox, monkeypatch):
    by_kind = _import(sandbox, monkeypatch, METADATA, 0)
    assert by_kind == _import(sandbox, monkeypatch, METADATA, 10**9)
    row = {(r["record_id"], r["redcap_event_name"], r["redcap_repeat_instance"]): r for r in by_kind}
    # a session reads its event's non-repeating row, also after that row changed (80) and for a new instance
    assert row[("2", "treatment_arm_1", 1)]["ses_mgkg"] == str(round(2.5 / 62, 3))
    assert row[("1", "treatment_arm_1", 2)]["ses_mgkg"] == str(round(2 / 80, 3))
    assert row[("3", "treatment_arm_1", 3)]["ses_mgkg"] == str(round(4 / 63, 3))
    # record 2 after the change: phq_1 3 + phq_2 3 + box 1 = 7; risk reads it; early reads the stored late
    screening = row[("2", "screening_arm_1", "")]
    assert (screening["phq_total"], screening["phq_ten"], screening["risk"]) == ("7", "10", "1")
    assert (screening["late"], row[("2", "visit_arm_1", "")]["late"]) == ("224", "204")
    assert row[("3", "followup_arm_1", 1)]["fu_done"] == "0"


def test_an_event_reference_keeps_one_frame_and_its_results(sandbox, monkeypatch):
    at = next(i for i, r in enumerate(METADATA) if r["field_name"] == "late") + 1
    metadata = [*METADATA[:at], _row("sbp_change", "vitals", "calc", choices="[sbp] - [screening_arm_1][sbp]"),
                *METADATA[at:]]
    by_kind = _import(sandbox, monkeypatch, metadata, 0)
    assert by_kind == _import(sandbox, monkeypatch, metadata, 10**9)
    visit = next(r for r in by_kind if r["record_id"] == "4" and r["redcap_event_name"] == "visit_arm_1")
    assert visit["sbp_change"] == "-10"


def test_own_process_compiles_the_calcs_and_freezes_the_start_up_heap(tmp_path):
    storage = Storage(tmp_path / "sandbox.db")
    try:
        token = storage.create_project(_spec(METADATA))
        own_process(storage, [token])
        assert gc.get_freeze_count() > 0
        con = storage.connect()
        try:
            _, schema, _ = storage.project_for_token(con, token)
        finally:
            con.close()
        assert "calc_plan" in schema.__dict__  # parsed at start, kept on the design the requests use
        # and evaluated once: the same rows now compute without compiling (an import's first batch paid it)
        assert schema.calc_plan.apply({("1", "screening_arm_1", "", 0): {"sbp": "100"}}, dt.date(2025, 1, 1)) == {
            ("1", "screening_arm_1", "", 0): {"sbp": "100", "late": "200", "phq_ten": "10", "risk": "0"}}
    finally:
        gc.unfreeze()
        storage.close()
