"""A value that fails its field's checks never decides a criterion: the criterion is unknown, the candidate pending,
and the checklist says which field to correct and why (never the value itself), apart from the blank fields to
collect."""

from __future__ import annotations

import re

import polars as pl
import pytest

from trialkit.records import IntakeData
from trialkit.screening.engine import screen
from trialkit.screening.explain import candidates

from .conftest import AS_OF, ELIGIBLE, TRIALS, flat_rows


def _one(screening, rid="0001"):
    return next(c for c in candidates(screening) if c.record_id == rid)


def _outcome(cand, cid):
    return next(o for o in cand.criteria if o.id == cid)


@pytest.mark.parametrize(
    ("override", "criterion", "field", "why"),
    [
        # a systolic BP of 16 typed for 160: E5 must not be "not met" on it
        ({"vs_sbp_1": "16"}, "E5", "vs_sbp_1", "outside 60-260: confirm the value"),
        ({"vs_dbp_2": "9000"}, "E5", "vs_dbp_2", "outside"),
        # a labels export: "Yes" is not a code
        ({"mini_mdd": "Yes"}, "I2", "mini_mdd", "not one of the codes"),
        ({"ketamine_hypersensitivity": "No"}, "E12", "ketamine_hypersensitivity", "labels export"),
        # dates as a spreadsheet writes them
        ({"episode_start_date": "11/02/2025"}, "I3", "episode_start_date", "unreadable value (expected YYYY-MM-DD)"),
        ({"madrs_date": "2026-10-12 00:00:00"}, "I5", "madrs_date", "expected YYYY-MM-DD"),
        ({"screening_date": "11/02/2026"}, "I1", "screening_date", "expected YYYY-MM-DD"),
        ({"benzo_lorazepam_eq": "two"}, "E9", "benzo_lorazepam_eq", "unreadable value"),
    ],
)
def test_an_unusable_value_leaves_its_criterion_unknown_and_says_what_to_correct(
    run, override, criterion, field, why
):
    cand = _one(run({"0001": (override, None)}))
    assert cand.disposition == "pending"
    outcome = _outcome(cand, criterion)
    assert outcome.result == "unknown"
    assert field not in outcome.missing, "a filled-in field is not 'still needed'"
    assert field not in cand.still_needed
    assert any(t.startswith(f"{field}: ") and why in t for t in outcome.to_correct), outcome.to_correct
    assert any(t.startswith(f"{field}: ") for t in cand.to_correct)
    for value in override.values():
        assert value not in " ".join(cand.to_correct), "the value itself is never quoted"


def test_an_out_of_range_item_blanks_the_total_it_feeds(run):
    # madrs_3 ranges 0-6: 9 is a typo; the total of 27 over it must not meet I5
    over = {f"madrs_{i}": "2" for i in range(1, 11)} | {"madrs_3": "9", "madrs_total": "27"}
    cand = _one(run({"0001": (over, None)}))
    assert cand.disposition == "pending"
    i5 = _outcome(cand, "I5")
    assert i5.result == "unknown"
    assert any(t.startswith("madrs_3: ") for t in i5.to_correct), i5.to_correct


def test_a_treatment_trial_filed_under_the_wrong_event_is_not_counted(study, rules):
    # one failed trial at screening, the second filed under baseline, where the ATRQ does not belong
    rows = flat_rows({"0001": (ELIGIBLE, TRIALS[:1])})
    misplaced = {
        "record_id": "0001",
        "redcap_event_name": "baseline_arm_1",
        "redcap_repeat_instrument": "atrq",
        "redcap_repeat_instance": "2",
        **TRIALS[1],
    }
    rows = pl.concat([rows, pl.DataFrame([misplaced])], how="diagonal")
    cand = _one(screen(rules, IntakeData.from_frame(rows, study), as_of=AS_OF))
    assert cand.disposition == "pending"
    i4 = _outcome(cand, "I4")
    assert i4.result == "unknown"
    assert any("atrq #2, baseline_arm_1" in t and "does not belong" in t for t in i4.to_correct), i4.to_correct


def test_a_valid_reading_still_decides_beside_an_invalid_one(run):
    # E5 is met by the second reading whatever the first one was: ineligible, nothing to correct
    cand = _one(run({"0001": ({"vs_sbp_1": "16", "vs_sbp_2": "175"}, None)}))
    assert cand.disposition == "ineligible" and cand.primary_reason == "E5"
    assert cand.to_correct == () and cand.still_needed == ()


def test_the_result_does_not_depend_on_the_other_candidates(run):
    bad = ({"vs_sbp_1": "16", "mini_mdd": "Yes"}, None)
    alone = _one(run({"0001": bad}))
    among = _one(run({"0000": ({}, None), "0001": bad, "0002": ({"vs_sbp_1": "170"}, None)}))
    assert alone == among


def test_screening_lists_the_problems_without_values(run):
    s = run({"0001": ({"vs_sbp_1": "16", "email": "not an email"}, None)})
    assert s.problems is not None
    assert s.problems.filter(pl.col("field") == "vs_sbp_1").get_column("check").to_list() == ["range"]
    assert "16" not in " ".join(s.problems.get_column("problem").to_list())


def test_every_report_format_says_what_to_correct(run):
    from trialkit.screening.reports import (
        build_report,
        render_csv,
        render_html,
        render_json,
        render_screening_log,
        render_table,
    )

    report = build_report(run({"0001": ({"vs_sbp_1": "16"}, None)}))
    why = "vs_sbp_1: outside 60-260: confirm the value"
    for render in (render_csv, render_html, render_json, render_screening_log, render_table):
        text = render(report)
        assert why in text, render.__name__
        assert "vs_sbp_1 = 16" not in text and "\"vs_sbp_1\": 16" not in text


@pytest.mark.parametrize("others", [{}, {"0002": ({"screening_date": "11/02/2026"}, None)}], ids=["alone", "among"])
def test_a_disputed_reference_date_never_falls_back_to_the_as_of_date(study, rules, others):
    # two screening rows of 0001 disagree on screening_date: the date is missing (the notes say so), and 'today'
    # must not silently become the --as-of date. It did so only when no other candidate had an unreadable date,
    # so the result depended on who was screened alongside.
    rows = flat_rows({"0001": ({**ELIGIBLE, "dob": "2008-10-30"}, TRIALS),
                      **{rid: ({**ELIGIBLE, **over}, TRIALS) for rid, (over, _) in others.items()}})
    again = rows.filter(pl.col("record_id") == "0001").head(1).with_columns(screening_date=pl.lit("2026-10-20"))
    data = IntakeData.from_frame(pl.concat([rows, again], how="vertical"), study)
    cand = _one(screen(rules, data, as_of=AS_OF))
    # 18 on 2026-10-30: under 18 on either recorded date, 18 on the as-of date
    assert _outcome(cand, "I1").result == "unknown"
    assert cand.disposition == "pending"


def test_a_value_the_rows_disagree_on_is_to_correct_not_still_needed(study, rules):
    # two screening rows of 0001 give two systolic readings: the value is treated as missing, and the coordinator
    # was asked to collect vs_sbp_1 (filled in twice) instead of to settle it
    rows = flat_rows({"0001": (ELIGIBLE, TRIALS)})
    again = rows.filter(pl.col("record_id") == "0001").head(1).with_columns(vs_sbp_1=pl.lit("175"))
    cand = _one(screen(rules, IntakeData.from_frame(pl.concat([rows, again], how="vertical"), study), as_of=AS_OF))
    e5 = _outcome(cand, "E5")
    assert e5.result == "unknown"
    assert "vs_sbp_1" not in e5.missing and "vs_sbp_1" not in cand.still_needed
    assert any(t.startswith("vs_sbp_1: ") and "rows disagree" in t for t in cand.to_correct), cand.to_correct
    assert "175" not in " ".join(cand.to_correct)


def test_a_checklist_never_calls_a_value_to_correct_blank(run, study):
    # the field holds a value that could not be used: "blank" sent the coordinator looking for an empty field
    from trialkit.screening.reports import build_report, render_json, render_table

    report = build_report(run({"0001": ({"mini_mdd": "Yes", "madrs_date": None}, None)}), study=study)
    doc = __import__("json").loads(render_json(report))
    crit = {c["id"]: c for c in doc["candidates"][0]["criteria"]}
    said = crit["I2"]["values_text"]["mini_mdd"]
    assert "blank" not in said and "to correct" in said, said
    assert crit["I5"]["values_text"]["madrs_date"].endswith(": blank")  # a blank field is still blank
    table = render_table(report, details=True)
    assert "(mini_mdd): not usable, to correct" in table
    assert "(mini_mdd): blank" not in table


def test_the_items_to_correct_are_told_apart(run, study):
    # a reason holds commas ("not one of the codes 1, 0"): joined with ", " the table and the page ran the
    # items together; they are separated with "; " as the still-needed items and the page's own summary are
    from trialkit.screening.reports import build_report, render_html, render_table

    report = build_report(run({"0001": ({"mini_mdd": "Yes", "vs_sbp_1": "16"}, None)}), study=study)
    one = "mini_mdd: not one of the codes 1, 0"
    two = "vs_sbp_1: outside 60-260: confirm the value"
    table = render_table(report, details=True)
    assert re.search(re.escape(one) + r"[^;\n]*; " + re.escape(two), table)
    assert ", vs_sbp_1:" not in table
    html = render_html(report)
    assert re.search(re.escape(one) + r"[^;<]*; " + re.escape(two), html)
    assert ", vs_sbp_1:" not in html


def test_the_note_on_a_mistyped_calculated_value_says_it_was_computed_instead(tmp_path, study, rules):
    # BMI typed as text beside its weight and height: the BMI is computed from them and E8 is decided on it, but
    # the note said "not used: the criteria reading it are unknown"
    from trialkit.screening.run import screen_file

    path = tmp_path / "intake.csv"
    flat_rows({"0001": ({**ELIGIBLE, "vs_bmi": "twenty"}, TRIALS)}).write_csv(path)
    screening = screen_file(path, rules, study, as_of=AS_OF)
    cand = _one(screening)
    assert _outcome(cand, "E8").result == "not_met"
    note = next(n for n in screening.notes if n.startswith("vs_bmi: "))
    assert not note.endswith("not used: the criteria reading it are unknown"), note
    assert "not used: computed from its inputs where they were all there" in note


def test_the_still_needed_counts_leave_out_the_values_to_correct(run):
    # 0001's mini_mdd is filled in but unusable: it is to correct, not still needed, in the candidate's own
    # lists, and the summary counted it as a field (and a form) still needed all the same
    from trialkit.screening.explain import summarise

    screening = run({"0001": ({"mini_mdd": "Yes"}, None), "0002": ({"madrs_10": None, "madrs_total": None}, None)})
    first = _one(screening)
    assert first.still_needed == () and first.to_correct
    summary = summarise(screening)
    assert [m.field for m in summary.missing] == ["madrs_10"]
    assert [form for form, _ in summary.missing_forms] == ["madrs"]


def test_a_treatment_trial_with_a_value_to_correct_is_not_said_to_be_blank(run):
    # the trial's dose is filled in but out of range: "unknown (atrq_dose blank)" sent the coordinator to fill in
    # a dose that is there
    cand = _one(run({"0001": ({}, [{**TRIALS[0], "atrq_dose": "99999"}, TRIALS[1]])}))
    i4 = _outcome(cand, "I4")
    assert i4.result == "unknown" and any(t.startswith("atrq_dose (atrq #1") for t in i4.to_correct)
    detail = i4.values["atrq instances counted"]
    assert "#1 sertraline: unknown (atrq_dose not usable, to correct)" in detail, detail
