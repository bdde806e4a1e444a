"""Raw REDCap text to typed polars columns, one expression per data column, driven by the field definitions.

A cell that does not parse becomes null in the typed column; validation finds those cells by comparing the raw
and the typed frame (raw present, typed null), so conversion itself never fails on bad data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import polars as pl

from trialkit.definitions import validation_types
from trialkit.definitions.model import Field, FieldType, Study
from trialkit.definitions.redcap_names import checkbox_column

# Columns REDCap adds around the fields (section 2.1 of the REDCap notes).
EVENT = "redcap_event_name"
REPEAT_INSTRUMENT = "redcap_repeat_instrument"
REPEAT_INSTANCE = "redcap_repeat_instance"
DAG = "redcap_data_access_group"
SURVEY_ID = "redcap_survey_identifier"
META_COLUMNS = (EVENT, REPEAT_INSTRUMENT, REPEAT_INSTANCE, DAG, SURVEY_ID)

COMPLETE_CODES = ("0", "1", "2")

_INTEGER = r"^[-+]?[0-9]+$"
WHOLE = r"^-?[0-9]+$"  # a whole number as a number_Ndp field may hold it (see padded_decimals)

DTYPES: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "time": pl.Time(),
    "integer": pl.Int64(),
    "number": pl.Float64(),
}


@dataclass(frozen=True)
class Column:
    """One data column of the study's export: a plain field, one checkbox option, or `<form>_complete`."""

    name: str
    form: str
    kind: str  # date, datetime, time, integer, number, choice, checkbox, text, file, complete
    field: Field | None = None  # None for <form>_complete
    code: str | None = None  # checkbox option

    @property
    def dtype(self) -> pl.DataType:
        return DTYPES.get(self.kind, pl.String())

    @property
    def field_name(self) -> str:
        return self.field.name if self.field is not None else self.name

    @property
    def identifier(self) -> bool:
        return bool(self.field is not None and self.field.identifier)

    @property
    def codes(self) -> tuple[str, ...] | None:
        """Allowed codes for coded columns, else None."""
        if self.kind == "complete":
            return COMPLETE_CODES
        if self.kind == "checkbox":
            return ("0", "1")
        if self.kind == "choice" and self.field is not None:
            return self.field.choice_codes
        return None

    @property
    def validation(self) -> validation_types.ValidationType | None:
        if self.field is None or self.field.type is not FieldType.TEXT:
            return None
        return validation_types.get(self.field.validation)


def _kind(field: Field) -> str:
    if field.type is FieldType.TEXT:
        return validation_types.kind_of(field.validation)
    return field.value_kind


@cache
def _columns_cached(study: Study) -> tuple[Column, ...]:
    out: list[Column] = []
    for inst in study.instruments:
        for field in inst.fields:
            if not field.has_data:
                continue
            if field.type is FieldType.CHECKBOX:
                out.extend(
                    Column(checkbox_column(field.name, c.code), inst.name, "checkbox", field, c.code)
                    for c in field.choices
                )
            else:
                out.append(Column(field.name, inst.name, _kind(field), field))
        out.append(Column(inst.complete_field, inst.name, "complete"))
    return tuple(out)


def study_columns(study: Study) -> tuple[Column, ...]:
    """Every data column of the study, in REDCap export order (each form's fields, then its _complete)."""
    try:
        return _columns_cached(study)
    except TypeError:  # an unhashable study (a test double): compute without the cache
        return _columns_cached.__wrapped__(study)


def typed_expr(column: Column, raw: pl.Expr | None = None, *, missing_codes: tuple[str, ...] = ()) -> pl.Expr:
    """The typed value of `column` from its raw text (null where the text does not parse). A coded field keeps
    its code, or the study's missing-data code, and is null for anything else: "2" in a yes/no field is not an
    answer, and screening must not read it as "not yes"."""
    raw = pl.col(column.name) if raw is None else raw
    kind = column.kind
    codes = column.codes
    if codes is not None:
        return pl.when(raw.is_in([*codes, *missing_codes])).then(raw).otherwise(None).alias(column.name)
    vt = column.validation
    if kind in ("date", "datetime", "time"):
        if vt is None or vt.strptime is None:  # a calc date or similar: accept REDCap's ISO raw form
            fmt = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%d %H:%M", "time": "%H:%M"}[kind]
            pattern = {
                "date": validation_types.get("date_ymd"),
                "datetime": validation_types.get("datetime_ymd"),
                "time": validation_types.get("time"),
            }[kind]
            anchored = pattern.anchored if pattern else ".*"
        else:
            fmt, anchored = vt.strptime, vt.anchored
        parsed = raw.str.strptime(column.dtype, fmt, strict=False)
        return pl.when(raw.str.contains(anchored)).then(parsed).otherwise(None).alias(column.name)
    if kind == "integer":
        return (
            pl.when(raw.str.contains(_INTEGER))
            .then(raw.cast(pl.Int64, strict=False))
            .otherwise(None)
            .alias(column.name)
        )
    if kind == "number":
        # The generic number form types the value; stricter forms (number_1dp...) are validation's business.
        comma = vt is not None and vt.decimal_comma
        number = validation_types.get("number_comma_decimal" if comma else "number")
        assert number is not None
        value = (raw.str.replace(",", ".", literal=True) if comma else raw).cast(pl.Float64, strict=False)
        # "1e400" matches the number form but is no number (infinity): it must not pass every threshold
        return pl.when(raw.str.contains(number.anchored) & value.is_finite()).then(value).otherwise(None).alias(
            column.name
        )
    return raw.alias(column.name)


def keeps_type(column: Column, dtype: pl.DataType, missing_codes: tuple[str, ...] = ()) -> bool:
    """Whether a typed source column (Parquet) can be typed for `column` without a round trip through REDCap's
    text: `typed_from_source` then gives exactly what `typed_expr` gives from `readers.stringify`'s text, at a
    fraction of the time and memory (a million candidates' dates, doses and blood pressures are not written out
    and parsed back). Other pairs (a number for a choice, a date in a datetime field...) go through the text."""
    kind = column.kind
    vt = column.validation
    if kind == "date":
        return dtype == pl.Date or (isinstance(dtype, pl.Datetime) and dtype.time_zone is None)
    if kind == "datetime":
        minutes = vt is None or not vt.name.startswith("datetime_seconds")
        return minutes and isinstance(dtype, pl.Datetime) and dtype.time_zone is None
    if kind in ("integer", "number"):
        if (vt is not None and vt.decimal_comma) or any(_NUMERIC.fullmatch(code) for code in missing_codes):
            return False  # a numeric missing-data code must stay text: the checks compare it with the codes
        return dtype.is_integer() or dtype == pl.Float64
    return False


_NUMERIC = re.compile(r"\s*[-+]?[0-9.]+\s*")


def typed_from_source(column: Column, dtype: pl.DataType) -> pl.Expr:
    """The typed value of a column `keeps_type` accepts, straight from its source type (null where the text form
    would not parse, as in `typed_expr`)."""
    src = pl.col(column.name)
    kind = column.kind
    if kind == "date":
        if dtype == pl.Date:
            year = src.dt.year()
            return pl.when((year >= 0) & (year <= 9999)).then(src).alias(column.name)
        # a date-time at midnight is a date (Excel and Parquet writers store dates so); any other time is not
        midnight = (src.dt.hour() == 0) & (src.dt.minute() == 0) & (src.dt.second() == 0)
        year = src.dt.year()
        return pl.when(midnight & (year >= 0) & (year <= 9999)).then(src.dt.date()).alias(column.name)
    if kind == "datetime":
        year = src.dt.year()
        whole_minute = src.dt.second() == 0
        return (
            pl.when(whole_minute & (year >= 0) & (year <= 9999))
            .then(src.dt.truncate("1m").cast(pl.Datetime("us")))
            .alias(column.name)
        )
    if kind == "integer":
        if dtype.is_integer():
            return src.cast(pl.Int64, strict=False).alias(column.name)
        exact = src.is_finite() & (src == src.round(0)) & (src.abs() < 2**53)
        return pl.when(exact).then(src.cast(pl.Int64, strict=False)).alias(column.name)
    if kind == "number":
        if dtype.is_integer():
            return src.cast(pl.Float64).alias(column.name)
        return pl.when(src.is_finite()).then(src).alias(column.name)
    raise ValueError(f"{column.name}: no typed pass-through for a {kind} field from {dtype}")


def unchanged_from_source(column: Column, dtype: pl.DataType) -> pl.Expr | None:
    """An aggregate over a source column that is true when `typed_from_source` gives the column itself: every date
    within REDCap's years, every number finite. The column is then used as read (eleven date columns of 4.5
    million rows are each a copy otherwise). None when typing always rewrites it (another type, date-times)."""
    src = pl.col(column.name)
    if column.kind == "date" and dtype == pl.Date:
        return ((src.min().dt.year() >= 0) & (src.max().dt.year() <= 9999)).fill_null(True)
    if column.kind == "integer" and dtype == pl.Int64:
        return pl.lit(True)
    if column.kind == "number" and dtype == pl.Float64:
        return ~(src.is_nan() | src.is_infinite()).any()
    return None


_DECIMALS = re.compile(r"number_([1-4])dp(_comma_decimal)?")


def padded_decimals(raw: pl.Expr, validation: str) -> pl.Expr:
    """`raw` with a whole number written with the decimals its `number_Ndp` validation asks for (`175` as `175.0`,
    or `175,0` with a decimal comma): validation accepts `175` in a one-decimal field, as REDCap's data entry does,
    but REDCap's API import refuses it. Other values and other validations are unchanged."""
    m = _DECIMALS.fullmatch(validation or "")
    if m is None:
        return raw
    tail = ("," if m.group(2) else ".") + "0" * int(m.group(1))
    return pl.when(raw.str.contains(WHOLE)).then(raw + pl.lit(tail)).otherwise(raw)


def null_column(column: Column) -> pl.Expr:
    return pl.lit(None, dtype=column.dtype).alias(column.name)
