"""A record's result never depends on how many records are evaluated with it.

Every logic function and operator is evaluated over a frame of records and over each record alone (and, for the
instance aggregates, with only that record's instances); the values must be identical, bit for bit. polars picks
kernels by operand length (a column divided by a constant is multiplied by the reciprocal, but not in a one-row
frame), so a value could differ in its last bit (round([x], 1) was 24.2 alone and 24.200000000000003 among three).
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.errors import TrialkitError
from trialkit.logic import (
    FUNCTIONS,
    Binary,
    Bool,
    BoolOp,
    Call,
    FieldRef,
    FieldSpec,
    FormName,
    Node,
    Number,
    String,
    Unary,
    evaluate,
    parse,
)
from trialkit.logic.ast import ARITHMETIC, COMPARISONS

AS_OF = datetime(2024, 3, 1, 12, 30)
MISSING = ("UNK", "NA")

# Values chosen where float arithmetic is fragile: decimal halves (x.xx5), values just off a half, negatives,
# magnitudes near 1e15, tiny ones, integers, blanks, a missing-data code.
NUMBERS = ["24.2214", "1.005", "2.675", "-2.5", "0.285", "-1.21", "123456789.125", "1e-7", "999999999999999",
           "7", "0", "", "UNK", "1.1", "3.3333333333333335", "-0.0449"]
TEXTS = ["abc", "Abc DEF", "", "5", "5.0", "x,y", "Ünï", "NA"]
DATES = ["2024-02-29", "2001-01-01", "", "2019-12-31", "1999-03-01", "2024-03-01", "2023-02-28", "2000-02-29"]
DATETIMES = ["2024-03-01 12:30", "2001-01-01 00:00", "", "2019-12-31 23:59", "2024-02-29 06:15", "2000-01-01 00:01",
             "2023-06-30 12:00", "2024-03-01 00:00"]
CODES = ["0", "1", "2", "3", "", "1", "2", "UNK"]

N = len(NUMBERS)
FRAME = pl.DataFrame(
    {
        "record_id": [str(i + 1) for i in range(N)],
        "n1": NUMBERS,
        "n2": NUMBERS[3:] + NUMBERS[:3],
        "t1": [TEXTS[i % len(TEXTS)] for i in range(N)],
        "d1": [DATES[i % len(DATES)] for i in range(N)],
        "d2": [DATES[(i + 3) % len(DATES)] for i in range(N)],
        "dt1": [DATETIMES[i % len(DATETIMES)] for i in range(N)],
        "c1": [CODES[i % len(CODES)] for i in range(N)],
        "cb___1": ["1" if i % 3 else "0" for i in range(N)],
    }
)
FIELDS = {
    s.name: s
    for s in (
        FieldSpec("record_id", "text", form="f"),
        FieldSpec("n1", "text", "number", form="f"),
        FieldSpec("n2", "text", "number", form="f"),
        FieldSpec("t1", "text", form="f"),
        FieldSpec("d1", "text", "date_ymd", form="f"),
        FieldSpec("d2", "text", "date_ymd", form="f"),
        FieldSpec("dt1", "text", "datetime_ymd", form="f"),
        FieldSpec("c1", "radio", choices=("0", "1", "2", "3"), form="f"),
        FieldSpec("cb", "checkbox", choices=("1", "2"), form="f"),
        FieldSpec("v_n", "text", "number", form="visits", repeating=True),
        FieldSpec("v_t", "text", form="visits", repeating=True),
    )
}
VISITS = pl.DataFrame(
    {
        "record_id": [str(1 + i % N) for i in range(3 * N)],
        "redcap_repeat_instance": [str(1 + i // N) for i in range(3 * N)],
        "v_n": [NUMBERS[(i * 5) % N] for i in range(3 * N)],
        "v_t": [TEXTS[(i * 3) % len(TEXTS)] for i in range(3 * N)],
    }
)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return repr(a) == repr(b) or (math.isnan(a) and math.isnan(b))
    return a == b and type(a) is type(b)


def _run(node: Node, frame: pl.DataFrame, mode: str, fields, instances):
    try:
        r = evaluate(
            node, frame, mode=mode, as_of=AS_OF, fields=fields, instances=instances, missing_codes=MISSING
        )
    except TrialkitError as exc:
        return "error", type(exc).__name__
    missing = r.missing.to_list() if r.missing is not None else [None] * frame.height
    return r.kind, list(zip(r.values.to_list(), missing, strict=True))


def assert_batch_independent(node: Node, mode: str, *, fields=FIELDS, records=None) -> None:
    uses_instances = any(isinstance(n, FormName) for n in _nodes(node))
    instances = {"visits": VISITS} if uses_instances else None
    kind, together = _run(node, FRAME, mode, fields, instances)
    for i in records if records is not None else range(N):
        one = FRAME.slice(i, 1)
        mine = {"visits": VISITS.filter(pl.col("record_id") == one["record_id"][0])} if uses_instances else None
        kind_alone, alone = _run(node, one, mode, fields, mine)
        if kind == "error":
            assert kind_alone == "error", f"{node}: error together, {alone} alone"
            continue
        assert kind_alone == kind, f"{node}: kind {kind} together, {kind_alone} alone"
        (value, missing), (value_alone, missing_alone) = together[i], alone[0]
        assert _same(value, value_alone), f"record {i + 1}: {value!r} among {N}, {value_alone!r} alone"
        assert missing == missing_alone


def _nodes(node: Node):
    from trialkit.logic import walk

    return list(walk(node))


# ---- every function and operator, with fixed arguments over every record ---------------------------------------
SWEEP = {
    "if": ["if([n1] > 2, round([n1], 1), [n2] / 10)", "if([t1], [d1], [d2])"],
    "datediff": ["datediff([d1], [d2], 'd')", "datediff([d1], [dt1], 'y', true)", "datediff([d1], 'today', 'M')",
                 "datediff([dt1], 'now', 'h')", "datediff([d2], [d1], 's')"],
    "age_at_date": ["age_at_date([d1], [d2])", "age_at_date([d1], 'today', true)"],
    "year": ["year([d1])"], "month": ["month([dt1])"], "day": ["day([d2])"],
    "round": ["round([n1], 1)", "round([n1], 2) = 1.01", "round([n1] * [n2], 3)", "round([n1] / 7, [c1])",
              "round([n1])", "round([n2], -2)", "round([n1], 20)", "round([t1], 1)"],
    "roundup": ["roundup([n1], 1)", "roundup([n1] * 100)", "roundup([n2], [c1])"],
    "rounddown": ["rounddown([n1], 2)", "rounddown([n1] / 3, 1)", "rounddown(datediff([d1], [d2], 'y'))"],
    "abs": ["abs([n1] / 10)"], "sqrt": ["sqrt([n1])"], "exponential": ["exponential([n1] / 100)"],
    "log": ["log([n1])", "log([n1], 10)", "log([n1], [n2])"],
    "mod": ["mod([n1], 0.1)", "mod([n1], [n2])", "mod(-7.5, [c1])"],
    "min": ["min([n1], [n2], 3)"], "max": ["max([n1] / 10, [n2])"], "mean": ["mean([n1], [n2], [c1])"],
    "median": ["median([n1], [n2], 1.1, [c1])"], "sum": ["sum([n1], [n2], 0.1)", "sum([n1] / 10, [n2] / 10)"],
    "stdev": ["stdev([n1], [n2], [c1])"],
    "isnumber": ["isnumber([t1])", "isnumber([n1])"], "isinteger": ["isinteger([n1] / 2)", "isinteger([t1])"],
    "isblankormissingcode": ["isblankormissingcode([n1])"], "isblanknotmissingcode": ["isblanknotmissingcode([c1])"],
    "ismissingcode": ["ismissingcode([n1])"], "hasmissingcode": ["hasmissingcode([t1], 'NA')"],
    "contains": ["contains([t1], 'b')", "contains('abc', [t1])"], "not_contain": ["not_contain([t1], 'B')"],
    "starts_with": ["starts_with([t1], 'a')"], "ends_with": ["ends_with([t1], [t1])"],
    "left": ["left([t1], 2)", "left([n1], [c1])"], "right": ["right([t1], 2)"], "mid": ["mid([t1], 2, 2)"],
    "length": ["length([t1])", "length([n1] / 10)"], "trim": ["trim([t1])"], "upper": ["upper([t1])"],
    "lower": ["lower([t1])"], "find": ["find('b', [t1])"], "replace_text": ["replace_text([t1], 'b', 'x')"],
    "concat": ["concat([t1], [n1] / 10, round([n2], 1))"], "concat_ws": ["concat_ws(',', [t1], [n1], [d1])"],
    "count_instances": ["count_instances(visits, [v_n] > 1)"],
    "count_distinct_instances": ["count_distinct_instances(visits, [v_t], [v_n] <> '')"],
    "sum_instances": ["sum_instances(visits, [v_n] / 10)", "sum_instances(visits, round([v_n], 1))"],
    "min_instances": ["min_instances(visits, [v_n], [v_n] > 0)"],
    "max_instances": ["max_instances(visits, [v_n] * 1.1)"],
    "any_instance": ["any_instance(visits, round([v_n], 2) = 1.01)"],
}
OPERATORS = [
    "[n1] + [n2]", "[n1] - 0.1", "[n1] * 1.1", "[n1] / 10", "[n1] / [n2]", "10 / [n1]", "([n1])^(2)",
    "([n1])^(0.5)", "([n2])^([c1])", "-[n1]", "+[n2]",
    "[n1] / 10 = 2.42214", "[n1] <> [n2]", "[n1] < 2.5", "[n1] <= [n2]", "[n1] > [t1]", "[d1] >= [d2]",
    "[n1] > 1 and [n2] < 5", "[n1] > 1 or [t1] = 'abc'", "not [n1] > 1", "[cb(1)] = 1 or [c1] = 2",
]


def test_the_sweep_covers_every_function_and_operator():
    assert set(SWEEP) == set(FUNCTIONS)
    used = " ".join(OPERATORS)
    for op in [*sorted(COMPARISONS | ARITHMETIC), "and", "or", "not"]:
        assert f" {op} " in used or f"{op}[" in used or f"){op}(" in used, op


@pytest.mark.parametrize("mode", ["redcap", "kleene"])
@pytest.mark.parametrize("text", [t for texts in SWEEP.values() for t in texts] + OPERATORS)
def test_every_function_and_operator_alone_equals_among_many(text, mode):
    assert_batch_independent(parse(text), mode)


def test_round_over_a_column_of_24_2214():
    """The reported case: one row gave true, three rows false."""
    node = parse("round([x], 1) = 24.2")
    for n in (1, 2, 3, 17):
        frame = pl.DataFrame({"id": [str(i) for i in range(n)], "x": ["24.2214"] * n})
        assert evaluate(node, frame).values.to_list() == [True] * n
        values = evaluate(parse("round([x], 1)"), frame).values.to_list()
        assert [repr(v) for v in values] == ["24.2"] * n


# ---- random compositions ------------------------------------------------------------------------------------------
FIELD_LEAVES = [FieldRef(n) for n in ("n1", "n2", "t1", "d1", "d2", "dt1", "c1")] + [FieldRef("cb", "1")]
leaves = st.one_of(
    st.sampled_from(FIELD_LEAVES),
    st.sampled_from(["0.1", "1.005", "2.5", "-2.5", "10", "3", "0", "7", "1e-3"]).map(Number),
    st.sampled_from(["", "abc", "5", "2024-01-15"]).map(String),
    st.builds(Bool, st.booleans()),
)
GENERIC = sorted(
    n for n, f in FUNCTIONS.items() if not f.extension and n not in ("datediff", "concat_ws", "hasmissingcode")
)


def _extend(children):
    @st.composite
    def call(draw):
        name = draw(st.sampled_from(GENERIC))
        spec = FUNCTIONS[name]
        hi = spec.max_args if spec.max_args is not None else spec.min_args + 2
        return Call(name, tuple(draw(children) for _ in range(draw(st.integers(spec.min_args, hi)))))

    return st.one_of(
        st.builds(Unary, st.sampled_from(["not", "-"]), children),
        st.builds(Binary, st.sampled_from(sorted(ARITHMETIC | COMPARISONS)), children, children),
        st.builds(BoolOp, st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3).map(tuple)),
        call(),
        st.builds(lambda a, b, u: Call("datediff", (a, b, String(u))), children, children, st.sampled_from("yMdhms")),
        st.builds(lambda a, b: Call("concat_ws", (String("-"), a, b)), children, children),
        st.builds(lambda a: Call("hasmissingcode", (a,)), children),
        st.builds(lambda c: Call("count_instances", (FormName("visits"), c)), children),
        st.builds(lambda c: Call("sum_instances", (FormName("visits"), FieldRef("v_n"), c)), children),
    )


trees = st.recursive(leaves, _extend, max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.sampled_from(["redcap", "kleene"]), st.integers(0, N - 1))
def test_random_expressions_alone_equal_among_many(tree, mode, record):
    assert_batch_independent(tree, mode, records=[record])

