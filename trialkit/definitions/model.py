"""The study definition model: frozen dataclasses, no I/O.

The model mirrors REDCap's data dictionary closely enough that dictionary -> model -> dictionary is lossless:
values that trialkit interprets (choices, validation, min/max) are kept as REDCap's text, and where a
dictionary cell cannot be reproduced from the parsed form (odd spacing in a choice list, label-only choices)
the raw cell is kept beside it (`choices_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from trialkit.definitions.redcap_names import complete_field
from trialkit.definitions.validation_types import kind_of


class FieldType(StrEnum):
    TEXT = "text"
    NOTES = "notes"
    DROPDOWN = "dropdown"
    RADIO = "radio"
    CHECKBOX = "checkbox"
    YESNO = "yesno"
    TRUEFALSE = "truefalse"
    CALC = "calc"
    SLIDER = "slider"
    DESCRIPTIVE = "descriptive"
    FILE = "file"
    SQL = "sql"


CHOICE_TYPES = frozenset({FieldType.DROPDOWN, FieldType.RADIO, FieldType.CHECKBOX})
# Fields that hold no value of their own in a record (REDCap exports no column for them).
NO_DATA_TYPES = frozenset({FieldType.DESCRIPTIVE})

YESNO_CHOICES = (("1", "Yes"), ("0", "No"))
TRUEFALSE_CHOICES = (("1", "True"), ("0", "False"))

_ACTION_TAG = re.compile(r"(?<![\w@])@([A-Z][A-Z0-9_-]*)")


@dataclass(frozen=True)
class Position:
    """Where a definition came from (1-based line and column), for diagnostics."""

    file: str | None = None
    line: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class Choice:
    code: str
    label: str


@dataclass(frozen=True)
class Field:
    """One REDCap field. Text-valued attributes are REDCap's own cell text ("" when blank)."""

    name: str
    type: FieldType
    form: str
    label: str = ""
    section_header: str = ""
    note: str = ""
    choices: tuple[Choice, ...] = ()
    # The dictionary cell verbatim when it cannot be rebuilt from `choices` (lossless import).
    choices_text: str | None = None
    calculation: str = ""
    slider_labels: tuple[str, ...] = ()
    validation: str = ""  # text validation type; for sliders "number" shows the number; for files "signature"
    min: str = ""
    max: str = ""
    identifier: bool = False
    required: bool = False
    show_if: str = ""  # branching logic, REDCap syntax
    alignment: str = ""  # LV, LH, RV, RH; "" is REDCap's default (RV)
    question_number: str = ""
    matrix_group: str = ""
    matrix_ranking: bool = False
    annotation: str = ""  # field annotation: action tags and free notes, verbatim
    position: Position = field(default=Position(), compare=False, repr=False)

    @property
    def action_tags(self) -> tuple[str, ...]:
        """Action tag names in the annotation, e.g. ('@READONLY', '@HIDDEN-SURVEY')."""
        return tuple(f"@{m}" for m in _ACTION_TAG.findall(self.annotation))

    @property
    def has_data(self) -> bool:
        return self.type not in NO_DATA_TYPES

    @property
    def effective_choices(self) -> tuple[Choice, ...]:
        """Choices including the implicit ones of yesno and truefalse."""
        if self.type is FieldType.YESNO:
            return tuple(Choice(c, lab) for c, lab in YESNO_CHOICES)
        if self.type is FieldType.TRUEFALSE:
            return tuple(Choice(c, lab) for c, lab in TRUEFALSE_CHOICES)
        return self.choices

    @property
    def choice_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.effective_choices)

    @property
    def value_kind(self) -> str:
        """What kind of value the field holds: date, datetime, time, integer, number, choice, checkbox, text,
        file or none. Used by the logic checker and by intake validation."""
        t = self.type
        if t is FieldType.TEXT:
            return kind_of(self.validation)
        if t in (FieldType.DROPDOWN, FieldType.RADIO, FieldType.YESNO, FieldType.TRUEFALSE):
            return "choice"
        if t is FieldType.CHECKBOX:
            return "checkbox"
        if t is FieldType.CALC:
            return "number"
        if t is FieldType.SLIDER:
            return "integer"
        if t is FieldType.FILE:
            return "file"
        if t is FieldType.DESCRIPTIVE:
            return "none"
        return "text"  # notes, sql


@dataclass(frozen=True)
class Instrument:
    name: str
    fields: tuple[Field, ...]
    label: str = ""
    position: Position = field(default=Position(), compare=False, repr=False)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def complete_field(self) -> str:
        return complete_field(self.name)


@dataclass(frozen=True)
class Event:
    """A REDCap event. `name` is REDCap's unique event name (what data and logic use, e.g. 'screening_arm_1');
    `label` is the event name shown in REDCap ('Screening')."""

    name: str
    label: str
    arm: int
    instruments: tuple[str, ...] = ()
    repeating: tuple[str, ...] = ()  # repeating instruments in this event
    day_offset: int = 0
    offset_min: int = 0
    offset_max: int = 0
    position: Position = field(default=Position(), compare=False, repr=False)


@dataclass(frozen=True)
class Arm:
    number: int
    name: str
    events: tuple[Event, ...] = ()
    position: Position = field(default=Position(), compare=False, repr=False)


@dataclass(frozen=True)
class Study:
    """A whole study: project settings, instruments in dictionary order, and (when longitudinal) the schedule."""

    name: str
    instruments: tuple[Instrument, ...]
    title: str = ""
    protocol_version: str = ""
    arms: tuple[Arm, ...] = ()
    # Repeating instruments of a classic (non-longitudinal) project; longitudinal ones live on each Event.
    repeating_instruments: tuple[str, ...] = ()
    missing_codes: tuple[Choice, ...] = ()
    # Data Access Groups (sites of a multi-site trial), by their names as shown in REDCap ("Site A")
    data_access_groups: tuple[str, ...] = ()
    source: str | None = field(default=None, compare=False)  # the study file, when loaded from one
    position: Position = field(default=Position(), compare=False, repr=False)

    # ---- navigation -------------------------------------------------------------------------------------
    @property
    def longitudinal(self) -> bool:
        return bool(self.arms)

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(e for a in self.arms for e in a.events)

    def event(self, name: str) -> Event:
        for e in self.events:
            if e.name == name:
                return e
        raise KeyError(name)

    def instrument(self, name: str) -> Instrument:
        for i in self.instruments:
            if i.name == name:
                return i
        raise KeyError(name)

    def iter_fields(self) -> Iterator[Field]:
        for inst in self.instruments:
            yield from inst.fields

    @cached_property
    def fields(self) -> dict[str, Field]:
        """Every field by name, in dictionary order (the first one where a name is defined twice). Cached: the
        study is frozen; treat the dict as read-only."""
        out: dict[str, Field] = {}
        for f in self.iter_fields():
            out.setdefault(f.name, f)
        return out

    def field(self, name: str) -> Field:
        return self.fields[name]

    @property
    def record_id_field(self) -> str:
        """REDCap's record id field: the first field of the first instrument."""
        for f in self.iter_fields():
            return f.name
        return "record_id"

    def is_repeating(self, instrument: str, event: str | None = None) -> bool:
        if not self.longitudinal:
            return instrument in self.repeating_instruments
        events = self.events if event is None else (self.event(event),)
        return any(instrument in e.repeating for e in events)

    @property
    def repeating_pairs(self) -> tuple[tuple[str, str], ...]:
        """(unique event name or '', form name) for every repeating instrument."""
        if not self.longitudinal:
            return tuple(("", r) for r in self.repeating_instruments)
        return tuple((e.name, r) for e in self.events for r in e.repeating)

    def events_of(self, instrument: str) -> tuple[str, ...]:
        return tuple(e.name for e in self.events if instrument in e.instruments)

    # ---- bridges to other parts (imported lazily to keep the model import-light) --------------------------
    def field_specs(self) -> dict:
        """FieldSpec for every field, and each form's `<form>_complete` status, for the logic checker/evaluator."""
        from trialkit.definitions.specs import field_specs

        return field_specs(self)

    def export_field_names(self) -> list[str]:
        from trialkit.definitions.redcap_names import export_field_names

        return export_field_names(self)
