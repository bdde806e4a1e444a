"""REDCap text validation types: what each accepts in its raw (API/export) form and how to read it.

Raw form is what REDCap's API exports and imports with the default `dateFormat=YMD`: dates and datetimes are
always ISO (`2024-02-29`, `2024-02-29 13:05`, `2024-02-29 13:05:09`) whatever the display format (`date_dmy`
only changes how the form shows it). Regexes are full-match patterns in the common subset of Python `re`
and Rust `regex` (no look-around, no back-references), so the same text serves per-cell checks
(`VALIDATION_TYPES[name].matches(s)`) and vectorised ones in polars
(`pl.col(c).str.contains(vt.anchored)`). A regex match is not the whole check for dates: `2023-02-30`
matches the pattern but `parse` rejects it (polars: `str.strptime(..., strict=False)` gives null).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

KINDS = ("date", "datetime", "time", "integer", "number", "text")

_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_HM = r"([01][0-9]|2[0-3]):[0-5][0-9]"
_HMS = _HM + r":[0-5][0-9]"


def _parse_int(s: str) -> int:
    return int(s)


def _parse_float(s: str) -> float:
    return float(s)


def _parse_comma_float(s: str) -> float:
    return float(s.replace(",", "."))


def _strptime(fmt: str, kind: str) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        value = _dt.datetime.strptime(s, fmt)
        if kind == "date":
            return value.date()
        if kind == "time":
            return value.time()
        return value

    return parse


@dataclass(frozen=True)
class ValidationType:
    """One REDCap validation type.

    - `kind`: date, datetime, time, integer, number or text (what the value means once parsed);
    - `pattern`: full-match regex of the raw string (use `anchored` for polars `str.contains`);
    - `strptime`: format for dates/times (Python and polars share these directives), else None;
    - `decimal_comma`: numbers written with a comma as decimal mark (replace ',' by '.' before casting);
    - `parse(raw)`: the Python value (date, datetime, time, int, float or str); raises ValueError if invalid.
    """

    name: str
    kind: str
    pattern: str
    label: str
    strptime: str | None = None
    decimal_comma: bool = False
    flags: int = 0
    _parser: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def anchored(self) -> str:
        prefix = "(?i)" if self.flags & re.IGNORECASE else ""
        return f"{prefix}^(?:{self.pattern})$"

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, self.flags)

    def matches(self, raw: str) -> bool:
        return self.regex.fullmatch(raw) is not None

    def parse(self, raw: str) -> Any:
        if not self.matches(raw):
            raise ValueError(f"{raw!r} is not a valid {self.name} value")
        if self._parser is None:
            return raw
        return self._parser(raw)

    def is_valid(self, raw: str) -> bool:
        try:
            self.parse(raw)
        except ValueError:
            return False
        return True


def _dt_type(name: str, kind: str, pattern: str, fmt: str, label: str) -> ValidationType:
    return ValidationType(name, kind, pattern, label, strptime=fmt, _parser=_strptime(fmt, kind))


def _build() -> dict[str, ValidationType]:
    types: list[ValidationType] = []
    for order in ("ymd", "mdy", "dmy"):
        types.append(_dt_type(f"date_{order}", "date", _DATE, "%Y-%m-%d", f"Date ({order.upper()})"))
        types.append(
            _dt_type(f"datetime_{order}", "datetime", f"{_DATE} {_HM}", "%Y-%m-%d %H:%M", f"Datetime ({order.upper()})")
        )
        types.append(
            _dt_type(
                f"datetime_seconds_{order}",
                "datetime",
                f"{_DATE} {_HMS}",
                "%Y-%m-%d %H:%M:%S",
                f"Datetime with seconds ({order.upper()})",
            )
        )
    types.append(_dt_type("time", "time", _HM, "%H:%M", "Time (HH:MM)"))
    types.append(_dt_type("time_hh_mm_ss", "time", _HMS, "%H:%M:%S", "Time (HH:MM:SS)"))
    types.append(_dt_type("time_mm_ss", "time", r"[0-5][0-9]:[0-5][0-9]", "%M:%S", "Time (MM:SS)"))
    types.append(ValidationType("integer", "integer", r"[-+]?[0-9]+", "Integer", _parser=_parse_int))
    types.append(
        ValidationType("number", "number", r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?", "Number", _parser=_parse_float)
    )
    types.append(
        ValidationType(
            "number_comma_decimal",
            "number",
            r"[-+]?[0-9]*,?[0-9]+([eE][-+]?[0-9]+)?",
            "Number (comma as decimal)",
            decimal_comma=True,
            _parser=_parse_comma_float,
        )
    )
    for dp in range(1, 5):
        types.append(
            ValidationType(
                f"number_{dp}dp", "number", rf"-?[0-9]+\.[0-9]{{{dp}}}", f"Number ({dp} decimal place)",
                _parser=_parse_float,
            )
        )
        types.append(
            ValidationType(
                f"number_{dp}dp_comma_decimal",
                "number",
                rf"-?[0-9]+,[0-9]{{{dp}}}",
                f"Number ({dp} decimal place, comma as decimal)",
                decimal_comma=True,
                _parser=_parse_comma_float,
            )
        )
    text = [
        (
            "email",
            r"[-!#$%&'*+/=?^_`{|}~A-Za-z0-9]+(\.[-!#$%&'*+/=?^_`{|}~A-Za-z0-9]+)*"
            r"@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?",
            "Email",
            0,
        ),
        (
            "phone",
            r"\(?[2-9][0-9]{2}\)?[-. ]?[2-9][0-9]{2}[-. ]?[0-9]{4}(\s*(x|ext\.?|extension)\s*[0-9]+)?",
            "Phone (North America)",
            re.IGNORECASE,
        ),
        ("phone_australia", r"(\(0[2-8]\)|0[2-8])[ ]?[0-9]{4}[ ]?[0-9]{4}", "Phone (Australia)", 0),
        ("zipcode", r"[0-9]{5}(-[0-9]{4})?", "Zipcode (U.S.)", 0),
        ("postalcode_australia", r"[0-9]{4}", "Postal code (Australia)", 0),
        (
            "postalcode_canada",
            r"[ABCEGHJKLMNPRSTVXY][0-9][A-Z] ?[0-9][A-Z][0-9]",
            "Postal code (Canada)",
            re.IGNORECASE,
        ),
        ("postalcode_french", r"(0[1-9]|[1-8][0-9]|9[0-8]|2A|2B)[0-9]{3}", "Postal code (France)", 0),
        ("postalcode_germany", r"[0-9]{5}", "Postal code (Germany)", 0),
        ("ssn", r"[0-9]{3}-[0-9]{2}-[0-9]{4}", "Social Security Number (U.S.)", 0),
        ("alpha_only", r"[A-Za-z]+", "Letters only", 0),
        ("mrn_10d", r"[0-9]{10}", "MRN (10 digits)", 0),
        ("mrn_generic", r"[A-Za-z0-9_-]+", "MRN (generic)", 0),
        ("vmrn", r"[0-9]{4,9}", "Vanderbilt MRN", 0),
        ("url", r"(https?|ftp)://[^\s]+", "URL", re.IGNORECASE),
    ]
    for name, pattern, label, flags in text:
        types.append(ValidationType(name, "text", pattern, label, flags=flags))
    return {t.name: t for t in types}


VALIDATION_TYPES: dict[str, ValidationType] = _build()

# Names older dictionaries and ODM files use for the same types.
ALIASES: dict[str, str] = {"int": "integer", "float": "number", "date": "date_ymd"}

# Not text validations, but accepted in the same dictionary column by other field types.
SLIDER_VALIDATIONS = frozenset({"", "number"})
FILE_VALIDATIONS = frozenset({"", "signature"})


_DATE_INPUT = {
    "MDY": re.compile(r"(?P<m>[0-9]{1,2})[-/](?P<d>[0-9]{1,2})[-/](?P<y>[0-9]{4})(?P<rest>( .*)?)"),
    "DMY": re.compile(r"(?P<d>[0-9]{1,2})[-/](?P<m>[0-9]{1,2})[-/](?P<y>[0-9]{4})(?P<rest>( .*)?)"),
    "YMD": re.compile(r"(?P<y>[0-9]{4})[-/](?P<m>[0-9]{1,2})[-/](?P<d>[0-9]{1,2})(?P<rest>( .*)?)"),
}


def to_raw(vt: ValidationType, value: str, date_format: str = "YMD") -> str:
    """An imported value in REDCap's raw form: the API's `dateFormat` (YMD, MDY or DMY, with '-' or '/') turned
    into ISO for date and datetime fields; other values unchanged. Raises ValueError when it is not valid."""
    if vt.kind in ("date", "datetime"):
        fmt = date_format.upper()
        if fmt not in _DATE_INPUT:
            raise ValueError(f"unknown date format {date_format!r} (YMD, MDY or DMY)")
        m = _DATE_INPUT[fmt].fullmatch(value)
        if m is not None:
            value = f"{m['y']}-{int(m['m']):02d}-{int(m['d']):02d}{m['rest'] or ''}"
    vt.parse(value)
    return value


def get(name: str) -> ValidationType | None:
    """The validation type called `name` (aliases resolved), or None if REDCap does not know it."""
    return VALIDATION_TYPES.get(ALIASES.get(name, name))


def kind_of(name: str) -> str:
    """'text' for no validation or an unknown one."""
    vt = get(name)
    return vt.kind if vt else "text"
