"""Expressions of a study (branching logic, calculations, eligibility criteria) checked with the logic checker,
each problem placed in the YAML file it came from."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from trialkit.definitions.model import FieldType, Study
from trialkit.definitions.yamlio import expression_position
from trialkit.errors import Diagnostic, LogicError, LogicSyntaxError

if TYPE_CHECKING:
    from trialkit.definitions.loader import SourceMap

Place = tuple[str | None, int | None, int | None]  # file, line, col
#: (line, col) inside an expression, or (None, None) for the expression as a whole -> its place in the file.
Locate = Callable[[int | None, int | None], Place]
ExpressionCheck = Callable[..., list[Diagnostic]]


def referenced_fields(text: str) -> set[str] | None:
    """Names of the fields an expression refers to, or None when it does not parse."""
    from trialkit.logic.ast import FieldRef, walk
    from trialkit.logic.parser import parse

    try:
        tree = parse(text)
    except (LogicError, RecursionError):
        return None
    return {n.name for n in walk(tree) if isinstance(n, FieldRef)}


def calc_references(study: Study) -> dict[str, frozenset[str]]:
    """Each calculated field with an expression -> the fields it reads (by name: events and checkbox codes
    dropped; empty when it does not parse, which the checker reports). Worked out once per study."""
    try:
        return _calc_references(study)
    except TypeError:  # an unhashable study (a test double)
        return _calc_references.__wrapped__(study)


@functools.cache
def _calc_references(study: Study) -> dict[str, frozenset[str]]:
    return {
        f.name: frozenset(referenced_fields(f.calculation) or ())
        for f in study.iter_fields()
        if f.type is FieldType.CALC and f.calculation.strip()
    }


def expression_checker(
    study: Study, *, allow_extensions: bool, strict_codes: bool = False, per_record: bool = False
) -> ExpressionCheck:
    """A function that checks one expression against the study's fields:
    `check(text, context, locate, skip=codes)` -> LOG001 for a syntax error, else the logic checker's own codes
    (unknown field, wrong type, checkbox code not a choice...), each message prefixed with `context`.
    `strict_codes`: a comparison with a value that is not a code of the field is an error, not a warning.
    `per_record`: the expression is judged once per record (an eligibility criterion), so a field of an
    instrument that repeats wherever it is collected must name its instances (LOGIC018), and other events,
    relative instances and smart variables other than [record-name] are errors (LOGIC019)."""
    from trialkit.logic import check, parse

    specs = study.field_specs()
    events = frozenset(e.name for e in study.events) if study.longitudinal else None
    repeating = frozenset(r for _, r in study.repeating_pairs)
    missing = tuple(c.code for c in study.missing_codes)
    per_record_forms = frozenset(
        form for form in repeating if all(study.is_repeating(form, e) for e in study.events_of(form))
    ) if per_record else None

    def check_one(text: str, context: str, locate: Locate, *, skip: frozenset[str] = frozenset()) -> list[Diagnostic]:
        try:
            tree = parse(text)
        except LogicSyntaxError as exc:
            line, col = getattr(exc, "rel_line", exc.line), getattr(exc, "rel_col", exc.col)
            return [Diagnostic("LOG001", f"{context}: {exc.message}", *locate(line, col))]
        except LogicError as exc:
            return [Diagnostic("LOG001", f"{context}: {exc.message}", *locate(None, None))]
        return [
            Diagnostic(d.code, f"{context}: {d.message}", *locate(d.line, d.col), d.severity)
            for d in check(tree, specs, events=events, repeating_forms=repeating, allow_extensions=allow_extensions,
                           missing_codes=missing, strict_codes=strict_codes, per_record_forms=per_record_forms)
            if d.code not in skip
        ]

    return check_one


def _expressions(study: Study):
    for f in study.iter_fields():
        if f.show_if.strip():
            yield f, "show_if", f.show_if, "branching logic"
        if f.type is FieldType.CALC and f.calculation.strip():
            yield f, "calculation", f.calculation, "calculation"


def check_expressions(study: Study, sources: SourceMap, *, standalone: bool = False) -> list[Diagnostic]:
    """Every branching logic and calculation of the study, checked (no trialkit extensions: REDCap runs these)."""
    check = expression_checker(study, allow_extensions=False)
    # Without the rest of the study, references to other instruments or events cannot be judged.
    skip = _UNKNOWN_FIELD_CODES if standalone else frozenset()
    out: list[Diagnostic] = []
    for f, attr, text, what in _expressions(study):
        hit = sources.field_doc(f)

        def locate(line: int | None, col: int | None, f=f, hit=hit, attr=attr) -> Place:
            if hit is None:
                return f.position.file, f.position.line, f.position.col
            doc, path = hit
            return (doc.path, *expression_position(doc, (*path, attr), line or 1, col or 1))

        out += check(text, f"{what} of '{f.name}'", locate, skip=skip)
    return out


_UNKNOWN_FIELD_CODES = frozenset({"LOGIC001", "LOGIC005", "LOGIC006", "LOGIC012", "LOGIC013"})
