"""CSV cells that a spreadsheet would run as formulas get an apostrophe; numbers and plain text do not."""

from __future__ import annotations

import polars as pl
import pytest

from trialkit.spreadsheet import safe_cell, safe_frame

RISKY = ["=HYPERLINK(\"http://x\")", "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+cmd|' /C calc'!A0", "\tx", "-", "+"]
PLAIN = ["0001", "-5", "+1.5", "-1e5", "-.5", "2026-10-01", "a=b", "", "pat@example.org"]


@pytest.mark.parametrize("value", RISKY)
def test_a_formula_gets_an_apostrophe(value):
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", PLAIN)
def test_numbers_and_text_stay(value):
    assert safe_cell(value) == value


def test_frame_and_cell_agree():
    values = RISKY + PLAIN
    out = safe_frame(pl.DataFrame({"v": [*values, None], "n": list(range(len(values) + 1))}))
    assert out.get_column("v").to_list() == [safe_cell(v) for v in values] + [None]
    assert out.get_column("n").to_list() == list(range(len(values) + 1))
