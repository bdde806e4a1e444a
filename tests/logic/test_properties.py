"""Property tests: the parser raises only LogicSyntaxError on any text; render/parse round-trips generated trees."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.errors import LogicSyntaxError, TrialkitError
from trialkit.logic import (
    FUNCTIONS,
    Binary,
    Bool,
    BoolOp,
    Call,
    FieldRef,
    FormName,
    Number,
    SmartVar,
    String,
    Unary,
    evaluate,
    parse,
    render,
)
from trialkit.logic.ast import INSTANCE_SMART, SMART_VARIABLES

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
numbers = st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,3})?", fullmatch=True).map(Number)
strings = (
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
    .filter(lambda s: not ("'" in s and '"' in s))
    .map(String)
)
codes = st.from_regex(r"[A-Za-z0-9_-]{1,4}", fullmatch=True)
field_refs = st.builds(
    FieldRef,
    names,
    st.none() | codes,
    event=st.none() | names,
    instance=st.none() | st.integers(1, 99) | st.sampled_from(sorted(INSTANCE_SMART)),
)
leaves = st.one_of(
    numbers, strings, st.builds(Bool, st.booleans()), field_refs, st.sampled_from(sorted(SMART_VARIABLES)).map(SmartVar)
)
plain_functions = sorted(n for n, f in FUNCTIONS.items() if not f.extension)
ARITH = ["+", "-", "*", "/", "^"]
COMPARE = ["=", "<>", "<", "<=", ">", ">="]


def _calls(children):
    @st.composite
    def build(draw):
        name = draw(st.sampled_from(plain_functions))
        spec = FUNCTIONS[name]
        hi = spec.max_args if spec.max_args is not None else spec.min_args + 2
        n = draw(st.integers(spec.min_args, min(hi, spec.min_args + 2)))
        return Call(name, tuple(draw(children) for _ in range(n)))

    return build()


def _extension(children):
    return st.builds(lambda form, cond: Call("count_instances", (FormName(form), cond)), names, children) | st.builds(
        lambda form, f, cond: Call("count_distinct_instances", (FormName(form), f, cond)), names, field_refs, children
    )


def _extend(children):
    return st.one_of(
        st.builds(Unary, st.sampled_from(["not", "-", "+"]), children),
        st.builds(Binary, st.sampled_from(ARITH + COMPARE), children, children),
        st.builds(BoolOp, st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=4).map(tuple)),
        _calls(children),
        _extension(children),
    )


trees = st.recursive(leaves, _extend, max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_render_then_parse_gives_the_same_tree(tree):
    text = render(tree, extensions=True)
    assert parse(text) == tree
    assert render(parse(text), extensions=True) == text


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_parser_raises_only_its_own_error_on_any_text(text):
    try:
        tree = parse(text)
    except LogicSyntaxError as err:
        assert err.line >= 1 and err.col >= 1
        return
    assert parse(render(tree, extensions=True)) == tree


TOKENS = [
    "[a]",
    "[b(1)]",
    "[e][f]",
    "[f][2]",
    "1",
    "2.5",
    "'x'",
    '"y"',
    "''",
    "(",
    ")",
    ",",
    "and",
    "or",
    "not",
    "=",
    "<>",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "^",
    "if",
    "datediff",
    "sum",
    "count_instances",
    "atrq",
    "today",
    "#c\n",
    "//c\n",
    "\n",
    " ",
    "[",
    "]",
    "'",
    "true",
    "__import__",
    ".",
    ";",
]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_parser_raises_only_its_own_error_on_token_soup(tokens):
    text = " ".join(tokens)
    try:
        tree = parse(text)
    except LogicSyntaxError as err:
        assert err.line >= 1 and err.col >= 1
        err.caret()
        return
    assert parse(render(tree, extensions=True)) == tree


FRAME = pl.DataFrame(
    {"record_id": ["1", "2", "3"], "a": ["1", "", "x"], "b": ["2024-01-01", "", "5"], "b___1": ["1", "0", ""]}
)
EVAL_LEAVES = st.one_of(
    numbers,
    strings,
    st.builds(Bool, st.booleans()),
    st.sampled_from([FieldRef("a"), FieldRef("b"), FieldRef("b", "1")]),
)
eval_trees = st.recursive(
    EVAL_LEAVES,
    lambda c: st.one_of(
        st.builds(Unary, st.sampled_from(["not", "-"]), c),
        st.builds(Binary, st.sampled_from(ARITH + COMPARE), c, c),
        st.builds(BoolOp, st.sampled_from(["and", "or"]), st.lists(c, min_size=2, max_size=3).map(tuple)),
        _calls(c),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eval_trees, st.sampled_from(["redcap", "kleene"]))
def test_evaluation_gives_one_value_per_record_or_a_trialkit_error(tree, mode):
    try:
        result = evaluate(tree, FRAME, mode=mode, as_of=date(2024, 3, 1))
    except TrialkitError:
        return
    assert result.values.len() == FRAME.height
    if result.kind == "bool" and mode == "redcap":
        assert result.values.null_count() == 0


def test_a_constant_part_shared_by_the_tree_gives_one_value_per_record():
    """Found by the test above: `0 = (not '' and age_at_date('', '') and hasmissingcode([a], ''))` folds its
    `and` to a constant; staged as a column of its own, polars' optimiser folded it back as a one-row value and
    the evaluation failed with a shape error. Every mode, and beside an expression that reads a column."""
    from trialkit.logic import evaluate_many
    from trialkit.logic.ast import BoolOp, Call, FieldRef, Number, String, Unary

    constant = BoolOp("and", (
        Unary("not", String("")),
        Call("age_at_date", (String(""), String(""))),
        Call("hasmissingcode", (FieldRef("a"), String(""))),
    ))
    tree = Binary("=", Number("0"), constant)
    for mode in ("redcap", "kleene"):
        result = evaluate(tree, FRAME, mode=mode, as_of=date(2024, 3, 1))
        assert result.values.len() == FRAME.height
        both = evaluate_many({"x": tree, "y": Binary("=", FieldRef("a"), constant)}, FRAME, mode=mode,
                             as_of=date(2024, 3, 1), record_id="record_id")
        assert both.height == FRAME.height
        assert both.get_column("x").to_list() == result.values.to_list()
    assert evaluate(tree, FRAME, mode="redcap", as_of=date(2024, 3, 1)).values.to_list() == [True] * FRAME.height


VALUE_FUNCTIONS = ["sum", "min", "max", "mean", "abs", "round", "length", "upper", "left", "concat", "datediff"]
value_trees = st.recursive(
    EVAL_LEAVES.filter(lambda n: not isinstance(n, Bool)),
    lambda c: st.one_of(
        st.builds(Unary, st.just("-"), c),
        st.builds(Binary, st.sampled_from(ARITH), c, c),
        st.builds(
            lambda name, args: Call(name, tuple(args[: FUNCTIONS[name].max_args or len(args)])),
            st.sampled_from(VALUE_FUNCTIONS).filter(lambda n: n != "datediff"),
            st.lists(c, min_size=2, max_size=3),
        ),
        st.builds(lambda a, b: Call("datediff", (a, b, String("d"))), c, c),
    ),
    max_leaves=6,
)
condition_trees = st.recursive(
    st.one_of(
        st.builds(Binary, st.sampled_from(COMPARE), value_trees, value_trees),
        st.builds(lambda f: Call("isblankormissingcode", (f,)), st.sampled_from([FieldRef("a"), FieldRef("b")])),
    ),
    lambda c: st.one_of(
        st.builds(Unary, st.just("not"), c),
        st.builds(BoolOp, st.sampled_from(["and", "or"]), st.lists(c, min_size=2, max_size=3).map(tuple)),
        st.builds(lambda k, a, b: Call("if", (k, a, b)), c, c, c),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition_trees)
def test_where_kleene_decides_redcap_agrees(tree):
    """Eligibility-shaped conditions (and/or/not/if over comparisons of field values): Kleene logic decides a row
    only when the unknowns cannot matter, so REDCap's two-valued reading must agree there."""
    try:
        kleene = evaluate(tree, FRAME, mode="kleene", as_of=date(2024, 3, 1))
        redcap = evaluate(tree, FRAME, mode="redcap", as_of=date(2024, 3, 1))
    except TrialkitError:
        return
    assert kleene.kind == "bool"
    for k, r in zip(kleene.values.to_list(), redcap.values.to_list(), strict=True):
        if k is not None:
            assert k == r
