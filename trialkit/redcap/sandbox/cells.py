"""Per-cell import checks: one function per field, built once from the dictionary row.

A check takes the raw cell text (never blank: blanks are handled by the caller) and the request's
`dateFormat`, and returns (stored value, None) or (None, message). Messages are REDCap's own texts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping

from trialkit.definitions import validation_types

FORMAT_MESSAGE = (
    "The value you provided could not be validated because it does not follow the expected format. Please try again."
)
IGNORED = object()  # marker: REDCap accepts the cell but does not store it (calc values, file names)

CellCheck = Callable[[str, str], tuple[object, str | None]]

_US_DATE = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})(.*)$")


def _to_ymd(value: str, date_format: str) -> str:
    """MDY/DMY input (`02/24/2023`, `24/02/2023`, with an optional time part) to ISO; anything else unchanged."""
    if date_format == "YMD":
        return value
    m = _US_DATE.match(value)
    if not m:
        return value
    a, b, year, rest = m.groups()
    month, day = (a, b) if date_format == "MDY" else (b, a)
    return f"{year}-{int(month):02d}-{int(day):02d}{rest}"


def checker_for(row: Mapping[str, str], choices: tuple[tuple[str, str], ...], missing: frozenset[str]) -> CellCheck:
    ftype = row["field_type"]
    name = row["field_name"]
    validation = row["text_validation_type_or_show_slider_number"]

    def with_missing(check: CellCheck) -> CellCheck:
        if not missing:
            return check

        def inner(value: str, date_format: str) -> tuple[object, str | None]:
            if value in missing:
                return value, None
            return check(value, date_format)

        return inner

    if ftype in ("calc", "file"):
        return lambda value, date_format: (IGNORED, None)
    if ftype in ("dropdown", "radio", "yesno", "truefalse"):
        codes = frozenset(c for c, _ in choices)
        message = f"The value is not a valid category for {name}"

        def choice(value: str, date_format: str) -> tuple[object, str | None]:
            return (value, None) if value in codes else (None, message)

        return with_missing(choice)
    if ftype == "slider":
        lo = _num(row["text_validation_min"], 0)
        hi = _num(row["text_validation_max"], 100)

        def slider(value: str, date_format: str) -> tuple[object, str | None]:
            try:
                number = int(value)
            except ValueError:
                return None, FORMAT_MESSAGE
            return (value, None) if lo <= number <= hi else (None, FORMAT_MESSAGE)

        return with_missing(slider)
    if ftype == "text" and validation:
        vt = validation_types.get(validation)
        if vt is None:
            return lambda value, date_format: (value, None)
        if vt.kind in ("date", "datetime"):
            # the type's regex, then the calendar (2023-02-30) with the C date parser: strptime costs 30 us a cell
            def validated(value: str, date_format: str) -> tuple[object, str | None]:
                value = _to_ymd(value, date_format)
                if not vt.matches(value):
                    return None, FORMAT_MESSAGE
                try:
                    dt.date.fromisoformat(value[:10])
                except ValueError:
                    return None, FORMAT_MESSAGE
                return value, None
        else:
            def validated(value: str, date_format: str) -> tuple[object, str | None]:
                return (value, None) if vt.is_valid(value) else (None, FORMAT_MESSAGE)

        return with_missing(validated)
    return lambda value, date_format: (value, None)


def _num(text: str, default: int) -> float:
    try:
        return float(text)
    except ValueError:
        return default


