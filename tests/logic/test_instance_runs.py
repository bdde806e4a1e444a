"""Instance aggregates counted by runs of rows (a record's instances next to each other, the usual export order)
give the group_by's results, whatever the order of the rows, the records or the batch."""

from __future__ import annotations

from contextlib import contextmanager

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trialkit.logic.engine as engine
from trialkit.logic import evaluate_many, parse

# Every aggregate the run path counts (counts of true rows, distinct non-blank values), conditions with blanks.
EXPRS = {
    "n": "count_instances(atrq)",
    "n_if": "count_instances(atrq, [v] > 2)",
    "any": "any_instance(atrq, [v] > 4)",
    "d": "count_distinct_instances(atrq, [drug])",
    "d_if": "count_distinct_instances(atrq, [drug], [v] > 2)",
    "i4": "count_distinct_instances(atrq, if([drug] = 'x', lower(trim([other])), [drug]), [v] < 5) >= 2",
}
TREES = {name: parse(text) for name, text in EXPRS.items()}


@contextmanager
def path(runs: bool):
    """Force the run path (on any number of rows) or the group_by, and count how often the run path ran."""
    calls = []
    reduce_runs = engine._reduce_runs

    def counted(*args, **kwargs):
        calls.append(1)
        return reduce_runs(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "_RUNS_FROM", 1 if runs else 10**12)
        mp.setattr(engine, "_reduce_runs", counted)
        yield calls


def evaluate(frame: pl.DataFrame, atrq: pl.DataFrame, mode: str) -> pl.DataFrame:
    # explain off, as screening runs it (explain's field masks are OR-ed by the group_by)
    return evaluate_many(TREES, frame, mode=mode, instances={"atrq": atrq}, record_id="record_id", explain=False)


def instances(ids: list[str | None], drugs: list[str | None], values: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "record_id": ids,
            "redcap_repeat_instance": list(range(1, len(ids) + 1)),
            "drug": drugs,
            "other": [" Zz " if d == "x" else None for d in drugs],
            "v": [None if v is None else str(v) for v in values],
        },
        schema={"record_id": pl.String, "redcap_repeat_instance": pl.Int64, "drug": pl.String, "other": pl.String,
                "v": pl.String},
    )


def grouped_by(atrq: pl.DataFrame, order: list[str | None]) -> pl.DataFrame:
    """The rows grouped by record id, the groups in `order` (each group keeps its rows' order)."""
    rank = {rid: i for i, rid in enumerate(order)}
    keys = [rank[r] for r in atrq.get_column("record_id").to_list()]
    return atrq.with_columns(pl.Series("__k", keys)).sort("__k", maintain_order=True).drop("__k")


@pytest.mark.parametrize(
    "ids, grouped",
    [
        (["1", "1", "2", "2", "2", "3"], True),  # in the record frame's order
        (["3", "2", "2", "1", "1"], True),  # grouped, records in another order
        (["1", "9", "9", "2", "1"], False),  # record 1 before and after others
        (["1", "9", "1", "2"], False),  # apart, with only an id that is no record's in between
        (["1", "2", "1"], False),
        (["1", None, None, "2"], True),  # rows of no record split nothing
    ],
)
def test_rows_are_grouped_only_when_every_records_rows_are_one_run(ids, grouped):
    owners = engine._Owners.of(pl.Series(["1", "2", "3"]))
    assert owners.rows_of(pl.Series(ids, dtype=pl.String)).grouped() is grouped


@pytest.mark.parametrize("mode", ["kleene", "redcap"])
def test_a_record_with_more_instances_than_the_run_reach_counts_each_value_once(mode):
    # 25 instances cycling through 10 drugs: a repeat lies 10 rows back, beyond the rows the run path compares
    drugs = [f"d{i % 10}" for i in range(25)]
    atrq = instances(["2"] * 3 + ["1"] * 25, ["a", "a", None, *drugs], [0, 1, 9] + [1] * 25)
    frame = pl.DataFrame({"record_id": ["1", "2", "3"]})
    assert engine._RUN_REACH < 25
    with path(runs=True) as calls:
        fast = evaluate(frame, atrq, mode)
    assert calls
    with path(runs=False):
        assert fast.equals(evaluate(frame, atrq, mode))
    assert fast.get_column("d").to_list()[0] == 10
    assert fast.get_column("n").to_list() == [25, 3, 0]


record_ids = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=1, max_size=6, unique=True)
instance_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e", "f", "zz", None]),  # zz and None: no record's
        st.sampled_from(["p", "q", "r", "x", None]),
        st.one_of(st.none(), st.integers(0, 6)),
    ),
    max_size=40,
)


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_ids, instance_rows, st.booleans(), st.randoms(use_true_random=False))
def test_runs_give_the_group_by_results_in_any_row_order(ids, rows, twice, rng):
    # A record id twice in the frame (both rows read its instances) takes the owners' join: covered as well.
    frame = pl.DataFrame({"record_id": ids + ids[:1] if twice else ids})
    atrq = instances([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    order: list[str | None] = ["a", "b", "c", "d", "e", "f", "zz", None]
    rng.shuffle(order)
    shuffled = atrq.sample(fraction=1.0, shuffle=True, seed=rng.randrange(1 << 16))
    for mode in ("kleene", "redcap"):
        with path(runs=False):
            expected = evaluate(frame, atrq, mode)
        for variant in (grouped_by(atrq, order), shuffled, atrq):
            with path(runs=True):
                got = evaluate(frame, variant, mode)
            assert got.equals(expected), (mode, variant.get_column("record_id").to_list())


def test_the_run_path_runs_on_grouped_rows_and_not_on_interleaved_ones():
    frame = pl.DataFrame({"record_id": ["a", "b", "c"]})
    atrq = instances(["a", "a", "b", "c", "c"], ["p", "q", "p", "p", "p"], [1, 2, 3, 4, 5])
    with path(runs=True) as calls:
        grouped = evaluate(frame, atrq, "kleene")
    assert calls == [1]
    interleaved = atrq[[0, 2, 1, 3, 4]]
    with path(runs=True) as calls:
        assert evaluate(frame, interleaved, "kleene").equals(grouped)
    assert calls == []
    assert grouped.get_column("d").to_list() == [2, 1, 1]


@pytest.mark.parametrize("mode", ["kleene", "redcap"])
def test_counting_instances_alone_reads_no_column_and_counts_every_row(mode):
    frame = pl.DataFrame({"record_id": ["a", "b", "c"]})
    atrq = instances(["a", "a", "zz", "c", "c", "c"], ["p"] * 6, [1] * 6)
    trees = {"n": parse("count_instances(atrq)"), "n2": parse("count_instances(atrq) > 1")}

    def counts():
        kw = {"mode": mode, "instances": {"atrq": atrq}, "record_id": "record_id", "explain": False}
        return evaluate_many(trees, frame, **kw)

    with path(runs=True) as calls:
        fast = counts()
    assert calls
    assert fast.get_column("n").to_list() == [2, 0, 3]
    assert fast.get_column("n2").to_list() == [True, False, True]
    with path(runs=False):
        assert fast.equals(counts())
