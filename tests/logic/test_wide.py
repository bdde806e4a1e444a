"""Wide and deep expressions: the polars plan grows linearly with the expression; a term limit bounds the rest.

Time is measured by benchmarks/bench_wide_logic.py; here the plan itself is measured (its text before
optimisation), which grew with the square of an `or` chain and doubled with every nested `if` condition.
"""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from trialkit.errors import LogicSyntaxError
from trialkit.logic import MAX_NODES, compile_expr, evaluate, evaluate_many, parse, walk

ROWS = 20


def _frame(n: int) -> pl.DataFrame:
    cols = {"record_id": [str(i) for i in range(ROWS)]}
    for i in range(n):
        cols[f"f{i}"] = [str((i + r) % 7) if (i + r) % 4 else "" for r in range(ROWS)]
    cols["t"] = [("abc", "5", "")[r % 3] for r in range(ROWS)]
    return pl.DataFrame(cols)


def _plan_size(text: str, n: int, mode: str, monkeypatch) -> int:
    sizes = []
    collect = pl.LazyFrame.collect

    def measured(self, *args, **kwargs):
        sizes.append(len(self.explain(optimized=False)))
        return collect(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pl.LazyFrame, "collect", measured)
        evaluate_many({"v": parse(text)}, _frame(n), mode=mode)
    return sum(sizes)


def _nest(template: str, depth: int) -> str:
    text = "[f0]"
    for _ in range(depth):
        text = template.format(text)
    return text


SHAPES = {
    "or chain": lambda n: (" or ".join(f"[f{i}] = '3'" for i in range(n)), n),
    "and chain": lambda n: (" and ".join(f"[f{i}] < 5" for i in range(n)), n),
    "sum": lambda n: ("sum(" + ", ".join(f"[f{i}]" for i in range(n)) + ") > 5", n),
    "divisions": lambda n: ("sum(" + ", ".join(f"round([f{i}] / 3, 1)" for i in range(n)) + ")", n),
    "nested if conditions": lambda d: (_nest("if({}, 1, 0)", d // 10), 1),
    "nested divisions": lambda d: (_nest("(1 / ({}))", d // 10), 1),
    "nested text comparisons": lambda d: (_nest("(concat({}) = [t])", d // 10), 1),
    "nested mod": lambda d: (_nest("mod({}, 3)", d // 10), 1),
}


@pytest.mark.parametrize("mode", ["redcap", "kleene"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_plan_grows_linearly(shape, mode, monkeypatch):
    small = _plan_size(*SHAPES[shape](60), mode, monkeypatch)
    large = _plan_size(*SHAPES[shape](120), mode, monkeypatch)
    assert large < 2.6 * small, f"{shape}: plan {small:,} -> {large:,} characters when the expression doubles"


def _kleene_or(values):
    return True if True in values else (None if None in values else False)


def _kleene_and(values):
    return False if False in values else (None if None in values else True)


def test_n_ary_and_or_keep_kleene_and_redcap_semantics():
    """Every combination of true/false/unknown over three operands, against the truth tables."""
    cases = list(itertools.product(["1", "0", ""], repeat=3))
    frame = pl.DataFrame({"record_id": [str(i) for i in range(len(cases))]} | {
        f"x{j}": [c[j] for c in cases] for j in range(3)
    })
    truth = {"1": True, "0": False, "": None}
    for op, ref in (("or", _kleene_or), ("and", _kleene_and)):
        node = parse(f" {op} ".join(f"[x{j}] = 1" for j in range(3)))
        kleene = evaluate(node, frame, mode="kleene").values.to_list()
        redcap = evaluate(node, frame, mode="redcap").values.to_list()
        for case, k, r in zip(cases, kleene, redcap, strict=True):
            values = [truth[c] for c in case]
            assert k == ref(values), (op, case)
            assert r == ref([bool(v) for v in values]), (op, case)


def test_term_limit():
    at_limit = "sum(" + ", ".join("1" for _ in range(MAX_NODES - 1)) + ")"
    assert sum(1 for _ in walk(parse(at_limit))) == MAX_NODES
    with pytest.raises(LogicSyntaxError) as exc:
        parse("sum(" + ", ".join("1" for _ in range(MAX_NODES)) + ")")
    message = str(exc.value)
    assert f"{MAX_NODES + 1:,} terms" in message and f"limit is {MAX_NODES:,}" in message


def _nesting(expr: pl.Expr) -> int:
    depth = deepest = 0
    for ch in str(expr):
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    return deepest


@pytest.mark.parametrize(
    "text",
    [
        " or ".join(f"[f{i}] = '3'" for i in range(200)),
        " and ".join(f"[f{i}] < 5" for i in range(200)),
        "sum(" + ", ".join(f"[f{i}]" for i in range(200)) + ") > 5",
    ],
    ids=["or", "and", "sum"],
)
@pytest.mark.parametrize("mode", ["redcap", "kleene"])
def test_wide_expressions_compile_shallow(text, mode):
    """polars' optimiser is quadratic in the depth of an expression: a 200-term chain must not be 200 deep (nor its
    kleene explanation mask)."""
    compiled = compile_expr(parse(text), _frame(200), mode=mode, explain=mode == "kleene")
    assert _nesting(compiled.value) < 40
    if compiled.missing is not None:
        assert _nesting(compiled.missing) < 60


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_compile_expr_arithmetic_chains_stay_linear(op):
    """compile_expr (calculated fields) has no staging: each operator must use its operands once. A chain of
    8 `+` once compiled to 2^8 copies of its first field."""
    def size(n: int) -> int:
        text = f" {op} ".join(f"[f{i}]" for i in range(n))
        return len(str(compile_expr(parse(text), _frame(n), mode="kleene").value))

    assert size(40) < 2.6 * size(20)
