"""Screening results as REDCap write-back records (the eligibility_result form)."""

from __future__ import annotations

import datetime as dt

from trialkit.screening.explain import candidates
from trialkit.screening.writeback import FORM_STATUS_FIELD, WRITEBACK_FIELDS, result_records


def test_result_records_match_the_explanations(run, study):
    s = run(
        {
            "a": ({}, None),
            "b": ({**{f"madrs_{i}": "1" if i <= 2 else "0" for i in range(1, 11)}, "vs_sbp_1": "170"}, None),
            "c": ({"madrs_total": None, "madrs_10": None, "inv_date": None}, None),
        }
    )
    at = dt.datetime(2026, 11, 2, 3, 15, 0)
    rows = {r["record_id"]: r for r in result_records(s, screened_at=at, event="screening_arm_1").to_dicts()}
    worded = result_records(s, screened_at=at, study=study).get_column("elig_summary").to_list()
    assert set(rows["a"]) == {"record_id", "redcap_event_name", *WRITEBACK_FIELDS, FORM_STATUS_FIELD}
    assert {r[FORM_STATUS_FIELD] for r in rows.values()} == {"2"}  # Complete (green in REDCap), not Incomplete
    for cand in candidates(s):
        r = rows[cand.record_id]
        assert r["elig_disposition"] == cand.disposition
        assert r["elig_primary_reason"] == (cand.primary_reason or "")
        assert r["elig_reasons"] == " ".join(cand.reasons)
        assert r["elig_still_needed"] == " ".join(cand.still_needed)
        assert r["elig_as_of"] == "2026-11-02" and r["elig_screened_at"] == "2026-11-02 03:15:00"
        assert r["elig_ruleset_sha256"] == s.rules.stamp()["sha256"]
    assert rows["b"]["elig_reasons"] == "I5 E5"
    assert rows["c"]["elig_still_needed"] == "madrs_10 inv_date"
    # the same in words, for a coordinator reading REDCap (labels from the study; names without it)
    assert worded == [
        "Eligible",
        # every deciding criterion in words, not only the first
        "Ineligible: I5 MADRS total >= 20 at screening, assessed within 14 days before the screening date. Also: E5 "
        "Uncontrolled hypertension: either screening reading with systolic > 160 or diastolic > 90 mmHg.",
        "Pending: still needed: MADRS: MADRS item 10; Investigator safety review: Date of the review",
    ]
    assert rows["c"]["elig_summary"] == "Pending: still needed: madrs: madrs_10; investigator_review: inv_date"
    assert all(isinstance(v, str) for r in rows.values() for v in r.values())
