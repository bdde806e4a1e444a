"""Branching logic and calculations of a study, checked with the logic checker, positions mapped into YAML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trialkit.definitions.model import FieldType, Study
from trialkit.definitions.yamlio import expression_position
from trialkit.errors import Diagnostic, LogicError, LogicSyntaxError

if TYPE_CHECKING:
    from trialkit.definitions.loader import SourceMap


def referenced_fields(text: str) -> set[str] | None:
    """Names of the fields an expression refers to, or None when it does not parse."""
    from trialkit.logic.ast import FieldRef, walk
    from trialkit.logic.parser import parse

    try:
        tree = parse(text)
    except (LogicError, RecursionError):
        return None
    return {n.name for n in walk(tree) if isinstance(n, FieldRef)}


def _expressions(study: Study):
    for f in study.iter_fields():
        if f.show_if.strip():
            yield f, "show_if", f.show_if, "branching logic"
        if f.type is FieldType.CALC and f.calculation.strip():
            yield f, "calculation", f.calculation, "calculation"


def check_expressions(study: Study, sources: SourceMap, *, standalone: bool = False) -> list[Diagnostic]:
    """LOG001 for syntax errors; the logic checker's own codes for unknown fields, types and choice codes."""
    from trialkit.logic import check, parse

    specs = study.field_specs()
    events = frozenset(e.name for e in study.events) if study.longitudinal else None
    repeating = frozenset(r for _, r in study.repeating_pairs)
    out: list[Diagnostic] = []
    for f, attr, text, what in _expressions(study):
        hit = sources.field_doc(f)

        def at(line: int, col: int, f=f, hit=hit, attr=attr) -> tuple[str | None, int | None, int | None]:
            if hit is None:
                return f.position.file, f.position.line, f.position.col
            doc, path = hit
            ln, cl = expression_position(doc, (*path, attr), line, col)
            return doc.path, ln, cl

        try:
            tree = parse(text)
        except LogicSyntaxError as exc:
            rel_line = getattr(exc, "rel_line", exc.line)
            rel_col = getattr(exc, "rel_col", exc.col)
            file, line, col = at(rel_line, rel_col)
            out.append(Diagnostic("LOG001", f"{what} of '{f.name}': {exc.message}", file, line, col))
            continue
        except LogicError as exc:
            file, line, col = at(1, 1)
            out.append(Diagnostic("LOG001", f"{what} of '{f.name}': {exc.message}", file, line, col))
            continue
        for d in check(tree, specs, events=events, repeating_forms=repeating, allow_extensions=False):
            if standalone and d.code in _UNKNOWN_FIELD_CODES:
                continue  # the field may live in another instrument of the study
            file, line, col = at(d.line or 1, d.col or 1)
            out.append(Diagnostic(d.code, f"{what} of '{f.name}': {d.message}", file, line, col, d.severity))
    return out


# Without the rest of the study, references to other instruments or events cannot be judged.
_UNKNOWN_FIELD_CODES = frozenset({"LOGIC001", "LOGIC005", "LOGIC006", "LOGIC012", "LOGIC013"})
