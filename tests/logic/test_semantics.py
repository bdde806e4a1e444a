"""Runs the semantics table (tests/logic/logic_semantics_table.py) in the modes each row names."""

from __future__ import annotations

import math

import polars as pl
import pytest
from logic_semantics_table import AS_OF, TABLE

from trialkit.logic import evaluate, parse

MISSING_CODES = ("UNK", "NA")


def _cases():
    for expr, record, mode, expected in TABLE:
        modes = ("redcap", "kleene") if mode == "both" else (mode,)
        for m in modes:
            yield pytest.param(expr, record, m, expected, id=f"{m}:{expr}:{record}")


def _run(expr: str, record: dict, mode: str):
    frame = pl.DataFrame({"record_id": ["1"], **{k: [v] for k, v in record.items()}})
    result = evaluate(parse(expr), frame, mode=mode, as_of=AS_OF, missing_codes=MISSING_CODES)
    assert result.values.len() == 1
    return result.values[0]


@pytest.mark.parametrize(("expr", "record", "mode", "expected"), list(_cases()))
def test_semantics_table(expr, record, mode, expected):
    got = _run(expr, record, mode)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert got == expected if expected is not None else got is None, f"{expr} with {record}: got {got!r}"
        if isinstance(expected, bool):
            assert isinstance(got, bool)
    else:
        assert got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), f"{expr}: {got!r}"


def test_table_covers_every_function():
    """Every REDCap function the language knows appears in at least one table row."""
    from trialkit.logic import FUNCTIONS

    used = " ".join(row[0] for row in TABLE)
    missing = [name for name, spec in FUNCTIONS.items() if not spec.extension and f"{name}(" not in used]
    assert missing == []


def test_datediff_years_are_not_calendar_age():
    # 2001-01-01 .. 2019-01-01 holds 4 leap days: 6574 days = 17.999 years of 365.2425 days, calendar age 18.
    assert _run("rounddown(datediff('2001-01-01', '2019-01-01', 'y'))", {"a": "1"}, "redcap") == 17
    assert _run("age_at_date('2001-01-01', '2019-01-01')", {"a": "1"}, "redcap") == 18
