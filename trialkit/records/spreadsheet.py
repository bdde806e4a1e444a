"""What spreadsheets do to REDCap data, recognised in a cell so the message names the fix.

Excel shows and re-saves dates the way the computer's region writes them (`11/02/2026`), drops the leading zeros
of anything that looks like a number (record `0042` becomes `42`), and REDCap's "CSV (labels)" export holds
choice labels (`Yes`, `Complete`) where the raw export holds codes. Dates and labels are per-cell checks like the
others in trialkit.records.cellchecks (validation reports them, screening never decides on such a cell), with a
message that says what to do; lost zeros are validation's record id check. Messages describe the pattern, never
the value: the cell may identify the candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from trialkit.records.cellchecks import CellCheck
    from trialkit.records.convert import Column

#: month/day/year (or day/month/year), as Excel writes a date under a US (or European) region setting
_SLASHED_DATE = r"^\s*[0-9]{1,2}[/.][0-9]{1,2}[/.][0-9]{4}(\s+[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?(\s*[AaPp][Mm])?)?\s*$"
_DIGITS = r"^[0-9]+$"
_ZERO_PADDED = r"^0[0-9]+$"

#: how a REDCap "CSV (labels)" export writes a checkbox option and a form's status
_CHECKBOX_LABELS = ("Checked", "Unchecked")
_COMPLETE_LABELS = ("Incomplete", "Unverified", "Complete")

LABEL = "a choice label where REDCap stores the code (a 'CSV (labels)' export?): export raw data"
LOST_ZEROS = ("record id shorter than the zero-padded ids: Excel dropped its leading zeros? write it with its "
              "zeros (format the column as Text before pasting)")


def slashed_date(col: Column, raw: pl.Expr) -> pl.Expr:
    """True where a date, datetime or time field holds a date written with slashes or dots (checked on its own, with a
    message that says how to write it)."""
    if col.kind not in ("date", "datetime"):
        return pl.lit(False)
    return raw.str.contains(_SLASHED_DATE).fill_null(False)


def labels(col: Column) -> tuple[str, ...]:
    """The words a labels export writes for `col`'s codes (those that are not codes themselves)."""
    if col.kind == "complete":
        return _COMPLETE_LABELS
    if col.kind == "checkbox":
        return _CHECKBOX_LABELS
    if col.kind == "choice" and col.field is not None:
        codes = set(col.field.choice_codes)
        return tuple(c.label for c in col.field.effective_choices if c.label and c.label not in codes)
    return ()


def is_label(col: Column, raw: pl.Expr) -> pl.Expr:
    """True where a coded field holds one of its choice labels (exactly as REDCap's labels export writes it)."""
    words = labels(col)
    if not words:
        return pl.lit(False)
    return raw.is_in(list(words)).fill_null(False)


def zero_padded_width(raw: pl.Expr) -> pl.Expr:
    """The length of the widest zero-padded record id (`0042`) among `raw`; null when none is padded."""
    return raw.filter(raw.str.contains(_ZERO_PADDED)).str.len_chars().max()


def lost_zeros(raw: pl.Expr, width: int | None = None) -> pl.Expr:
    """True where a record id is digits only, fewer than the zero-padded ids have: the zeros Excel drops from
    `0042`. `width`: that of the whole file's widest zero-padded id (`zero_padded_width`), when the rows checked
    are one part of it (chunked validation: a finding must not depend on where the file was cut); default, that
    of the rows checked. Without zero-padded ids nothing is flagged."""
    widest = zero_padded_width(raw) if width is None else pl.lit(width)
    return (raw.str.contains(_DIGITS) & (raw.str.len_chars() < widest)).fill_null(False)


def checks(col: Column, *, raw: pl.Expr, typed: pl.Expr, is_missing: pl.Expr) -> list[CellCheck]:
    """The spreadsheet checks of `col`; the general type and choice checks leave these cells to them. Screening's
    hint keeps the general check's words and adds the cause."""
    from trialkit.records.cellchecks import CellCheck, expected_form, listing

    out = []
    if col.kind in ("date", "datetime"):
        form = expected_form(col)
        example = ", e.g. 11/02/2026 as 2026-11-02" if form.startswith("YYYY-MM-DD") else ""
        out.append(CellCheck(
            "type",
            ~slashed_date(col, raw) | is_missing | typed.is_not_null(),
            f"a date written with slashes or dots, as Excel shows it (month/day/year? day.month.year?): write it "
            f"{form}{example}",
            f"unreadable value (expected {form}): a date written with slashes or dots, as Excel shows it",
        ))
    if labels(col) and col.codes is not None:
        out.append(CellCheck(
            "choice",
            ~is_label(col, raw),
            f"{LABEL} (codes: {listing(col.codes)})",
            f"not one of the codes {listing(col.codes)} (a labels export? export raw data)",
        ))
    return out
