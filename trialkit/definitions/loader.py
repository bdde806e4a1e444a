"""Load a study from `study.yaml` and `instruments/*.yaml`: parse, schema-check, build the model, check it.

`check_study` collects every diagnostic (YAML, schema, semantic, expressions) and never raises for bad input;
`load_study` raises `DefinitionError` carrying them all when any is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trialkit.definitions import schema_check
from trialkit.definitions.model import Arm, Choice, Event, Field, FieldType, Instrument, Position, Study
from trialkit.definitions.redcap_names import unique_event_name
from trialkit.definitions.shown import mask_quoted
from trialkit.definitions.yamlio import JsonPath, YamlDoc, read_yaml
from trialkit.errors import DefinitionError, Diagnostic, Severity, sorted_diagnostics

STUDY_FILE = "study.yaml"
DEFAULT_INSTRUMENTS_DIR = "instruments"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class SourceMap:
    """Which file and JSON path every part of a loaded study came from, to locate diagnostics."""

    study_doc: YamlDoc | None = None
    instrument_docs: dict[str, YamlDoc] = field(default_factory=dict)
    # (form, field) -> (key into instrument_docs, JSON path of the field's mapping)
    fields: dict[tuple[str, str], tuple[str, JsonPath]] = field(default_factory=dict)
    events: list[JsonPath] = field(default_factory=list)  # path in the study doc of each of Study.events, in order
    # What the study lacks because of an error already reported: instruments listed but not built (no file, not
    # YAML), and instruments with a field mapping that could not be built (no name or type). Checks that would
    # only repeat that error as "unknown instrument" or "unknown field" consult these (no cascade).
    unbuilt: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)

    @property
    def incomplete(self) -> bool:
        """True when some field of the study may be missing from it: references cannot be judged."""
        return bool(self.unbuilt or self.dropped)

    def field_doc(self, f: Field) -> tuple[YamlDoc, JsonPath] | None:
        hit = self.fields.get((f.form, f.name))
        if hit is None or hit[0] not in self.instrument_docs:
            return None
        return self.instrument_docs[hit[0]], hit[1]

    def locate_field(
        self, f: Field, attr: str | None = None, *, key: bool = False
    ) -> tuple[str | None, int | None, int | None]:
        hit = self.field_doc(f)
        if hit is None:
            return None, None, None
        doc, path = hit
        line, col = doc.where((*path, attr) if attr else path, key=key)
        return doc.path, line, col

    def locate_instrument(self, name: str, path: JsonPath = ()) -> tuple[str | None, int | None, int | None]:
        doc = self.instrument_docs.get(name)
        if doc is None:
            return None, None, None
        line, col = doc.where(path)
        return doc.path, line, col

    def locate_study(self, path: JsonPath = ()) -> tuple[str | None, int | None, int | None]:
        if self.study_doc is None:
            return None, None, None
        line, col = self.study_doc.where(path)
        return self.study_doc.path, line, col


@dataclass
class CheckResult:
    """What checking a study found: the study (None when it could not be built) and every diagnostic."""

    study: Study | None
    diagnostics: list[Diagnostic]
    sources: SourceMap

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


def display_path(path: Path) -> str:
    """A path as users should see it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


# ---- coercion of schema-checked (or partly broken) plain data -------------------------------------------------
def _text(doc: YamlDoc, data: dict, key: str, path: JsonPath) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return doc.raw((*path, key)) or str(value)
    return value if isinstance(value, str) else ""


def _flag(data: dict, key: str) -> bool:
    return data.get(key) is True


def _pos(doc: YamlDoc, path: JsonPath) -> Position:
    line, col = doc.where(path)
    return Position(doc.path, line, col)


def build_field(doc: YamlDoc, data: Any, path: JsonPath, form: str) -> Field | None:
    """A Field from its YAML mapping, or None when it lacks a usable name or type (schema errors say why)."""
    if not isinstance(data, dict):
        return None
    name, ftype = data.get("name"), data.get("type")
    if not isinstance(name, str) or ftype not in {t.value for t in FieldType}:
        return None
    choices: list[Choice] = []
    raw_choices = data.get("choices")
    if isinstance(raw_choices, dict):
        for code, label in raw_choices.items():
            cpath = (*path, "choices", code)
            text = "" if label is None else (label if isinstance(label, str) else (doc.raw(cpath) or str(label)))
            choices.append(Choice(str(code), text))
    slider = data.get("slider_labels")
    slider_labels = tuple(s if isinstance(s, str) else "" for s in slider) if isinstance(slider, list) else ()
    choices_text = data.get("choices_text")
    return Field(
        name=name,
        type=FieldType(ftype),
        form=form,
        label=_text(doc, data, "label", path),
        section_header=_text(doc, data, "section_header", path),
        note=_text(doc, data, "note", path),
        choices=tuple(choices),
        choices_text=choices_text if isinstance(choices_text, str) else None,
        calculation=_text(doc, data, "calculation", path),
        slider_labels=slider_labels,
        validation=_text(doc, data, "validation", path),
        min=_text(doc, data, "min", path),
        max=_text(doc, data, "max", path),
        identifier=_flag(data, "identifier"),
        required=_flag(data, "required"),
        show_if=_text(doc, data, "show_if", path),
        alignment=_text(doc, data, "alignment", path),
        question_number=_text(doc, data, "question_number", path),
        matrix_group=_text(doc, data, "matrix_group", path),
        matrix_ranking=_flag(data, "matrix_ranking"),
        annotation=_text(doc, data, "annotation", path),
        position=_pos(doc, path),
    )


def build_instrument(doc: YamlDoc, fallback_name: str, sources: SourceMap | None = None) -> Instrument:
    data = doc.data if isinstance(doc.data, dict) else {}
    name = data.get("instrument") if isinstance(data.get("instrument"), str) else fallback_name
    fields = []
    raw_fields = data.get("fields") if isinstance(data.get("fields"), list) else []
    for i, fd in enumerate(raw_fields):
        f = build_field(doc, fd, ("fields", i), name)
        if f is None:
            if sources is not None:
                sources.dropped.add(name)
            continue
        fields.append(f)
        if sources is not None and (name, f.name) not in sources.fields:
            sources.fields[(name, f.name)] = (name, ("fields", i))
    label = data.get("label") if isinstance(data.get("label"), str) else ""
    return Instrument(name=name, fields=tuple(fields), label=label, position=_pos(doc, ()))


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _names(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def build_study(doc: YamlDoc, instruments: list[Instrument], sources: SourceMap, source: str | None) -> Study:
    data = doc.data if isinstance(doc.data, dict) else {}
    arms = []
    taken: set[str] = set()
    for ai, arm in enumerate(data.get("arms") or [] if isinstance(data.get("arms"), list) else []):
        if not isinstance(arm, dict):
            continue
        number = _int(arm.get("number"), ai + 1)
        events = []
        raw_events = arm.get("events") if isinstance(arm.get("events"), list) else []
        for ei, ev in enumerate(raw_events):
            if not isinstance(ev, dict):
                continue
            epath = ("arms", ai, "events", ei)
            label = ev.get("label") if isinstance(ev.get("label"), str) else f"Event {ei + 1}"
            name = ev.get("name") if isinstance(ev.get("name"), str) else unique_event_name(label, number, taken)
            sources.events.append(epath)
            taken.add(name)
            events.append(
                Event(
                    name=name,
                    label=label,
                    arm=number,
                    instruments=_names(ev.get("instruments")),
                    repeating=_names(ev.get("repeating")),
                    day_offset=_int(ev.get("day_offset")),
                    offset_min=_int(ev.get("offset_min")),
                    offset_max=_int(ev.get("offset_max")),
                    position=_pos(doc, epath),
                )
            )
        name = arm.get("name") if isinstance(arm.get("name"), str) else f"Arm {number}"
        arms.append(Arm(number=number, name=name, events=tuple(events), position=_pos(doc, ("arms", ai))))
    missing = data.get("missing_codes")
    missing_codes = tuple(Choice(str(k), str(v)) for k, v in missing.items()) if isinstance(missing, dict) else ()
    pv = data.get("protocol_version")
    return Study(
        name=data.get("study") if isinstance(data.get("study"), str) else "study",
        instruments=tuple(instruments),
        title=data.get("title") if isinstance(data.get("title"), str) else "",
        protocol_version=(doc.raw(("protocol_version",)) or str(pv)) if pv is not None else "",
        arms=tuple(arms),
        repeating_instruments=_names(data.get("repeating_instruments")),
        missing_codes=missing_codes,
        data_access_groups=_names(data.get("data_access_groups")),
        source=source,
        position=_pos(doc, ()),
    )


def _parse_and_validate(doc: YamlDoc, kind: str) -> list[Diagnostic]:
    diags = list(doc.diagnostics)
    if doc.data is None:
        if doc.ok:
            diags.append(Diagnostic("YAML004", "file is empty", doc.path, 1, 1))
        return diags
    # A file that parsed with a duplicate key (the first value kept) or an unsupported key is still checked and
    # built: one repeated line must not hide its instrument from the study and cascade into "unknown instrument"
    # and "unknown field" errors everywhere it is used.
    diags.extend(d for d, _ in schema_check.validate(doc, kind))
    return diags


def find_study_file(path: str | Path) -> Path:
    p = Path(path)
    return p / STUDY_FILE if p.is_dir() else p


def yaml_files(directory: Path) -> list[Path]:
    """The YAML files in `directory`, sorted; none when it is not a readable directory."""
    try:
        return sorted(p for p in directory.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    except OSError:  # missing, not a directory, or unreadable: the files it should hold are reported missing
        return []


def _instrument_files(directory: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in yaml_files(directory):
        out.setdefault(p.stem, p)
    return out


def no_study_message(path: str | Path, *, named_by: str | None = None, pointer: str = "--study DIR") -> str:
    """Why there is no study at `path`, and how to point at one: the usual slip is running a command outside the
    study's folder, or a rule file's `study:` key that is wrong."""
    if named_by is not None:
        return (f"no study file here ({STUDY_FILE} not found); this path comes from the 'study:' key of {named_by}: "
                f"correct it there, or give the study with {pointer}")
    if Path(path) == Path("."):
        return (f"no study file here ({STUDY_FILE} not found in the current folder): run trialkit in the study's "
                f"folder, or point at it with {pointer}")
    return f"no study file here ({STUDY_FILE} not found): {pointer} names the folder that holds {STUDY_FILE}"


def check_study(path: str | Path = ".", *, named_by: str | None = None, pointer: str = "--study DIR") -> CheckResult:
    """Check a study (a directory holding study.yaml, or the study file itself): every problem, never raises.
    `named_by`: the rule file whose `study:` key gave `path`; `pointer`: how the command takes a study path (both
    for the message when there is no study)."""
    from trialkit.definitions.checks import check_semantics

    study_path = find_study_file(path)
    sources = SourceMap()
    diags: list[Diagnostic] = []
    shown = display_path(study_path)
    if not study_path.is_file():
        diags.append(Diagnostic("IO001", no_study_message(path, named_by=named_by, pointer=pointer), shown))
        return CheckResult(None, diags, sources)
    sdoc = read_yaml(study_path, shown)
    sources.study_doc = sdoc
    diags += _parse_and_validate(sdoc, "study")
    if not isinstance(sdoc.data, dict):
        return CheckResult(None, sorted_diagnostics(diags), sources)
    sdata = sdoc.data
    inst_dir_name = sdata.get("instruments_dir") if isinstance(sdata.get("instruments_dir"), str) else None
    inst_dir = study_path.parent / (inst_dir_name or DEFAULT_INSTRUMENTS_DIR)
    files = _instrument_files(inst_dir)
    listed = _names(sdata.get("instruments"))
    instruments: list[Instrument] = []
    seen: set[str] = set()
    for i, name in enumerate(listed):
        if name in seen:
            line, col = sdoc.where(("instruments", i))
            diags.append(Diagnostic("DEF002", f"instrument '{name}' is listed twice", shown, line, col))
            continue
        seen.add(name)
        fpath = files.get(name)
        if fpath is None:
            line, col = sdoc.where(("instruments", i))
            where = display_path(inst_dir / f"{name}.yaml")
            diags.append(Diagnostic("DEF003", f"instrument '{name}' has no file ({where} not found)", shown, line, col))
            sources.unbuilt.add(name)
            continue
        idoc = read_yaml(fpath, display_path(fpath))
        sources.instrument_docs[name] = idoc
        diags += _parse_and_validate(idoc, "instrument")
        if not isinstance(idoc.data, dict):
            sources.unbuilt.add(name)
            continue
        inst = build_instrument(idoc, name, sources)
        if inst.name != name:
            line, col = idoc.where(("instrument",))
            diags.append(
                Diagnostic(
                    "DEF020",
                    mask_quoted(f"instrument name '{inst.name}' differs from its file name '{fpath.name}' (listed as "
                                f"'{name}')"),
                    idoc.path,
                    line,
                    col,
                )
            )
            sources.instrument_docs[inst.name] = idoc
            for (form, fname), where in list(sources.fields.items()):
                if form == inst.name:
                    sources.fields.setdefault((name, fname), where)
            inst = _reform(Instrument(name=name, fields=inst.fields, label=inst.label, position=inst.position))
        instruments.append(inst)
    for stem, fpath in files.items():
        if stem not in seen:
            diags.append(
                Diagnostic(
                    "DEF003",
                    f"instrument file is not listed in {STUDY_FILE} 'instruments'",
                    display_path(fpath),
                    1,
                    1,
                    Severity.WARNING,
                )
            )
    study = build_study(sdoc, instruments, sources, shown)
    diags += check_semantics(study, sources)
    return CheckResult(study, sorted_diagnostics(unique_diagnostics(diags)), sources)


def _reform(inst: Instrument) -> Instrument:
    from dataclasses import replace

    return replace(inst, fields=tuple(replace(f, form=inst.name) for f in inst.fields))


def unique_diagnostics(diags: list[Diagnostic]) -> list[Diagnostic]:
    """`diags` without repeats (the same problem reached twice, e.g. by two checks of one file), order kept."""
    return list(dict.fromkeys(diags))


def load_study(path: str | Path = ".", *, named_by: str | None = None) -> Study:
    """The study at `path` (a directory with study.yaml, or the study file). Raises DefinitionError with every
    diagnostic when anything is an error; warnings do not stop loading. `named_by`: see check_study."""
    result = check_study(path, named_by=named_by)
    if result.errors or result.study is None:
        raise DefinitionError(
            f"{len(result.errors)} error(s) in study definition {display_path(find_study_file(path))}",
            diagnostics=result.diagnostics,
        )
    return result.study


def check_instrument_file(path: str | Path) -> tuple[Instrument | None, list[Diagnostic]]:
    """Check one instrument file on its own (schema and the checks that need no other file)."""
    from trialkit.definitions.checks import check_semantics

    p = Path(path)
    doc = read_yaml(p, display_path(p))
    diags = _parse_and_validate(doc, "instrument")
    if not isinstance(doc.data, dict):
        return None, sorted_diagnostics(diags)
    sources = SourceMap(instrument_docs={})
    stem = p.stem
    inst = build_instrument(doc, stem, sources)
    sources.instrument_docs[inst.name] = doc
    study = Study(name="standalone", instruments=(inst,))
    diags += check_semantics(study, sources, standalone=True)
    return inst, sorted_diagnostics(unique_diagnostics(diags))
