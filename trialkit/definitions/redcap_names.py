"""How REDCap names things derived from a study: checkbox columns, form status fields, unique event names."""

from __future__ import annotations

import itertools
import re
import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trialkit.definitions.model import Field, Study

FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED_COLUMNS = (
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
    "redcap_data_access_group",
    "redcap_survey_identifier",
)


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid REDCap field or form name, or None when it is."""
    if not FIELD_NAME.fullmatch(name):
        return "must be lowercase letters, digits and _, starting with a letter"
    if "__" in name:
        return "must not contain '__' (REDCap uses it for checkbox columns)"
    if name.endswith("_"):
        return "must not end with '_'"
    return None


def checkbox_suffix(code: str) -> str:
    """The column suffix REDCap uses for a checkbox choice: lowercased, non-alphanumerics turned into '_'."""
    return re.sub(r"[^a-z0-9]", "_", code.lower())


def checkbox_column(field_name: str, code: str) -> str:
    """`cb` + `-4` -> `cb____4`; `k>=9` -> `cb___k__9`; `ABC` -> `cb___abc`."""
    return f"{field_name}___{checkbox_suffix(code)}"


def complete_field(form_name: str) -> str:
    return f"{form_name}_complete"


def unique_event_name(label: str, arm: int, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """REDCap's unique event name for an event label in an arm.

    Lowercase, characters other than letters, digits, spaces and '_' dropped, spaces turned into '_', cut to
    18 characters, then `_arm_<n>` ("Screening & Enrollm..." -> `screening__enrollm_arm_1`, as observed).
    A clash with a name in `taken` gets a letter before the arm suffix (`screening_a_arm_1`), REDCap-like; after
    `z`, two letters (`screening_aa_arm_1`) and so on: there is always a free name.
    """
    base = re.sub(r"[^a-z0-9 _]", "", label.lower()).replace(" ", "_")[:18]
    if not base:
        base = "event"
    name = f"{base}_arm_{arm}"
    if name not in taken:
        return name
    for width in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=width):
            candidate = f"{base[:17 - width]}_{''.join(letters)}_arm_{arm}"
            if candidate not in taken:
                return candidate
    raise AssertionError("unreachable")  # itertools.count never ends


def field_columns(f: Field) -> list[tuple[str, str]]:
    """(choice value, export column) of each column one field exports: one per checkbox choice, else the field
    itself with choice value '', none for a descriptive field."""
    from trialkit.definitions.model import FieldType

    if f.type is FieldType.CHECKBOX:
        return [(c.code, checkbox_column(f.name, c.code)) for c in f.choices]
    return [("", f.name)] if f.has_data else []


def export_field_names(study: Study, *, with_complete: bool = True) -> list[str]:
    """Every data column of a flat record export, in REDCap's order (without the event/repeat columns):
    fields in dictionary order, checkbox choices expanded, `<form>_complete` right after each form's last field.
    """
    out: list[str] = []
    for inst in study.instruments:
        for f in inst.fields:
            out += [column for _, column in field_columns(f)]
        if with_complete:
            out.append(complete_field(inst.name))
    return out


def export_field_names_rows(study: Study) -> list[dict[str, str]]:
    """REDCap's exportFieldNames reply: original_field_name, choice_value, export_field_name (no _complete)."""
    return [
        {"original_field_name": f.name, "choice_value": value, "export_field_name": column}
        for f in study.iter_fields()
        for value, column in field_columns(f)
    ]


def record_columns(study: Study) -> list[str]:
    """Leading columns of a flat export: record id, then event and repeat columns when the project has them."""
    cols = [study.record_id_field]
    if study.longitudinal:
        cols.append("redcap_event_name")
    if study.repeating_pairs:
        cols += ["redcap_repeat_instrument", "redcap_repeat_instance"]
    return cols
