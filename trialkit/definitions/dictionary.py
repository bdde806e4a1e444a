"""REDCap data dictionary and project structure: model <-> metadata rows <-> CSV.

Export writes the CSV exactly as REDCap's "Download the current Data Dictionary" does: the 18 human headers,
PHP `fputcsv` quoting (a cell is quoted when it holds a space, comma, quote, tab or line break), `\n` line
ends, optional UTF-8 BOM. Import accepts that file or the API's snake_case CSV, with or without BOM, with
multi-line cells, and gives back fields that export to the very same rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trialkit.definitions.model import Choice, Field, FieldType, Instrument, Position, Study
from trialkit.definitions.shown import shown_name
from trialkit.errors import DefinitionError, Diagnostic

# (API key, data dictionary CSV header), in REDCap's column order (reference §3.1).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("field_name", "Variable / Field Name"),
    ("form_name", "Form Name"),
    ("section_header", "Section Header"),
    ("field_type", "Field Type"),
    ("field_label", "Field Label"),
    ("select_choices_or_calculations", "Choices, Calculations, OR Slider Labels"),
    ("field_note", "Field Note"),
    ("text_validation_type_or_show_slider_number", "Text Validation Type OR Show Slider Number"),
    ("text_validation_min", "Text Validation Min"),
    ("text_validation_max", "Text Validation Max"),
    ("identifier", "Identifier?"),
    ("branching_logic", "Branching Logic (Show field only if...)"),
    ("required_field", "Required Field?"),
    ("custom_alignment", "Custom Alignment"),
    ("question_number", "Question Number (surveys only)"),
    ("matrix_group_name", "Matrix Group Name"),
    ("matrix_ranking", "Matrix Ranking?"),
    ("field_annotation", "Field Annotation"),
)
KEYS = tuple(k for k, _ in COLUMNS)
HEADERS = tuple(h for _, h in COLUMNS)


# ---- choices ----------------------------------------------------------------------------------------------------
def render_choices(choices: Iterable[Choice]) -> str:
    return " | ".join(f"{c.code}, {c.label}" for c in choices)


def parse_choices(text: str) -> tuple[Choice, ...]:
    """`code, label | code, label`: split on '|', then on the first comma; a part without comma is its own code."""
    out = []
    for part in text.split("|"):
        if not part.strip():
            continue
        code, sep, label = part.partition(",")
        out.append(Choice(code.strip(), label.strip()) if sep else Choice(part.strip(), part.strip()))
    return tuple(out)


def parse_slider_labels(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split("|")) if text else ()


# ---- model -> rows ----------------------------------------------------------------------------------------------
def choices_cell(f: Field) -> str:
    if f.choices_text is not None:
        return f.choices_text
    if f.type is FieldType.CALC:
        return f.calculation
    if f.type is FieldType.SLIDER:
        return " | ".join(f.slider_labels)
    return render_choices(f.choices)


def _flag(value: bool) -> str:
    return "y" if value else ""


def field_row(f: Field) -> dict[str, str]:
    """One metadata row (API keys, all strings), as REDCap's export_metadata gives it."""
    return {
        "field_name": f.name,
        "form_name": f.form,
        "section_header": f.section_header,
        "field_type": f.type.value,
        "field_label": f.label,
        "select_choices_or_calculations": choices_cell(f),
        "field_note": f.note,
        "text_validation_type_or_show_slider_number": f.validation,
        "text_validation_min": f.min,
        "text_validation_max": f.max,
        "identifier": _flag(f.identifier),
        "branching_logic": f.show_if,
        "required_field": _flag(f.required),
        "custom_alignment": f.alignment,
        "question_number": f.question_number,
        "matrix_group_name": f.matrix_group,
        "matrix_ranking": _flag(f.matrix_ranking),
        "field_annotation": f.annotation,
    }


def metadata_rows(study: Study) -> list[dict[str, str]]:
    """The study's metadata as REDCap's API exports it (`content=metadata`): 18 snake_case keys, field order."""
    return [field_row(f) for f in study.iter_fields()]


def instrument_rows(study: Study) -> list[dict[str, str]]:
    """`content=instrument`: instrument_name, instrument_label."""
    return [
        {"instrument_name": i.name, "instrument_label": i.label or _default_label(i.name)} for i in study.instruments
    ]


def arm_rows(study: Study) -> list[dict[str, object]]:
    """`content=arm`: arm_num (int), name. Empty for a classic project."""
    return [{"arm_num": a.number, "name": a.name} for a in study.arms]


def event_rows(study: Study) -> list[dict[str, object]]:
    """`content=event`: event_name (label), arm_num, day_offset, offset_min, offset_max, unique_event_name,
    custom_event_label."""
    return [
        {
            "event_name": e.label,
            "arm_num": e.arm,
            "day_offset": e.day_offset,
            "offset_min": e.offset_min,
            "offset_max": e.offset_max,
            "unique_event_name": e.name,
            "custom_event_label": "",
        }
        for e in study.events
    ]


def form_event_rows(study: Study) -> list[dict[str, object]]:
    """`content=formEventMapping`: arm_num, unique_event_name, form."""
    return [{"arm_num": e.arm, "unique_event_name": e.name, "form": f} for e in study.events for f in e.instruments]


def repeating_rows(study: Study) -> list[dict[str, str]]:
    """`content=repeatingFormsEvents`: longitudinal {event_name (unique), form_name, custom_form_label};
    classic {form_name, custom_form_label}."""
    if study.longitudinal:
        return [{"event_name": ev, "form_name": form, "custom_form_label": ""} for ev, form in study.repeating_pairs]
    return [{"form_name": form, "custom_form_label": ""} for form in study.repeating_instruments]


@dataclass(frozen=True)
class ProjectStructure:
    """Everything needed to create a REDCap project for a study (e.g. in the local sandbox server)."""

    metadata: list[dict[str, str]]
    instruments: list[dict[str, str]]
    arms: list[dict[str, object]]
    events: list[dict[str, object]]
    form_events: list[dict[str, object]]
    repeating: list[dict[str, str]]
    longitudinal: bool
    record_id_field: str


def project_structure(study: Study) -> ProjectStructure:
    return ProjectStructure(
        metadata=metadata_rows(study),
        instruments=instrument_rows(study),
        arms=arm_rows(study),
        events=event_rows(study),
        form_events=form_event_rows(study),
        repeating=repeating_rows(study),
        longitudinal=study.longitudinal,
        record_id_field=study.record_id_field,
    )


def _default_label(form: str) -> str:
    return form.replace("_", " ").strip().capitalize()


# ---- CSV out ----------------------------------------------------------------------------------------------------
_NEEDS_QUOTES = re.compile(r"[ ,\"\t\r\n]")


def _cell(value: str) -> str:
    """PHP fputcsv quoting, as REDCap writes its CSV (RFC 4180 doubling of quotes inside)."""
    if value and _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def rows_to_csv(rows: Sequence[dict[str, str]], *, headers: Sequence[str] = HEADERS, bom: bool = False) -> str:
    lines = [",".join(_cell(h) for h in headers)]
    lines += [",".join(_cell(row.get(k, "")) for k in KEYS) for row in rows]
    return ("\ufeff" if bom else "") + "\n".join(lines) + "\n"


def export_dictionary(study: Study, *, bom: bool = False) -> str:
    """The data dictionary CSV text of `study`, as REDCap's Data Dictionary download writes it."""
    return rows_to_csv(metadata_rows(study), bom=bom)


# ---- CSV in -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DictionaryRow:
    cells: dict[str, str]
    line: int  # 1-based line where the row starts in the file


def decode_dictionary(raw: bytes, path: str = "<dictionary>") -> str:
    """The text of a dictionary file (UTF-8, with or without BOM). Bytes that are not UTF-8 (a CSV saved from Excel
    in Windows-1252) are an IO002 diagnostic at their line and column, which the file's own text cannot be."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise DefinitionError("not UTF-8", diagnostics=[Diagnostic(
            "IO002", f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8", path, line, col)]) from None


def read_dictionary_csv(text: str, path: str = "<dictionary>") -> list[DictionaryRow]:
    """Rows of a data dictionary CSV (either header style). Raises DefinitionError with located diagnostics."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    diags: list[Diagnostic] = []
    rows: list[DictionaryRow] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        diag = Diagnostic("DICT001", f"not CSV: {exc}", path, 1, 1)
        raise DefinitionError("not a CSV file", diagnostics=[diag]) from None
    if header is None:
        raise DefinitionError("empty dictionary", diagnostics=[Diagnostic("DICT001", "file is empty", path, 1, 1)])
    stripped = [h.strip() for h in header]
    if tuple(stripped) not in (HEADERS, KEYS):
        # the first cell tells which of the two header styles the file means to use
        expected = KEYS if stripped[:1] == [KEYS[0]] else HEADERS
        col = len(HEADERS) + 1
        message = f"expected {len(HEADERS)} columns, found {len(stripped)}"
        for i, want in enumerate(expected):
            got = stripped[i] if i < len(stripped) else None
            if got != want:
                col = i + 1
                message = f"column {col} is missing, expected {want!r}" if got is None else \
                    f"column {col} is {shown_name(got)}, expected {want!r}"  # a file given by mistake: no content
                break
        raise DefinitionError(
            "not a REDCap data dictionary", diagnostics=[Diagnostic("DICT002", message, path, 1, col)]
        )
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            diags.append(Diagnostic("DICT001", f"not valid CSV: {exc}", path, start, 1))
            break
        line = start
        start = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(KEYS):
            diags.append(
                Diagnostic("DICT003", f"row has {len(cells)} cells, expected {len(KEYS)}", path, line, 1)
            )
            continue
        rows.append(DictionaryRow(dict(zip(KEYS, cells, strict=True)), line))
    if diags:
        raise DefinitionError("unreadable data dictionary", diagnostics=diags)
    return rows


def _col(key: str) -> int:
    return KEYS.index(key) + 1


def field_from_row(row: DictionaryRow, path: str, diags: list[Diagnostic]) -> Field | None:
    c = row.cells
    name = c["field_name"]
    try:
        ftype = FieldType(c["field_type"].strip())
    except ValueError:
        diags.append(
            Diagnostic("DICT004", f"field '{name}': unknown field type {c['field_type']!r}", path, row.line,
                       _col("field_type"))
        )
        return None
    cell = c["select_choices_or_calculations"]
    choices: tuple[Choice, ...] = ()
    calculation = ""
    slider: tuple[str, ...] = ()
    choices_text: str | None = None
    if ftype in (FieldType.DROPDOWN, FieldType.RADIO, FieldType.CHECKBOX):
        choices = parse_choices(cell)
        codes = [ch.code for ch in choices]
        twice = sorted({code for code in codes if codes.count(code) > 1})
        if twice:
            diags.append(
                Diagnostic("DICT008", f"field '{name}': choice code {twice[0]!r} is used twice", path, row.line,
                           _col("select_choices_or_calculations"))
            )
            return None
        if render_choices(choices) != cell:
            choices_text = cell
    elif ftype is FieldType.CALC:
        calculation = cell
    elif ftype is FieldType.SLIDER:
        slider = parse_slider_labels(cell)
        if " | ".join(slider) != cell or len(slider) > 3:
            choices_text, slider = cell, ()
    elif cell:
        choices_text = cell
    return Field(
        name=name,
        type=ftype,
        form=c["form_name"],
        label=c["field_label"],
        section_header=c["section_header"],
        note=c["field_note"],
        choices=choices,
        choices_text=choices_text,
        calculation=calculation,
        slider_labels=slider,
        validation=c["text_validation_type_or_show_slider_number"],
        min=c["text_validation_min"],
        max=c["text_validation_max"],
        identifier=c["identifier"].strip() != "",
        required=c["required_field"].strip() != "",
        show_if=c["branching_logic"],
        alignment=c["custom_alignment"],
        question_number=c["question_number"],
        matrix_group=c["matrix_group_name"],
        matrix_ranking=c["matrix_ranking"].strip() != "",
        annotation=c["field_annotation"],
        position=Position(path, row.line, 1),
    )


def study_from_rows(rows: Sequence[DictionaryRow], *, name: str = "study", path: str = "<dictionary>") -> Study:
    """A classic (non-longitudinal) study from dictionary rows: instruments in order of first appearance."""
    from trialkit.definitions.redcap_names import name_problem

    diags: list[Diagnostic] = []
    forms: dict[str, list[Field]] = {}
    seen: dict[str, int] = {}
    last_form = None
    for row in rows:
        fname = row.cells["field_name"]
        form = row.cells["form_name"]
        for key, value in (("field_name", fname), ("form_name", form)):
            problem = name_problem(value)
            if problem:
                what = "field name" if key == "field_name" else "form name"
                diags.append(Diagnostic("DICT005", f"{what} {value!r} {problem}", path, row.line, _col(key)))
        if fname in seen:
            diags.append(
                Diagnostic("DICT006", f"field '{fname}' is defined twice (first on line {seen[fname]})", path,
                           row.line, 1)
            )
            continue
        seen[fname] = row.line
        if form in forms and form != last_form:
            diags.append(
                Diagnostic("DICT007", f"form '{form}' is split: its fields must be contiguous", path, row.line,
                           _col("form_name"))
            )
        last_form = form
        f = field_from_row(row, path, diags)
        if f is not None:
            forms.setdefault(form, []).append(f)
    if not rows:
        diags.append(Diagnostic("DICT001", "the dictionary has no fields", path, 1, 1))
    if diags:
        raise DefinitionError(f"{len(diags)} error(s) in data dictionary {path}", diagnostics=diags)
    instruments = tuple(Instrument(name=form, fields=tuple(fields)) for form, fields in forms.items())
    return Study(name=name, instruments=instruments, source=path)


def import_dictionary(text: str, *, name: str = "study", path: str = "<dictionary>") -> Study:
    """Parse data dictionary CSV text into a (classic) Study. Raises DefinitionError with located diagnostics."""
    return study_from_rows(read_dictionary_csv(text, path), name=name, path=path)
