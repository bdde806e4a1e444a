"""The REDCap naming rules the sandbox uses, taken from trialkit.definitions (one rule, one place).

Only what definitions does not cover lives here: choices as plain pairs, and the default instrument label REDCap
derives from a form name (for forms created through the API's metadata import).
"""

from __future__ import annotations

from trialkit.definitions import dictionary, validation_types
from trialkit.definitions.redcap_names import checkbox_column, name_problem, unique_event_name

__all__ = [
    "checkbox_column",
    "default_form_label",
    "is_validation_type",
    "name_problem",
    "parse_choices",
    "parse_missing_codes",
    "unique_event_name",
]


def parse_choices(text: str) -> tuple[tuple[str, str], ...]:
    """`1, Yes | 2, No, maybe` -> (('1','Yes'), ('2','No, maybe')), by the definitions' own choice parser."""
    return tuple((c.code, c.label) for c in dictionary.parse_choices(text))


def parse_missing_codes(text: str) -> tuple[tuple[str, str], ...]:
    return parse_choices(text or "")


def default_form_label(form: str) -> str:
    text = form.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def is_validation_type(name: str) -> bool:
    return validation_types.get(name) is not None
