"""Screening on intake that is not clean: a cell that is not a valid value is missing, never a decision."""

from __future__ import annotations

import polars as pl

from trialkit.records import IntakeData
from trialkit.screening.engine import screen
from trialkit.screening.explain import candidates

from .conftest import AS_OF, ELIGIBLE, TRIALS, flat_rows


def _screen(study, rules, frame: pl.DataFrame):
    intake = IntakeData.from_frame(frame, study)
    return intake, {c.record_id: c for c in candidates(screen(rules, intake, as_of=AS_OF))}


def _result(c, cid):
    return next(o for o in c.criteria if o.id == cid)


def test_an_invalid_code_is_missing_not_a_no(study, rules):
    # "2" in a yes/no field is no answer: E12 (ketamine hypersensitivity) must not read it as "not yes"
    for value in ("2", "Yes", " 1", "1.0"):
        _, got = _screen(study, rules, flat_rows({"c": ({**ELIGIBLE, "ketamine_hypersensitivity": value}, TRIALS)}))
        e12 = _result(got["c"], "E12")
        assert (got["c"].disposition, e12.result, e12.missing) == ("pending", "unknown", ()), value
        # filled in, so not "still needed": to be corrected, and the report says why
        assert e12.to_correct == ("ketamine_hypersensitivity: not one of the codes 1, 0 (a labels export? "
                                  "export raw data)",), value


def test_a_number_too_large_to_be_a_number_is_missing(study, rules):
    # "1e400" reads as infinity: it would pass every threshold. A benzodiazepine dose like that is no dose.
    _, got = _screen(study, rules, flat_rows({"c": ({**ELIGIBLE, "benzo_lorazepam_eq": "1e400"}, TRIALS)}))
    e9 = _result(got["c"], "E9")
    assert (e9.result, e9.missing) == ("unknown", ())
    assert e9.to_correct == ("benzo_lorazepam_eq: unreadable value (expected a number)",)


def test_rows_that_disagree_are_neither_trusted_and_said_so(study, rules):
    frame = flat_rows({"c": (ELIGIBLE, TRIALS)})
    screening_row = frame.filter(pl.col("redcap_repeat_instrument").is_null())
    twin = screening_row.with_columns(pl.lit("1").alias("ketamine_hypersensitivity"))
    for rows in (pl.concat([frame, twin]), pl.concat([twin, frame])):  # whichever comes first
        intake, got = _screen(study, rules, rows)
        e12 = _result(got["c"], "E12")
        assert (got["c"].disposition, e12.result) == ("pending", "unknown")
        assert any("rows disagree on ketamine_hypersensitivity" in n for n in intake.notes)
    # identical duplicates are one row: nothing to say
    intake, got = _screen(study, rules, pl.concat([frame, screening_row]))
    assert got["c"].disposition == "eligible" and not any("disagree" in n for n in intake.notes)


def test_repeating_rows_without_instance_numbers_stay_separate_trials(study, rules):
    frame = flat_rows({"c": (ELIGIBLE, TRIALS)})
    for blank in (None, "new", "0", "1.5"):
        rows = frame.with_columns(
            pl.when(pl.col("redcap_repeat_instrument").is_not_null()).then(pl.lit(blank, pl.String))
            .otherwise(pl.col("redcap_repeat_instance")).alias("redcap_repeat_instance")
        )
        intake, got = _screen(study, rules, rows)
        assert intake.instances["atrq"].get_column("redcap_repeat_instance").to_list() == [1, 2], blank
        assert _result(got["c"], "I4").result == "met", blank
        assert any("without a usable redcap_repeat_instance" in n for n in intake.notes)


def test_an_unreadable_screening_date_leaves_today_unknown(study, rules):
    # the windows are measured from the screening date: another day (the as-of date) could decide them wrongly
    _, got = _screen(study, rules, flat_rows({"c": ({**ELIGIBLE, "screening_date": "2026-02-30"}, TRIALS)}))
    c = got["c"]
    assert c.disposition == "pending" and "screening_date" not in c.still_needed
    assert "screening_date: unreadable value (expected YYYY-MM-DD)" in c.to_correct
    i5 = _result(c, "I5")
    assert i5.result == "unknown" and i5.missing == () and i5.to_correct == (
        "screening_date: unreadable value (expected YYYY-MM-DD)",)
    # a blank screening date still means the as-of date, as documented
    _, got = _screen(study, rules, flat_rows({"c": ({**ELIGIBLE, "screening_date": None}, TRIALS)}))
    assert "screening_date" not in got["c"].still_needed


def test_a_record_id_written_as_a_formula_is_defused_in_csv_outputs(study, rules):
    from trialkit.screening.reports import build_report, render_csv, render_screening_log

    frame = flat_rows({"=cmd|' /C calc'!A0": (ELIGIBLE, TRIALS)})
    intake = IntakeData.from_frame(frame, study)
    report = build_report(screen(rules, intake, as_of=AS_OF))
    for text in (render_csv(report), render_screening_log(report)):
        assert "'=cmd|" in text and "\n=cmd" not in text and ",=cmd" not in text
