"""Which fields' values must never reach a report, a log or a finding."""

from __future__ import annotations

from trialkit.definitions.model import FieldType, Study


def identifying_fields(study: Study) -> frozenset[str]:
    """Identifier fields and every calculated field computed from one, through nested calcs: an age or initials
    derived from a birth date or a name reveal what the identifier flag protects."""
    from trialkit.logic import parse, reference_columns

    names = {f.name for f in study.iter_fields() if f.identifier}
    calcs: dict[str, set[str]] = {}
    for f in study.iter_fields():
        if f.type is FieldType.CALC and f.calculation.strip():
            try:
                calcs[f.name] = {c.split(":", 1)[-1] for c in reference_columns(parse(f.calculation))}
            except Exception:  # a broken calc is the definitions checker's business
                continue
    grew = True
    while grew:
        grew = False
        for name, refs in calcs.items():
            if name not in names and refs & names:
                names.add(name)
                grew = True
    return frozenset(names)
