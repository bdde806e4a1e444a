"""The candidate CSV written to a file (`write_csv`, what `screen --format csv --out` uses) is byte for byte the
plain path's text (`render_csv`: polars' CSV of the result table, which the golden file pins), whatever the
candidates' ids hold: separators, quotes, line breaks, formulas, non-ASCII."""

from __future__ import annotations

import csv
import io

import pytest

from trialkit.screening import reports
from trialkit.screening.reports import build_report, render_csv, write_csv

from .test_report_json_bytes import TRICKY_IDS
from .test_reports import CANDIDATES

CSV_IDS = [*TRICKY_IDS, "a,b", "two\r\nlines", "cr\ronly", '"all quoted"', "=cmd|x", "-1+2", "+1", "lead,"]


@pytest.fixture
def tricky(run):
    template = list(CANDIDATES.values())  # eligible, ineligible, pending (with and without a treatment history)
    return run({rid: template[i % len(template)] for i, rid in enumerate(CSV_IDS)})


@pytest.mark.parametrize("size", [1, 2, 3, 100_000])
def test_write_csv_is_render_csv(tricky, study, monkeypatch, size):
    monkeypatch.setattr(reports, "_CSV_SLICE", size)
    monkeypatch.setattr(reports, "_KEY_SLICE", max(1, size - 1))
    report = build_report(tricky, checklists=0, study=study)
    out = io.BytesIO()
    write_csv(report, out)
    whole = render_csv(report)
    assert out.getvalue() == whole.encode("utf-8")
    ids = [row["record_id"] for row in csv.DictReader(io.StringIO(whole, newline=""))]
    assert len(ids) == len(CSV_IDS) and "'=cmd|x" in ids and "a,b" in ids  # formulas defused, the rest as it was


def test_write_csv_of_a_report_of_the_first_rows_and_of_none(run, study):
    """Not the table build_report made (only the first rows of it), or no candidates: the plain path."""
    screening = run(CANDIDATES)
    part = build_report(screening, checklists=0, study=study, rows=2)
    out = io.BytesIO()
    write_csv(part, out)
    assert out.getvalue() == render_csv(build_report(screening, study=study)).encode("utf-8")
    empty = build_report(run({}), study=study)
    out = io.BytesIO()
    write_csv(empty, out)
    assert out.getvalue() == render_csv(empty).encode("utf-8") and out.getvalue().count(b"\n") == 1


def test_cells_are_quoted_as_polars_quotes_them():
    import polars as pl

    from trialkit.screening.reports import _csv_quoted

    cells = ["", None, "a,b", 'say "hi"', "x\ny", "cr\r", " lead", "tab\t", "é\u2028", "plain", '"', ","]
    frame = pl.DataFrame({"v": cells}, schema={"v": pl.String})
    ours = frame.select(_csv_quoted("v")).write_csv(include_header=False, quote_style="never", line_terminator="\n")
    assert ours == frame.write_csv(include_header=False, line_terminator="\n")
