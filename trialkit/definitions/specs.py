"""The study's fields as the logic layer sees them (`trialkit.logic.FieldSpec`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trialkit.definitions.redcap_names import complete_field

if TYPE_CHECKING:
    from trialkit.definitions.model import Study
    from trialkit.logic.fields import FieldSpec

FORM_STATUS_CODES = ("0", "1", "2")  # Incomplete, Unverified, Complete


def field_specs(study: Study, *, with_complete: bool = True) -> dict[str, FieldSpec]:
    """FieldSpec for every field, keyed by name, in dictionary order; plus each `<form>_complete` status field
    (a radio with codes 0/1/2), which REDCap logic may reference too."""
    from trialkit.logic.fields import FieldSpec

    out: dict[str, FieldSpec] = {}
    for inst in study.instruments:
        events = frozenset(study.events_of(inst.name)) if study.longitudinal else None
        repeating = study.is_repeating(inst.name)
        for f in inst.fields:
            if f.name in out:
                continue
            out[f.name] = FieldSpec(
                name=f.name,
                field_type=f.type.value,
                validation=f.validation or None,
                choices=tuple(c.code for c in f.choices),
                form=inst.name,
                events=events,
                repeating=repeating,
            )
        status = complete_field(inst.name)
        if with_complete and status not in out:
            out[status] = FieldSpec(
                name=status,
                field_type="radio",
                choices=FORM_STATUS_CODES,
                form=inst.name,
                events=events,
                repeating=repeating,
            )
    return out
