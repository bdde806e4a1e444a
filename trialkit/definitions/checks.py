"""Semantic checks of a study: names, choices, ranges, calculations, schedule, and every expression.

Codes are stable; each is listed in CODES with what it means (tests cover each one).
"""

from __future__ import annotations

from collections.abc import Iterator

from trialkit.definitions import validation_types
from trialkit.definitions.loader import SourceMap
from trialkit.definitions.model import CHOICE_TYPES, Field, FieldType, Study
from trialkit.definitions.redcap_names import (
    FIELD_NAME,
    RESERVED_COLUMNS,
    checkbox_column,
    complete_field,
    name_problem,
)
from trialkit.definitions.shown import mask_quoted
from trialkit.errors import Diagnostic, Severity

CODES = {
    "IO001": "file cannot be read / not found",
    "IO002": "file is not UTF-8 text",
    "YAML001": "not valid YAML",
    "YAML002": "duplicate key",
    "YAML003": "unsupported YAML construct (complex key, merge key)",
    "YAML004": "file is empty",
    "YAML005": "file too large, or aliases expanding too far (limits for definition files)",
    "SCH001": "wrong type",
    "SCH002": "missing required key",
    "SCH003": "unknown key",
    "SCH004": "invalid name",
    "SCH005": "value not among the allowed ones",
    "SCH009": "other schema violation",
    "DEF001": "duplicate field name in the study",
    "DEF002": "duplicate instrument or event name",
    "DEF003": "instrument listed without a file, or file not listed (warning)",
    "DEF004": "name breaks REDCap's naming rules",
    "DEF005": "choices missing, misplaced or malformed",
    "DEF006": "choice codes that REDCap cannot tell apart",
    "DEF007": "min greater than max",
    "DEF008": "min or max not a valid value for the validation type",
    "DEF009": "unknown or misplaced validation type",
    "DEF010": "calculation missing or on a field that is not calc",
    "DEF011": "calculated field refers to itself",
    "DEF012": "cycle of calculated fields",
    "DEF013": "instrument in no event",
    "DEF014": "repeating instrument not in the study or not in that event",
    "DEF015": "event refers to an unknown instrument",
    "DEF016": "duplicate arm number or event name",
    "DEF017": "instrument has no fields / record id field problems",
    "DEF018": "name clashes with a REDCap column (form status, checkbox column, reserved)",
    "DEF019": "slider labels, alignment or matrix settings misplaced",
    "DEF020": "instrument name differs from its file name",
    "DEF021": "matrix group fields not radio/checkbox, not alike or not next to each other",
    "LOG001": "expression syntax error (branching logic or calculation)",
    # LOGIC0xx: problems the logic checker finds in an expression (unknown field, checkbox code not a choice,
    # wrong type, unknown event...), passed through with their codes; see trialkit/logic/checker.py.
}


class _Out:
    def __init__(self, sources: SourceMap) -> None:
        self.sources = sources
        self.items: list[Diagnostic] = []

    def field(self, f: Field, code: str, message: str, attr: str | None = None, *, key: bool = False,
              warning: bool = False) -> None:
        file, line, col = self.sources.locate_field(f, attr, key=key)
        if file is None:
            file, line, col = f.position.file, f.position.line, f.position.col
        self.add(code, message, file, line, col, warning)

    def study(self, code: str, message: str, path: tuple = (), *, warning: bool = False) -> None:
        file, line, col = self.sources.locate_study(path)
        self.add(code, message, file, line, col, warning)

    def instrument(self, name: str, code: str, message: str, path: tuple = (), *, warning: bool = False) -> None:
        file, line, col = self.sources.locate_instrument(name, path)
        self.add(code, message, file, line, col, warning)

    def add(self, code: str, message: str, file: str | None, line: int | None, col: int | None,
            warning: bool = False) -> None:
        severity = Severity.WARNING if warning else Severity.ERROR
        self.items.append(Diagnostic(code, mask_quoted(message), file, line, col, severity))


def check_semantics(study: Study, sources: SourceMap | None = None, *, standalone: bool = False) -> list[Diagnostic]:
    """Every semantic problem of `study`. `standalone`: one instrument checked without its study (no schedule or
    record id checks: it need not be the first instrument; references to fields of other instruments are not
    errors)."""
    out = _Out(sources or SourceMap())
    _check_names(study, out, standalone=standalone)
    for f in study.iter_fields():
        _check_field(f, out)
    _check_matrix_groups(study, out)
    _check_calc_graph(study, out)
    if not standalone:
        _check_schedule(study, out)
    from trialkit.definitions.expressions import check_expressions

    # with fields missing through errors already reported, "unknown field" would only repeat them
    out.items.extend(check_expressions(study, out.sources, standalone=standalone or out.sources.incomplete))
    return out.items


# ---- names ------------------------------------------------------------------------------------------------------
def _name_problem(name: str, from_yaml: bool) -> str | None:
    """Like name_problem, but silent where the JSON Schema has already reported a name it refused."""
    if from_yaml and not FIELD_NAME.fullmatch(name):
        return None
    return name_problem(name)


def _check_names(study: Study, out: _Out, *, standalone: bool = False) -> None:
    from_yaml = bool(out.sources.instrument_docs)
    first: dict[str, Field] = {}
    columns: dict[str, str] = {}  # export column -> what makes it
    for inst in study.instruments:
        problem = _name_problem(inst.name, from_yaml)
        if problem:
            out.instrument(inst.name, "DEF004", f"instrument name '{inst.name}' {problem}", ("instrument",))
        if not inst.fields and inst.name not in out.sources.dropped:  # else its schema errors say why
            out.instrument(inst.name, "DEF017", f"instrument '{inst.name}' has no fields", ("fields",))
        columns.setdefault(complete_field(inst.name), f"the status field of instrument '{inst.name}'")
    for f in study.iter_fields():
        problem = _name_problem(f.name, from_yaml)
        if problem:
            out.field(f, "DEF004", f"field name '{f.name}' {problem}", "name")
        if f.name in first:
            other = first[f.name]
            where = f"{other.position.file}:{other.position.line}" if other.position.file else other.form
            out.field(f, "DEF001", f"field '{f.name}' is already defined ({where})", "name")
            continue
        first[f.name] = f
        if f.name in RESERVED_COLUMNS:
            out.field(f, "DEF018", f"field name '{f.name}' is reserved by REDCap", "name")
        cols = [checkbox_column(f.name, c.code) for c in f.choices] if f.type is FieldType.CHECKBOX else [f.name]
        for col in cols:
            if col in columns:
                out.field(f, "DEF018", f"field '{f.name}' exports column '{col}', which is already {columns[col]}",
                          "name")
            else:
                columns[col] = f"field '{f.name}'"
    record_id = study.record_id_field
    if not standalone and study.instruments and study.instruments[0].fields:
        rid = study.instruments[0].fields[0]
        if rid.type is not FieldType.TEXT:
            out.field(rid, "DEF017", f"the record id field '{record_id}' (first field of the first instrument) "
                      f"must be a text field, not {rid.type.value}", "type")
        elif rid.show_if:
            out.field(rid, "DEF017", f"the record id field '{record_id}' cannot have branching logic", "show_if")


# ---- one field --------------------------------------------------------------------------------------------------
def _parse_bound(vt: validation_types.ValidationType, text: str) -> object:
    """A min/max value as the validation type reads it; 'today'/'now' are REDCap's relative bounds."""
    if text.lower() in {"today", "now"} and vt.kind in {"date", "datetime"}:
        return None
    if vt.kind in {"integer", "number"}:
        # a bound need not have the field's exact format ("30" bounds a number_1dp field)
        number = validation_types.VALIDATION_TYPES["number"]
        return number.parse(text.replace(",", ".") if vt.decimal_comma else text)
    return vt.parse(text)


def _check_field(f: Field, out: _Out) -> None:
    t = f.type
    # choices
    if t in CHOICE_TYPES:
        if not f.choices and f.choices_text is None:
            out.field(f, "DEF005", f"{t.value} field '{f.name}' has no choices", "name")
    elif f.choices:
        out.field(f, "DEF005", f"{t.value} field '{f.name}' cannot have choices", "choices", key=True)
    if f.choices_text is not None and t not in CHOICE_TYPES and t not in (FieldType.SLIDER, FieldType.SQL):
        # REDCap keeps whatever is in the cell; trialkit ignores it, so say so without failing the import
        out.field(f, "DEF005", f"{t.value} field '{f.name}' has choices_text, which REDCap ignores for this type",
                  "choices_text", key=True, warning=True)
    seen_codes: dict[str, str] = {}
    for c in f.choices:
        if c.code == "":
            out.field(f, "DEF005", f"field '{f.name}' has an empty choice code", "choices")
        if "," in c.code or "|" in c.code:
            out.field(f, "DEF005", f"choice code '{c.code}' of field '{f.name}' contains ',' or '|'", "choices")
        if t is FieldType.CHECKBOX:
            suffix = checkbox_column(f.name, c.code)
            if suffix in seen_codes:
                out.field(f, "DEF006", f"checkbox codes '{seen_codes[suffix]}' and '{c.code}' of field '{f.name}' "
                          f"both export as column '{suffix}'", "choices")
            seen_codes.setdefault(suffix, c.code)
    # calculations
    if t is FieldType.CALC and not f.calculation.strip():
        out.field(f, "DEF010", f"calc field '{f.name}' has no calculation", "name")
    if t is not FieldType.CALC and f.calculation:
        out.field(f, "DEF010", f"{t.value} field '{f.name}' cannot have a calculation (only calc fields)",
                  "calculation", key=True)
    # validation
    if f.validation:
        if t is FieldType.TEXT:
            if validation_types.get(f.validation) is None:
                out.field(f, "DEF009", f"unknown validation type '{f.validation}' for field '{f.name}'",
                          "validation", warning=True)
        elif t is FieldType.SLIDER:
            if f.validation not in validation_types.SLIDER_VALIDATIONS:
                out.field(f, "DEF009", f"a slider takes validation 'number' (show the number), not "
                          f"'{f.validation}'", "validation")
        elif t is FieldType.FILE:
            if f.validation not in validation_types.FILE_VALIDATIONS:
                out.field(f, "DEF009", f"a file field takes validation 'signature' only, not '{f.validation}'",
                          "validation")
        else:
            out.field(f, "DEF009", f"{t.value} field '{f.name}' cannot have a validation type", "validation",
                      key=True)
    if t is not FieldType.SLIDER and f.slider_labels:
        out.field(f, "DEF019", f"{t.value} field '{f.name}' cannot have slider labels", "slider_labels", key=True)
    if f.matrix_ranking and not f.matrix_group:
        out.field(f, "DEF019", f"field '{f.name}' has matrix_ranking but no matrix_group", "matrix_ranking")
    _check_range(f, out)


def _check_range(f: Field, out: _Out) -> None:
    if not f.min and not f.max:
        return
    if f.type is FieldType.TEXT:
        vt = validation_types.get(f.validation)
        if vt is None or vt.kind == "text":
            if f.validation == "" or vt is not None:
                out.field(f, "DEF008", f"field '{f.name}' has min/max but no date, time or number validation",
                          "min" if f.min else "max", warning=True)
            return
    elif f.type is FieldType.SLIDER:
        vt = validation_types.get("number")
    else:
        out.field(f, "DEF008", f"{f.type.value} field '{f.name}' cannot have min/max", "min" if f.min else "max",
                  key=True)
        return
    assert vt is not None
    bounds: dict[str, object] = {}
    for attr, text in (("min", f.min), ("max", f.max)):
        if not text:
            continue
        try:
            bounds[attr] = _parse_bound(vt, text)
        except ValueError:
            out.field(f, "DEF008", f"{attr} '{text}' of field '{f.name}' is not a valid {vt.name} value", attr)
    lo, hi = bounds.get("min"), bounds.get("max")
    if lo is not None and hi is not None:
        try:
            bad = lo > hi  # type: ignore[operator]
        except TypeError:
            bad = False
        if bad:
            out.field(f, "DEF007", f"min {f.min} is greater than max {f.max} for field '{f.name}'", "min")


# ---- matrix groups ----------------------------------------------------------------------------------------------
def _check_matrix_groups(study: Study, out: _Out) -> None:
    """REDCap draws a matrix as one table: its fields share a type (radio or checkbox) and choices, in a row."""
    for inst in study.instruments:
        first: dict[str, Field] = {}
        previous = ""
        for f in inst.fields:
            group = f.matrix_group
            if group:
                if f.type not in (FieldType.RADIO, FieldType.CHECKBOX):
                    out.field(f, "DEF021", f"matrix field '{f.name}' must be radio or checkbox, not {f.type.value}",
                              "type")
                elif group in first and (f.type, f.choices) != (first[group].type, first[group].choices):
                    out.field(f, "DEF021", f"matrix field '{f.name}' differs from '{first[group].name}' in type or "
                              f"choices (matrix group '{group}')", "matrix_group")
                elif group in first and previous != group:
                    out.field(f, "DEF021", f"matrix group '{group}' is split: its fields must be next to each other",
                              "matrix_group")
                first.setdefault(group, f)
            previous = group


# ---- calculations -----------------------------------------------------------------------------------------------
def _check_calc_graph(study: Study, out: _Out) -> None:
    from trialkit.definitions.expressions import referenced_fields

    calcs = {f.name: f for f in study.iter_fields() if f.type is FieldType.CALC and f.calculation}
    deps: dict[str, set[str]] = {}
    for name, f in calcs.items():
        refs = referenced_fields(f.calculation)
        if refs is None:
            continue  # syntax error: reported by the expression checks
        if name in refs:
            out.field(f, "DEF011", f"calc field '{name}' refers to itself", "calculation")
        deps[name] = {r for r in refs if r in calcs and r != name}
    for cycle in _cycles(deps):
        first = calcs[cycle[0]]
        path = " -> ".join([*cycle, cycle[0]])
        out.field(first, "DEF012", f"calculated fields form a cycle: {path}", "calculation")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component with more than one node, as a list starting at its first-defined node.

    Tarjan's algorithm with an explicit stack: a long chain of calculations must not exhaust Python's recursion
    limit (a 1,000-calc chain is a plausible generated study).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    result: list[list[str]] = []
    order = {n: i for i, n in enumerate(graph)}

    def enter(v: str) -> tuple[str, Iterator[str]]:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        return v, iter(sorted(graph.get(v, ()), key=lambda n: order.get(n, 0)))

    for root in graph:
        if root in index:
            continue
        work = [enter(root)]
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    work.append(enter(w))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:  # every successor done: v is finished
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        result.append(_cycle_path(graph, sorted(comp, key=lambda n: order.get(n, 0))))
    return result


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A readable cycle through the component, starting at its first node."""
    members = set(comp)
    path = [comp[0]]
    while True:
        nxt = sorted(n for n in graph[path[-1]] if n in members)
        if not nxt:
            return path
        step = next((n for n in nxt if n == comp[0]), None)
        if step is not None:
            return path
        step = next((n for n in nxt if n not in path), None)
        if step is None:
            return path
        path.append(step)


# ---- schedule ---------------------------------------------------------------------------------------------------
def _check_schedule(study: Study, out: _Out) -> None:
    src = out.sources
    names = {i.name for i in study.instruments} | src.unbuilt  # an unbuilt one has its own error already
    if not study.longitudinal:
        for i, r in enumerate(study.repeating_instruments):
            if r not in names:
                out.study("DEF014", f"repeating instrument '{r}' is not an instrument of the study",
                          ("repeating_instruments", i))
        return
    if study.repeating_instruments:
        out.study("DEF014", "a longitudinal study lists repeating instruments per event ('repeating' in each event), "
                  "not in 'repeating_instruments'", ("repeating_instruments",))
    arms_seen: set[int] = set()
    events_seen: set[str] = set()
    used: set[str] = set()
    event_index = 0
    for ai, arm in enumerate(study.arms):
        if arm.number in arms_seen:
            out.study("DEF016", f"arm number {arm.number} is used twice", ("arms", ai, "number"))
        arms_seen.add(arm.number)
        for e in arm.events:
            path = src.events[event_index] if event_index < len(src.events) else ("arms", ai)
            event_index += 1
            if e.name in events_seen:
                out.study("DEF016", f"event name '{e.name}' is used twice", (*path, "name"))
            events_seen.add(e.name)
            problem = _name_problem(e.name, out.sources.study_doc is not None)
            if problem:
                out.study("DEF004", f"event name '{e.name}' {problem}", path)
            for i, inst in enumerate(e.instruments):
                if inst not in names:
                    out.study("DEF015", f"event '{e.name}' lists unknown instrument '{inst}'{_near(inst, names)}",
                              (*path, "instruments", i))
                used.add(inst)
            for i, r in enumerate(e.repeating):
                if r not in names:
                    out.study("DEF014", f"repeating instrument '{r}' of event '{e.name}' is not an instrument of "
                              f"the study{_near(r, names)}", (*path, "repeating", i))
                elif r not in e.instruments:
                    out.study("DEF014", f"repeating instrument '{r}' is not in event '{e.name}'s instruments",
                              (*path, "repeating", i))
    listed_idx = _list_index(src)
    for inst in study.instruments:
        if inst.name not in used:
            path = ("instruments", listed_idx.get(inst.name, 0))
            out.study("DEF013", f"instrument '{inst.name}' is in no event", path)


def _list_index(src: SourceMap) -> dict[str, int]:
    doc = src.study_doc
    if doc is None or not isinstance(doc.data, dict) or not isinstance(doc.data.get("instruments"), list):
        return {}
    return {n: i for i, n in reversed(list(enumerate(doc.data["instruments"]))) if isinstance(n, str)}


def _near(name: str, names: set[str]) -> str:
    """'; did you mean ...?' for a name close to one of `names` (a typo in study.yaml), else ''."""
    import difflib

    near = difflib.get_close_matches(name, sorted(names), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
