"""Cells of CSV files that people open in a spreadsheet: text that a spreadsheet would run as a formula.

A record id or a value typed as `=HYPERLINK(...)` or `@SUM(...)` in the intake would otherwise travel into a
screening log that a coordinator opens in Excel (CSV injection, OWASP). Such a cell gets a leading apostrophe,
which spreadsheets show as text. Numbers (`-5`, `+1.5`) are left alone. Only files meant for spreadsheets use
this: the REDCap data dictionary and exports stay byte for byte what REDCap reads.
"""

from __future__ import annotations

import re

import polars as pl

_LEADS = r"^[=@\t\r]"  # always a formula (or a cell-splitting control character)
_SIGNED = r"^[+-]"  # a formula too, unless the whole cell is a number
_FIRST = r"^[=@\t\r+-]"  # what either pattern above needs first
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_leads, _signed, _number = re.compile(_LEADS), re.compile(_SIGNED), re.compile(_NUMBER)


def safe_cell(value: object) -> object:
    """The cell, with an apostrophe in front when a spreadsheet would read it as a formula."""
    if isinstance(value, str) and (_leads.match(value) or (_signed.match(value) and not _number.match(value))):
        return "'" + value
    return value


def safe_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The same with every text column of a frame."""
    def risky(c: str) -> pl.Expr:
        col = pl.col(c)
        return col.str.contains(_LEADS) | (col.str.contains(_SIGNED) & ~col.str.contains(_NUMBER))

    text = [c for c, dtype in frame.schema.items() if dtype == pl.String]
    if not text or frame.height == 0:
        return frame
    # one cheap test of the first character per column; the full test only where some cell could be a formula
    # (a million candidates' result columns hold words and codes: none is rewritten)
    flags = frame.select(pl.col(c).str.contains(_FIRST).any().alias(c) for c in text).row(0)
    text = [c for c, flagged in zip(text, flags, strict=True) if flagged]
    return frame.with_columns(
        pl.when(risky(c)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c) for c in text
    ) if text else frame
