"""A report built for a view that lists the first candidates only (`build_report(rows=N)`: the terminal table,
the HTML page) shows exactly what the report of every candidate shows, counts and sites included; a writer
that lists every candidate still gets every one."""

from __future__ import annotations

import io

import polars as pl
import pytest

from trialkit.screening.reports import (
    build_report,
    render_csv,
    render_html,
    render_json,
    render_screening_log,
    render_table,
    site_counts,
    write_json,
)

from .conftest import AS_OF, ELIGIBLE, TRIALS, flat_rows

NO_MADRS = {"madrs_total": None, "madrs_10": None}
CANDIDATES = {
    "1": ({}, TRIALS),  # eligible
    "2": (NO_MADRS, TRIALS),  # pending: MADRS items
    "3": ({"vs_sbp_1": "175"}, TRIALS),  # ineligible
    "4": ({}, [TRIALS[0], {**TRIALS[1], "atrq_improvement": None}]),  # pending: one instance's field
    "5": ({"vs_sbp_1": "16", "mini_mdd": "Yes"}, TRIALS),  # values to correct
    "6": ({"current_ad": "1", "current_ad_stable_date": None}, []),  # pending, no history
    "7": ({"sex": "1", "childbearing_potential": "1", "pregnant": "1"}, TRIALS),  # ineligible
}
SITES = {"1": "north", "2": "south", "3": "south", "4": "north", "5": "west", "6": "south", "7": "north"}


@pytest.fixture
def screening(tmp_path, study, rules):
    from trialkit.screening.run import screen_file

    frame = flat_rows({rid: ({**ELIGIBLE, **over}, trials) for rid, (over, trials) in CANDIDATES.items()})
    frame = frame.with_columns(pl.col("record_id").replace_strict(SITES).alias("redcap_data_access_group"))
    path = tmp_path / "intake.csv"
    frame.write_csv(path)
    return screen_file(path, rules, study, as_of=AS_OF)


@pytest.mark.parametrize("head", [0, 1, 3, 6])
def test_the_views_of_the_first_rows_are_the_full_reports(screening, study, head):
    full = build_report(screening, study=study, source="intake.csv")
    part = build_report(screening, study=study, source="intake.csv", rows=head)
    assert part.table is not None and part.table.height == head  # only the rows the views show were built
    assert full.table is not None and full.table.height == len(CANDIDATES)
    for limit in {0, 1, head, head + 2, None}:
        assert render_table(part, limit=limit) == render_table(full, limit=limit)
    assert render_table(part, limit=head, details=True) == render_table(full, limit=head, details=True)
    assert render_html(part, max_rows=head, generated_at="t") == render_html(full, max_rows=head, generated_at="t")
    assert site_counts(part) == site_counts(full)
    assert {s["site"] for s in site_counts(part)} == {"north", "south", "west"}


def test_writers_of_every_candidate_get_every_candidate(screening, study):
    """A report of the first rows, handed to a writer of every candidate, builds the rest: never a cut list."""
    full = build_report(screening, study=study)
    part = build_report(screening, study=study, rows=2)
    assert part.rows.equals(full.rows) and part.rows.height == len(CANDIDATES)
    for render in (render_csv, render_json, render_screening_log, render_html):
        assert render(part) == render(full)
    out = io.BytesIO()
    write_json(part, out)
    assert out.getvalue() == render_json(full).encode("utf-8")


@pytest.mark.parametrize(("size", "checklists"), [(1, 2), (3, 0), (100_000, 2)])
def test_a_table_without_labels_writes_what_the_whole_table_writes(screening, study, monkeypatch, size, checklists):
    """`build_report(labels=False)` (the CLI's file writers and the screening log): the criterion labels are added
    a slice at a time from the result codes, or not needed; every writer and view gives the plain path's bytes."""
    from trialkit.screening import reports
    from trialkit.screening.reports import write_csv, write_screening_log

    monkeypatch.setattr(reports, "_CSV_SLICE", size)
    monkeypatch.setattr(reports, "_JSON_SLICE", size)
    full = build_report(screening, study=study, source="intake.csv", checklists=checklists)
    bare = build_report(screening, study=study, source="intake.csv", checklists=checklists, labels=False)
    assert bare.table is not None and "I1" not in bare.table.columns and "I1" in full.table.columns
    for write, render in ((write_csv, render_csv), (write_json, render_json), (write_screening_log, None)):
        out, plain = io.BytesIO(), io.BytesIO()
        write(bare, out)
        write(full, plain)
        assert out.getvalue() == plain.getvalue()
        if render is not None:
            assert out.getvalue() == render(full).encode("utf-8")
    assert render_screening_log(bare) == render_screening_log(full)
    for limit in (0, 2, None):
        assert render_table(bare, limit=limit) == render_table(full, limit=limit)
    assert render_html(bare, max_rows=3, generated_at="t") == render_html(full, max_rows=3, generated_at="t")
    assert bare.head(3).equals(full.head(3))
    assert "rows" not in vars(bare)  # nothing above had the whole table with labels built
    assert bare.rows.equals(full.rows)


def test_a_report_without_checklists_needs_only_a_few_of_the_candidates_columns(screening, study):
    """without_checklist_values keeps the id, the site and the log's consent fields and reference date: every
    report written without checklists (CSV, screening log, terminal table, counts) is the same without the rest."""
    from trialkit.screening.reports import without_checklist_values

    slim = without_checklist_values(screening)
    assert slim.data.width < 10 < screening.data.width
    assert "redcap_data_access_group" in slim.data.columns and "consent_date" in slim.data.columns
    full = build_report(screening, checklists=0, study=study, source="intake.csv")
    part = build_report(slim, checklists=0, study=study, source="intake.csv")
    assert render_csv(part) == render_csv(full)
    assert render_screening_log(part) == render_screening_log(full)
    assert render_table(part, limit=None) == render_table(full, limit=None)
    assert site_counts(part) == site_counts(full)
