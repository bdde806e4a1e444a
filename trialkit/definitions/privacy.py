"""Which fields' values must never reach a report, a log or a finding."""

from __future__ import annotations

from trialkit.definitions.expressions import calc_references
from trialkit.definitions.model import Study


def identifying_fields(study: Study) -> frozenset[str]:
    """Identifier fields and every calculated field computed from one, through nested calcs: an age or initials
    derived from a birth date or a name reveal what the identifier flag protects."""
    names = {f.name for f in study.iter_fields() if f.identifier}
    calcs = calc_references(study)
    grew = True
    while grew:
        grew = False
        for name, refs in calcs.items():
            if name not in names and refs & names:
                names.add(name)
                grew = True
    return frozenset(names)
