"""The rows of one kind in a flat-export frame: a record's own (non-repeating) rows, or one repeating form's.

A frame read by form (trialkit.records.parquet) holds each kind as one run of rows; its rows of a kind are then a
slice of it, which shares the frame's memory, instead of a filtered copy (a million candidates' rows are most of
a gigabyte). Any other order takes the filter; both give the same rows in the same order.
"""

from __future__ import annotations

import polars as pl

from trialkit.records.convert import REPEAT_INSTRUMENT


def kind_blocks(frame: pl.DataFrame) -> dict[str | None, tuple[int, int]] | None:
    """Where each kind's rows are (offset, length), keyed by `redcap_repeat_instrument` (None: the non-repeating
    rows), when every kind is one run of rows; None otherwise."""
    if REPEAT_INSTRUMENT not in frame.columns or frame.schema[REPEAT_INSTRUMENT] != pl.String:
        return None
    runs = frame.get_column(REPEAT_INSTRUMENT).rle().struct.unnest()
    kinds = runs.get_column("value").to_list()
    if len(set(kinds)) != len(kinds):
        return None
    blocks = {}
    at = 0
    for kind, length in zip(kinds, runs.get_column("len").to_list(), strict=True):
        blocks[kind] = (at, length)
        at += length
    return blocks


_UNKNOWN: dict = {}


def rows_of_kind(
    frame: pl.DataFrame, rid: str, kind: str | None, blocks: dict[str | None, tuple[int, int]] | None = _UNKNOWN
) -> pl.DataFrame:
    """The rows of `frame` whose `redcap_repeat_instrument` is `kind` (None: blank) and whose record id is not
    blank, in frame order. `blocks`: kind_blocks(frame), when the caller has it (a frame with the same rows)."""
    which = pl.col(REPEAT_INSTRUMENT).is_null() if kind is None else pl.col(REPEAT_INSTRUMENT) == kind
    blocks = kind_blocks(frame) if blocks is _UNKNOWN else blocks
    if blocks is None:
        return frame.filter(which & pl.col(rid).is_not_null())
    if kind not in blocks:
        return frame.clear()
    rows = frame.slice(*blocks[kind])
    return rows if rows.get_column(rid).null_count() == 0 else rows.filter(pl.col(rid).is_not_null())
