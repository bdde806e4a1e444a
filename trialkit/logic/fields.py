"""What the logic layer needs to know about fields, and how references map to data columns.

`FieldSpec` is built by callers (definitions, intake, the sandbox) from their own model: logic never imports
trialkit.definitions. Column naming follows REDCap's flat export, plus one trialkit convention for other
events: `[event][field]` reads the column ``"event:field"`` (neither REDCap event nor field names contain ':').
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from trialkit.logic.ast import FieldRef

FIELD_TYPES = frozenset(
    {
        "text",
        "notes",
        "dropdown",
        "radio",
        "checkbox",
        "yesno",
        "truefalse",
        "calc",
        "slider",
        "descriptive",
        "file",
        "sql",
    }
)
NUMBER_VALIDATIONS = frozenset(
    {"integer", "number", "number_1dp", "number_2dp", "number_3dp", "number_4dp", "int", "float"}
    | {f"number{s}_comma_decimal" for s in ("", "_1dp", "_2dp", "_3dp", "_4dp")}
)
DATE_VALIDATIONS = frozenset({"date_ymd", "date_mdy", "date_dmy", "date"})
DATETIME_VALIDATIONS = frozenset(
    {f"datetime_{o}" for o in ("ymd", "mdy", "dmy")} | {f"datetime_seconds_{o}" for o in ("ymd", "mdy", "dmy")}
)
TIME_VALIDATIONS = frozenset({"time", "time_mm_ss", "time_hh_mm_ss"})


@dataclass(frozen=True)
class FieldSpec:
    """One REDCap field as logic sees it. `choices` holds the choice codes; `events` None means every event."""

    name: str
    field_type: str = "text"
    validation: str | None = None
    choices: tuple[str, ...] = ()
    form: str | None = None
    events: frozenset[str] | None = None
    repeating: bool = False

    @property
    def kind(self) -> str:
        """'num', 'date', 'datetime', 'time', 'code' (choice codes), 'text' or 'none' (holds no value)."""
        if self.field_type in ("descriptive",):
            return "none"
        if self.field_type in ("calc", "slider") or self.validation in NUMBER_VALIDATIONS:
            return "num"
        if self.validation in DATE_VALIDATIONS:
            return "date"
        if self.validation in DATETIME_VALIDATIONS:
            return "datetime"
        if self.validation in TIME_VALIDATIONS:
            return "time"
        if self.field_type in ("dropdown", "radio", "checkbox", "yesno", "truefalse"):
            return "code"
        return "text"

    @property
    def codes(self) -> tuple[str, ...]:
        if self.field_type in ("yesno", "truefalse"):
            return ("1", "0")
        return self.choices


_NON_ALNUM = re.compile(r"[^a-z0-9]")


def checkbox_column(field: str, code: str) -> str:
    """REDCap's export column for one checkbox option: code lower-cased, non-alphanumerics turned into '_'."""
    return f"{field}___{_NON_ALNUM.sub('_', code.lower())}"


def event_column(event: str, column: str) -> str:
    """Column holding `column` (a field or checkbox column) of another event in a widened frame."""
    return f"{event}:{column}"


def ref_column(ref: FieldRef) -> str:
    """The data column a reference reads in the record frame: its field or checkbox-option column, under another
    event's name when prefixed ([event-name] is the row's own event)."""
    column = ref.name if ref.code is None else checkbox_column(ref.name, ref.code)
    if ref.event is not None and ref.event != "event-name":
        column = event_column(ref.event, column)
    return column


def widen_events(
    long: pl.DataFrame,
    *,
    record_id: str,
    event_column_name: str = "redcap_event_name",
    columns: Iterable[str] | None = None,
    keep_rows: bool = False,
) -> pl.DataFrame:
    """Turn a long record-event frame into one with ``"event:column"`` columns for `[event][field]` references.

    keep_rows=False: one row per record (first appearance order), only the widened columns plus the record id.
    keep_rows=True: the long rows themselves, each with every event's columns of its record attached, so an
    unprefixed [field] is the row's own event and [event][field] any other: filterLogic over record-events.
    Only non-repeating rows are widened (rows with a redcap_repeat_instance are ignored for the wide part).
    """
    skip = {record_id, event_column_name, "redcap_repeat_instrument", "redcap_repeat_instance"}
    cols = [c for c in (columns if columns is not None else long.columns) if c not in skip and c in long.columns]
    base = long
    if "redcap_repeat_instance" in long.columns:
        base = long.filter(pl.col("redcap_repeat_instance").is_null())
    ids = long.select(record_id).unique(maintain_order=True)
    wide = ids
    for event in base.get_column(event_column_name).drop_nulls().unique(maintain_order=True).to_list():
        part = (
            base.filter(pl.col(event_column_name) == event)
            .unique(subset=[record_id], keep="first", maintain_order=True)
            .select([pl.col(record_id), *[pl.col(c).alias(event_column(event, c)) for c in cols]])
        )
        wide = wide.join(part, on=record_id, how="left", maintain_order="left")
    if keep_rows:
        return long.join(wide, on=record_id, how="left", maintain_order="left")
    return wide
