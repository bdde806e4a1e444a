"""Rows of one kind by slice (records.kinds) and the proof that every record has its row (intake._own_rows_first):
each shortcut gives what the plain filter or the plain lookup gives, whatever the order of the rows."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.records.intake import _with_all_records
from trialkit.records.kinds import kind_blocks, rows_of_kind
from trialkit.records.readers import ROW

RID, RI = "record_id", "redcap_repeat_instrument"


def _frame(rows: list[tuple[str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {ROW: list(range(1, len(rows) + 1)), RID: [r for r, _ in rows], RI: [k for _, k in rows]},
        schema={ROW: pl.Int64, RID: pl.String, RI: pl.String},
    )


def _plain(frame: pl.DataFrame, kind: str | None) -> pl.DataFrame:
    which = pl.col(RI).is_null() if kind is None else pl.col(RI) == kind
    return frame.filter(which & pl.col(RID).is_not_null())


rows = st.lists(st.tuples(st.sampled_from(["1", "2", "3", None]), st.sampled_from([None, "atrq", "meds"])),
                max_size=12)


@settings(max_examples=150, deadline=None)
@given(rows, st.booleans())
def test_rows_of_kind_equal_the_filter(cells: list[tuple[str | None, str | None]], grouped: bool) -> None:
    frame = _frame(cells)
    if grouped:  # as a Parquet file is read by form: each kind one run of rows, file order within it
        frame = frame.sort(pl.col(RI).fill_null(""), maintain_order=True)
    for kind in (None, "atrq", "meds", "absent"):
        assert rows_of_kind(frame, RID, kind).equals(_plain(frame, kind))


def test_a_grouped_frame_gives_slices() -> None:
    frame = _frame([("1", None), ("2", None), ("1", "atrq"), ("2", "atrq"), ("2", "atrq")])
    assert kind_blocks(frame) == {None: (0, 2), "atrq": (2, 3)}
    assert kind_blocks(_frame([("1", None), ("1", "atrq"), ("2", None)])) is None


def _records(frame: pl.DataFrame) -> pl.DataFrame:
    return _plain(frame, None).select(RID).unique(maintain_order=True)


@pytest.mark.parametrize("cells", [
    [("1", None), ("1", "atrq"), ("1", "atrq"), ("2", None), ("2", "atrq")],  # REDCap's order
    [("1", None), ("1", "atrq"), ("3", "atrq"), ("2", None)],  # record 3 has no row of its own
    [("1", "atrq"), ("1", None), ("2", None)],  # instances above their record's row
    [("1", None), ("2", None), ("2", "atrq"), ("1", "atrq")],  # record 1's instances after another record
    [(None, None), ("1", None), (None, "atrq"), ("1", "atrq")],  # blank ids
    [("1", None), ("2", None)],
])
def test_every_record_has_its_row_whatever_the_order(cells: list[tuple[str | None, str | None]]) -> None:
    flat = _frame(cells)
    grouped = flat.sort(pl.col(RI).fill_null(""), maintain_order=True)
    for frame in (flat, grouped):
        records = _records(frame)
        proved = _with_all_records(frame, records, RID, kind_blocks(frame))
        assert proved.equals(_with_all_records(frame, records, RID)), frame
        assert sorted(proved.get_column(RID).to_list()) == sorted(frame.get_column(RID).drop_nulls().unique())
