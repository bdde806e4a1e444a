"""round/roundup/rounddown give the double nearest REDCap's decimal result, exactly (compared by repr)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.logic import evaluate, parse
from trialkit.logic.rounding import php_round, round_value

# (expression over [x] = the text, expected repr). PHP's documented examples and REDCap's tricky cases.
CASES = [
    ("round([x], 1)", "24.2214", "24.2"),
    ("round([x], 2)", "1.005", "1.01"),  # stored as 1.00499999999999989...: the decimal as written decides
    ("round([x], 2)", "-1.005", "-1.01"),
    ("round([x], 2)", "2.675", "2.68"),
    ("round([x], 2)", "1.015", "1.02"),
    ("round([x], 2)", "0.285", "0.29"),
    ("round([x], 2)", "5.045", "5.05"),
    ("round([x], 2)", "5.055", "5.06"),
    ("round([x], 3)", "-0.0445", "-0.045"),
    ("round([x])", "2.5", "3.0"),
    ("round([x])", "-2.5", "-3.0"),
    ("round([x], 0)", "3.4", "3.0"),
    ("round([x], 0)", "3.6", "4.0"),
    ("round([x], 0)", "-0.4", "-0.0"),
    ("round([x], -2)", "345", "300.0"),
    ("round([x], -3)", "345", "0.0"),
    ("round([x], -3)", "678", "1000.0"),
    ("round([x], -3)", "1241757", "1242000.0"),
    ("round([x], -2)", "-1250", "-1300.0"),
    ("round([x], 20)", "1.23456789", "1.23456789"),  # more places than the value has: unchanged
    ("round([x], 20)", "1.23456789e-10", "1.23456789e-10"),
    ("round([x], 25)", "1.5e-24", "1.5e-24"),
    ("round([x], 1)", "1234567890123456.7", "1234567890123456.8"),  # beyond 15 digits: nothing left to round
    ("round([x], 2)", "123456789.125", "123456789.13"),
    ("round([x] / 3, 4)", "10", "3.3333"),
    ("round([x] * 3, 1)", "1.1", "3.3"),  # 3.3000000000000003 before rounding
    ("round([x], 1.9)", "2.25", "2.3"),  # places are truncated like PHP's (int): 1
    ("roundup([x], 1)", "1.21", "1.3"),
    ("roundup([x], 1)", "-1.21", "-1.2"),
    ("roundup([x] * 100)", "1.1", "110.0"),  # 110.00000000000001: binary noise is not rounded up
    ("roundup([x], 2)", "24.2214", "24.23"),
    ("rounddown([x], 1)", "1.29", "1.2"),
    ("rounddown([x], 1)", "-1.21", "-1.3"),
    ("rounddown([x] * 100)", "0.285", "28.0"),  # 28.499999999999996
    ("rounddown([x] * 3, 1)", "1.1", "3.3"),  # 3.3000000000000003
    ("rounddown([x] / 7)", "41", "5.0"),
]


def _values(expr: str, x: str, rows: int) -> list:
    frame = pl.DataFrame({"record_id": [str(i) for i in range(rows)], "x": [x] * rows})
    return evaluate(parse(expr), frame).values.to_list()


@pytest.mark.parametrize(("expr", "x", "expected"), CASES)
def test_exact_value_over_one_row_and_many(expr, x, expected):
    for rows in (1, 3):
        assert [repr(v) for v in _values(expr, x, rows)] == [expected] * rows, f"{rows} rows"


@pytest.mark.parametrize(("expr", "x", "expected"), [c for c in CASES if "e" not in c[1]])  # no 1e-10 literals
def test_constants_fold_to_the_same_value(expr, x, expected):
    literal = expr.replace("[x]", f"({x})" if x.startswith("-") else x)
    assert [repr(v) for v in _values(literal, "1", 2)] == [expected] * 2


def test_rounded_values_compare_exactly():
    assert _values("round([x], 1) = 24.2", "24.2214", 3) == [True] * 3
    assert _values("round([x], 2) = 1.01", "1.005", 3) == [True] * 3
    assert _values("round([x], 1) + 0 = 24.2", "24.2214", 3) == [True] * 3


def test_printed_values_carry_no_binary_noise():
    frame = pl.DataFrame({"record_id": ["1", "2", "3"], "w": ["65", "70", "80"], "h": ["175", "180", "190"]})
    bmi = evaluate(parse("concat(round([w] / ([h] / 100) ^ 2, 1))"), frame).values.to_list()
    assert bmi == ["21.2", "21.6", "22.2"]


@pytest.mark.parametrize(
    ("expr", "record", "expected"),
    [
        ("round([x], 1)", {"x": ""}, None),
        ("round([x], [p])", {"x": "2.25", "p": ""}, None),
        ("round([x], [p])", {"x": "2.25", "p": "1"}, 2.3),
        ("roundup([x], [p])", {"x": "2.21", "p": "1"}, 2.3),
        ("round([t], 1)", {"t": "abc"}, None),
        ("round([t], 1)", {"t": "2.45"}, 2.5),
        ("round('2.55', 1)", {"t": "x"}, 2.6),
        ("round('abc', 1)", {"t": "x"}, None),
        ("round([x], 'abc')", {"x": "2.5"}, None),
    ],
)
def test_blank_and_text_operands(expr, record, expected):
    frame = pl.DataFrame({"record_id": ["1"], **{k: [v] for k, v in record.items()}})
    assert evaluate(parse(expr), frame).values.to_list() == [expected]


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-10**9, max_value=10**9, places=6, allow_nan=False), st.integers(0, 5))
def test_round_of_a_written_decimal_is_the_double_nearest_the_decimal_result(value, places):
    """For a decimal as REDCap stores it (text, at most 15 significant digits), round() is decimal rounding half
    away from zero, then the nearest double: what Python's Decimal gives."""
    from decimal import ROUND_HALF_UP, Decimal

    expected = float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
    got = round_value(float(str(value)), places)
    assert repr(got) == repr(expected)


def test_php_round_takes_whole_arrays_and_keeps_blanks():
    got = php_round([1.005, float("nan"), -2.5, 0.0], [2, 2, 0, 3])
    assert repr(got.tolist()) == repr([1.01, float("nan"), -3.0, 0.0])
