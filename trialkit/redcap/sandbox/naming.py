"""REDCap naming rules the sandbox needs: checkbox export columns, choice strings, unique event names.

These follow redcap-api.md §2.1/§3.2. When trialkit.definitions publishes its own naming helpers this module
becomes a re-export of them (one rule, one place).
"""

from __future__ import annotations

import re

from trialkit.definitions import validation_types

_NON_ALNUM = re.compile(r"[^a-z0-9]")


def checkbox_column(field: str, code: str) -> str:
    """`cb` + `-4` -> `cb____4`; the code is lowercased and non-alphanumerics become `_`."""
    return f"{field}___{_NON_ALNUM.sub('_', code.lower())}"


def parse_choices(text: str) -> tuple[tuple[str, str], ...]:
    """`1, Yes | 2, No, maybe` -> (('1','Yes'), ('2','No, maybe')); label-only choices use the label as code."""
    out = []
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        code, sep, label = part.partition(",")
        out.append((code.strip(), label.strip()) if sep else (part, part))
    return tuple(out)


def parse_missing_codes(text: str) -> tuple[tuple[str, str], ...]:
    return parse_choices(text or "")


def default_form_label(form: str) -> str:
    text = form.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def unique_event_name(label: str, arm_num: int, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`Screening / Enrollment`, arm 1 -> `screening__enrollm_arm_1` (18 characters of the label, then a suffix)."""
    base = _NON_ALNUM.sub("_", label.lower())[:18] or "event"
    name = f"{base}_arm_{arm_num}"
    n = 2
    while name in taken:
        # collisions: REDCap appends a letter-free counter to the stem [?]; keep it deterministic
        name = f"{base[:16]}{n:02d}_arm_{arm_num}"
        n += 1
    return name


def is_validation_type(name: str) -> bool:
    return validation_types.get(name) is not None
