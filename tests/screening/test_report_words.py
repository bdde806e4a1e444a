"""Reports speak the protocol's and the forms' words: still-needed items grouped by form and instance, labels
beside names and codes, the source and trialkit version, and counts per site when the data has REDCap's data
access group."""

from __future__ import annotations

import json
import re

import polars as pl

from trialkit.screening.reports import build_report, render_html, render_json, render_table, site_counts
from trialkit.screening.words import describe_needed, form_items, vocabulary

from .conftest import AS_OF, ELIGIBLE, TRIALS, flat_rows

NO_MADRS = {"madrs_date": None, "madrs_total": None, **{f"madrs_{i}": None for i in range(1, 11)}}


def _needed(report, record):
    row = report.rows.filter(pl.col("record_id") == record).row(0, named=True)
    return row["still_needed_text"].split(";") if row["still_needed_text"] else []


def test_a_form_left_blank_is_one_item_not_eleven(run, study):
    part = {"madrs_10": None, "madrs_9": None, "madrs_total": None}
    report = build_report(run({"a": (NO_MADRS, None), "b": (part, None)}), study=study)
    assert report.rows.row(0, named=True)["still_needed"].count(";") == 10  # the names stay, for scripts
    assert _needed(report, "a") == ["MADRS not done (11 fields)"]
    # part of a form: its fields by their labels
    assert _needed(report, "b") == ["MADRS: MADRS item 9, MADRS item 10"]
    assert json.loads(render_json(report))["candidates"][0]["still_needed_text"] == ["MADRS not done (11 fields)"]


def test_an_instance_field_names_the_instance(run, study):
    trials = [TRIALS[0], {**TRIALS[1], "atrq_improvement": None}]
    report = build_report(run({"a": ({}, trials)}), study=study)
    assert report.rows.row(0, named=True)["still_needed"] == "atrq.atrq_improvement"
    assert _needed(report, "a") == [
        "Antidepressant treatment history #2 (Venlafaxine): Improvement of depressive symptoms on this drug (%)"
    ]


def test_fields_are_filed_under_the_form_that_holds_them(run, study, rules):
    vocab = vocabulary(study)
    assert vocab.form_of["screening_date"] == "consent"
    items = form_items(rules, vocab)
    assert describe_needed(["screening_date", "madrs_10"], vocab, items) == [
        "Informed consent: Screening date",
        "MADRS: MADRS item 10",
    ]
    # the reference date's item reads an internal column; an unreadable date is to correct, not still needed, in
    # the summary's counts as in the candidate's lists (neither under its form nor under "other")
    report = build_report(run({"a": ({"screening_date": "2026-13-45"}, None)}), study=study)
    assert report.candidates[0].to_correct and not report.candidates[0].still_needed
    assert dict(report.summary.missing_forms) == {}


def test_without_the_study_reports_fall_back_to_names(run):
    report = build_report(run({"a": ({"madrs_10": None, "madrs_total": None}, None)}))
    assert _needed(report, "a") == ["madrs: madrs_10"]


def test_the_terminal_checklist_shows_words_beside_codes(run, study):
    report = build_report(run({"a": ({}, None)}), study=study, source="intake.csv")
    text = render_table(report, details=True)
    assert "Data: intake.csv" in text and "trialkit " in text.splitlines()[0]
    assert "I2   inclusion met            DSM-5 major depressive disorder" in text
    assert "MINI: major depressive disorder (mini_mdd): Yes" in text


def test_counts_per_site_when_the_data_has_a_data_access_group(tmp_path, study, rules):
    from trialkit.screening.run import screen_file

    frame = flat_rows({
        "1": ({**ELIGIBLE}, TRIALS),
        "2": ({**ELIGIBLE, "madrs_10": None, "madrs_total": None}, TRIALS),
        "3": ({**ELIGIBLE, "vs_sbp_1": "175"}, TRIALS),
    })
    sites = {"1": "north", "2": "north", "3": "south"}
    frame = frame.with_columns(pl.col("record_id").replace_strict(sites).alias("redcap_data_access_group"))
    path = tmp_path / "intake.csv"
    frame.write_csv(path)
    report = build_report(screen_file(path, rules, study, as_of=AS_OF), study=study, source=str(path))
    counts = {s["site"]: s for s in site_counts(report)}
    assert {k: (v["assessed"], v["eligible"], v["ineligible"], v["pending"]) for k, v in counts.items()} == {
        "north": (2, 1, 0, 1),
        "south": (1, 0, 1, 0),
    }
    assert counts["south"]["top_reason"] == ("E5", 1)
    by_site = json.loads(render_json(report))["by_site"]
    got = [(x["site"], x["assessed"], x["top_reason"]) for x in by_site]
    assert got == [("north", 2, None), ("south", 1, ["E5", 1])]
    assert "  north                         2      1      0      1" in render_table(report)
    html = render_html(report)
    assert 'id="sites"' in html and '<option value="south">south</option>' in html
    assert '<tr data-disposition="ineligible" data-reasons="E5" data-forms="" data-site="south"' in html


def test_no_site_section_without_a_data_access_group(run, study):
    report = build_report(run({"a": ({}, None)}), study=study)
    assert site_counts(report) == [] and 'id="sites"' not in render_html(report)


def test_a_treatment_history_criterion_says_why_each_trial_did_not_count(run, study):
    short = [TRIALS[0], {**TRIALS[1], "atrq_duration": "4"}]
    report = build_report(run({"a": ({}, short)}), study=study)
    doc = json.loads(render_json(report))
    i4 = next(x for x in doc["candidates"][0]["criteria"] if x["id"] == "I4")
    assert i4["values"]["atrq instances counted"] == "#1 sertraline: yes; #2 venlafaxine: no (atrq_duration 4 < 6)"
    assert i4["values_text"]["atrq instances counted"] == (
        "Antidepressant treatment history: which counted: "
        "#1 sertraline: counted; #2 venlafaxine: not counted (Duration (weeks) 4 < 6)"
    )
    assert "#2 venlafaxine: not counted (Duration (weeks) 4 &lt; 6)" in render_html(report)


def test_each_candidate_is_flagged_with_the_values_that_could_not_be_used(run, study):
    report = build_report(run({"a": ({}, None), "b": ({"vs_sbp_1": "16", "mini_mdd": "Yes"}, None)}), study=study)
    html = render_html(report)
    row = r'<tr data-disposition="[^"]*"[^>]*data-record="(\w+)">\s*<td data-label="record">(.*?)</td>'
    rows = re.findall(row, html, re.S)
    flags = {rid: "not usable" in cell for rid, cell in rows}
    assert flags == {"a": False, "b": True}
    assert "2 values could not be used" in html  # in b's checklist header


def test_values_put_in_words_once_are_the_same_words(study, rules):
    """Checklists of many candidates look each (name, value) up once: equal keys that are not the same words
    (1, 1.0 and True; 0.0 and -0.0; a code and a number) each keep their own."""
    from trialkit.screening.outcomes import CriterionOutcome
    from trialkit.screening.reports import value_words, value_words_once

    vocab = vocabulary(study, rules)
    samples = [
        {"mini_mdd": "1", "madrs_total": 20, "today": "2026-10-25"},
        {"mini_mdd": 1, "madrs_total": 20.0, "vs_bmi": True},
        {"mini_mdd": 1.0, "madrs_total": -0.0, "vs_bmi": 1},
        {"mini_mdd": True, "madrs_total": 0.0, "vs_bmi": None, "dob": "***"},
        {"mini_mdd": None, "x": [1, 2], "atrq instances counted": "#1 sertraline: no (atrq_duration 4 < 6)"},
        {"mini_mdd": "0", "x": [1, 2], "atrq instances counted": "***", "=len": 0.1 + 0.2},
    ]
    outcomes = [CriterionOutcome("I2", "inclusion", "met", values=v) for v in samples]
    words = value_words_once(vocab)
    for o in outcomes + outcomes[::-1]:
        assert words(o) == value_words(o, vocab)
    assert [w[2] for w in words(outcomes[2])][1:] == ["-0.0", "1"]


def test_the_site_filter_finds_the_candidates_of_no_group(tmp_path, study, rules):
    # the site table and the filter call a candidate without a data access group "(no group)"; its row in the
    # candidate table said data-site="", so choosing "(no group)" in the page's filter showed nobody
    from trialkit.screening.run import screen_file

    frame = flat_rows({"1": ({**ELIGIBLE}, TRIALS), "2": ({**ELIGIBLE}, TRIALS)})
    frame = frame.with_columns(
        pl.when(pl.col("record_id") == "1").then(pl.lit("north")).alias("redcap_data_access_group")
    )
    path = tmp_path / "intake.csv"
    frame.write_csv(path)
    html = render_html(build_report(screen_file(path, rules, study, as_of=AS_OF), study=study, source=str(path)))
    assert '<option value="(no group)">(no group)</option>' in html
    row = re.search(r'<tr data-disposition="eligible"[^>]*data-record="2">', html)
    assert row is not None and 'data-site="(no group)"' in row.group(0), row
    assert '<td data-label="site">(no group)</td>' in html
