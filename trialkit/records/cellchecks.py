"""What makes one cell's value usable: the per-cell checks shared by validation and screening.

Validation reports every failed check; screening must never decide on a value that fails one (a systolic BP of
16 typed for 160, `11/02/2026` in a date field, "Yes" from a labels export, a treatment-history row filed under
an event where that form does not belong). Both take the checks from here, so "invalid" means the same thing
in `trialkit validate` and in `trialkit screen`.

Each check is a polars expression that is true where the cell passes (a blank cell passes every check; being
blank is screening's "missing", not "invalid"). Messages never quote the value: it may identify the candidate.

Not checks here: required fields, hidden values, duplicate rows and calculated values (validation has them;
screening merges duplicate rows and recomputes calcs itself). A number with more or fewer decimals than its
`number_1dp`-style validation asks for is a `format` finding but still usable; a whole number is no finding at
all: `175` is unambiguous in a one-decimal field, and REDCap's own data entry accepts it as 175.0. Cells that a
spreadsheet changed (dates with slashes, labels for codes) fail checks of their own, whose messages say the fix
(trialkit.records.spreadsheet).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import polars as pl

from trialkit.definitions.model import FieldType
from trialkit.records import spreadsheet
from trialkit.records.convert import WHOLE, Column

#: How a raw date/time form reads to a person: the format REDCap's API and exports use.
_SHOWN_FORMAT = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH", "%M": "MM", "%S": "SS"}


@dataclass(frozen=True)
class CellCheck:
    """One check of one column. `ok` is true where the cell passes (null counts as a pass). `usable`: a cell that
    fails is still read by screening (a format finding on an unambiguous number)."""

    check: str  # misplaced, type, format, range, choice
    ok: pl.Expr
    message: str  # as validation words it
    hint: str = ""  # what the person fixing it needs to know, for screening's checklists
    usable: bool = False


def expected_form(col: Column) -> str:
    """'YYYY-MM-DD' for a date field: the raw form REDCap reads, for messages."""
    vt = col.validation
    fmt = vt.strptime if vt is not None and vt.strptime else {"date": "%Y-%m-%d", "datetime": "%Y-%m-%d %H:%M",
                                                              "time": "%H:%M"}.get(col.kind)
    if fmt is None:
        return {"integer": "a whole number", "number": "a number"}.get(col.kind, col.kind)
    for directive, shown in _SHOWN_FORMAT.items():
        fmt = fmt.replace(directive, shown)
    return fmt


def cell_checks(
    col: Column,
    *,
    raw: pl.Expr,
    typed: pl.Expr,
    scope: pl.Expr,
    as_of: _dt.date | None,
    missing_codes: tuple[str, ...] = (),
    raw_dtype: pl.DataType | None = None,
) -> list[CellCheck]:
    """The checks of `col`, over its raw text `raw`, its typed value `typed` and `scope` (true on rows where its
    form belongs). `as_of` is 'today' for `today`/`now` range bounds (None: those bounds are not checked).
    `raw_dtype`: the type of a column read_intake kept typed (convert.keeps_type); None or String: text."""
    if raw_dtype is not None and raw_dtype != pl.String:
        return _typed_source_checks(col, raw, typed, scope, as_of, raw_dtype)
    out: list[CellCheck] = []
    is_missing = raw.is_in(list(missing_codes)) if missing_codes else pl.lit(False)
    blankish = raw.is_null() | (raw == "0") if col.kind in ("checkbox", "complete") else raw.is_null()
    out.append(_misplaced(col, blankish | scope))
    vt = col.validation
    if col.kind in ("date", "datetime", "time", "integer", "number"):
        out.append(_type(col, raw.is_null() | is_missing | typed.is_not_null() | spreadsheet.slashed_date(col, raw)))
        format_check = _decimals(col, raw.is_null() | is_missing | typed.is_null(), raw)
        out += [format_check] if format_check else []
        out += _range_checks(col, typed, as_of)
    elif vt is not None and col.kind == "text":
        out.append(
            CellCheck(
                "format",
                raw.is_null() | is_missing | raw.str.contains(vt.anchored),
                f"not a valid {vt.label}",
                f"not a valid {vt.label}: confirm the value",
            )
        )
    codes = col.codes
    if codes is not None:
        out.append(
            CellCheck(
                "choice",
                raw.is_null() | is_missing | raw.is_in(list(codes)) | spreadsheet.is_label(col, raw),
                f"not one of the codes {listing(codes)}",
                f"not one of the codes {listing(codes)} (a labels export? export raw data)",
            )
        )
    return out + spreadsheet.checks(col, raw=raw, typed=typed, is_missing=is_missing)


def _typed_source_checks(
    col: Column, raw: pl.Expr, typed: pl.Expr, scope: pl.Expr, as_of: _dt.date | None, dtype: pl.DataType
) -> list[CellCheck]:
    """`cell_checks` of a date or number column kept in its source type: the same checks, messages and order as
    over the text `readers.stringify` would give, minus those that text can never fail (a missing-data code,
    which keeps_type rules out; a date with slashes). The text is built only for a check that reads it."""
    from trialkit.records.readers import text_expr

    text = text_expr(raw, dtype)
    out = [_misplaced(col, raw.is_null() | scope), _type(col, raw.is_null() | typed.is_not_null())]
    format_check = _decimals(col, raw.is_null() | typed.is_null(), text)
    return out + ([format_check] if format_check else []) + _range_checks(col, typed, as_of)


def _misplaced(col: Column, ok: pl.Expr) -> CellCheck:
    return CellCheck(
        "misplaced",
        ok,
        f"value on a row where form {col.form!r} does not belong (wrong event or repeat instance)",
        f"filed where form {col.form!r} does not belong: move it to the right event or instance",
    )


def _type(col: Column, ok: pl.Expr) -> CellCheck:
    vt = col.validation
    label = vt.label if vt is not None else col.kind
    return CellCheck("type", ok, f"not a valid {label}", f"unreadable value (expected {expected_form(col)})")


def _decimals(col: Column, passes: pl.Expr, text: pl.Expr) -> CellCheck | None:
    """A number_Ndp field's decimals (a finding, still usable; a whole number passes, see the module doc)."""
    vt = col.validation
    if vt is None or vt.kind != "number" or vt.name in ("number", "number_comma_decimal"):
        return None
    return CellCheck(
        "format", passes | text.str.contains(vt.anchored) | text.str.contains(WHOLE), f"not in the form {vt.label}",
        usable=True,
    )


def _range_checks(col: Column, typed: pl.Expr, as_of: _dt.date | None) -> list[CellCheck]:
    field = col.field
    if field is None:
        return []
    lo_text, hi_text = field.min, field.max
    if field.type is FieldType.SLIDER:
        lo_text, hi_text = lo_text or "0", hi_text or "100"
    lo = range_bound(lo_text, col.kind, as_of)
    hi = range_bound(hi_text, col.kind, as_of)
    if lo is None and hi is None:
        return []
    ok = pl.lit(True)
    if lo is not None:
        ok = ok & (typed >= pl.lit(lo))
    if hi is not None:
        ok = ok & (typed <= pl.lit(hi))
    if lo is not None and hi is not None:
        message = f"outside the range {lo_text} to {hi_text}"
        hint = f"outside {lo_text}-{hi_text}: confirm the value"
    elif lo is not None:
        message = f"below the minimum {lo_text}"
        hint = f"below the minimum {lo_text}: confirm the value"
    else:
        message = f"above the maximum {hi_text}"
        hint = f"above the maximum {hi_text}: confirm the value"
    return [CellCheck("range", typed.is_null() | ok, message, hint)]


def range_bound(text: str, kind: str, as_of: _dt.date | None) -> object | None:
    """A field's min or max as a value of its kind; None when absent, unreadable, or 'today' without `as_of`."""
    text = text.strip()
    if not text:
        return None
    try:
        if text.lower() in ("today", "now"):
            if as_of is None:
                return None
            if kind == "datetime":
                return _dt.datetime.combine(as_of, _dt.time())
            return as_of if kind == "date" else None
        if kind == "date":
            return _dt.date.fromisoformat(text[:10])
        if kind == "datetime":
            return _dt.datetime.fromisoformat(text)
        if kind == "time":
            return _dt.time.fromisoformat(text)
        if kind == "integer":
            return float(text)
        if kind == "number":
            return float(text.replace(",", "."))
    except ValueError:
        return None
    return None


def listing(items, limit: int = 12) -> str:  # type: ignore[no-untyped-def]
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")
