"""REDCap data dictionary: export as REDCap writes it, import back, lossless round trips."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.definitions import Choice, Field, FieldType, Instrument, load_study
from trialkit.definitions.dictionary import (
    HEADERS,
    KEYS,
    event_rows,
    export_dictionary,
    form_event_rows,
    import_dictionary,
    metadata_rows,
    parse_choices,
    project_structure,
    read_dictionary_csv,
    repeating_rows,
)
from trialkit.definitions.validation_types import VALIDATION_TYPES
from trialkit.definitions.yamlwrite import instrument_text, write_study
from trialkit.errors import DefinitionError, UsageError

GOLDEN = Path(__file__).parent / "golden"
ALL_TYPES_CSV = GOLDEN / "all_types_DataDictionary.csv"
ALL_TYPES_DIR = GOLDEN / "all_types"


def _read(path: Path) -> str:
    """File text without newline translation (cells may hold \r\n)."""
    return path.read_bytes().decode("utf-8")


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))


def _without_schema_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[1:]) if lines and lines[0].startswith("# yaml-language-server:") else text


# ---- the golden dictionary of our own: every field type, every validation type ----------------------------------
def test_golden_dictionary_uses_every_field_type_and_validation_type():
    rows = read_dictionary_csv(_read(ALL_TYPES_CSV))
    types = {r.cells["field_type"] for r in rows}
    assert types == {t.value for t in FieldType}
    text_rows = [r.cells for r in rows if r.cells["field_type"] == "text"]
    validations = {c["text_validation_type_or_show_slider_number"] for c in text_rows}
    assert set(VALIDATION_TYPES) <= validations


def test_golden_import_writes_the_expected_yaml(tmp_path):
    study = import_dictionary(_read(ALL_TYPES_CSV), name="all_types")
    written = write_study(study, tmp_path)
    for path in written:
        expected = ALL_TYPES_DIR / path.relative_to(tmp_path)
        assert _without_schema_line(_read(path)) == _without_schema_line(_read(expected)), path.name


def test_golden_yaml_exports_the_golden_dictionary_byte_for_byte():
    study = load_study(ALL_TYPES_DIR)
    assert export_dictionary(study) == _read(ALL_TYPES_CSV)


def test_golden_yaml_names_its_schema():
    text = (ALL_TYPES_DIR / "instruments" / "scores.yaml").read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = (ALL_TYPES_DIR / "instruments" / first.split("=", 1)[1]).resolve()
    assert schema.name == "instrument.schema.json" and schema.is_file()


def test_import_accepts_bom_crlf_full_quoting_and_api_headers(tmp_path):
    original = _read(ALL_TYPES_CSV)
    rows = _cells(original)
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(KEYS)  # the API's snake_case header
    writer.writerows(rows[1:])
    study = import_dictionary("\ufeff" + out.getvalue())
    exported = export_dictionary(study, bom=True)
    assert exported.startswith("\ufeff")
    assert _cells(exported) == rows


def test_multi_line_cells_survive(tmp_path):
    study = import_dictionary(_read(ALL_TYPES_CSV))
    intro = study.field("intro")
    assert intro.label == '<b>Read this first.</b>\nSecond line,\r\nthird line with "quotes".'
    assert study.field("flag").calculation.startswith("if(\n  [total] >= 3 or\n")
    assert study.field("total").annotation == " @READONLY"
    assert study.field("bare_slider").label == "Bare slider "


def test_choices_are_parsed_and_odd_cells_kept_verbatim():
    study = import_dictionary(_read(ALL_TYPES_CSV))
    assert study.field("site").choices == (Choice("1", "Boston, MA"), Choice("2", "Zürich"), Choice("3", "São Paulo"))
    assert study.field("site").choices_text is None
    odd = study.field("odd_spacing")
    assert odd.choices == (Choice("1", "One"), Choice("2", "Two")) and odd.choices_text == "1,One|2,Two"
    assert study.field("mood").slider_labels == ("Low", "", "High")
    assert parse_choices("x, Guitar | y, Ukulele") == (Choice("x", "Guitar"), Choice("y", "Ukulele"))


# ---- real dictionaries and the KAP study -------------------------------------------------------------------------
def test_shared_dictionaries_round_trip(shared_dictionaries, tmp_path):
    files = sorted(shared_dictionaries.glob("*.csv"))
    assert files
    for i, path in enumerate(files):
        text = _read(path).lstrip("\ufeff")
        study = import_dictionary(text, name="shared")
        target = tmp_path / f"d{i}"
        write_study(study, target)
        back = load_study(target)
        exported = export_dictionary(back, bom=path.read_bytes().startswith(b"\xef\xbb\xbf"))
        assert _cells(exported) == _cells(text), path.name
        assert exported.encode("utf-8") == path.read_bytes(), path.name


def test_kap_dictionary_imports_back_identically(repo_root, tmp_path):
    study = load_study(repo_root)
    exported = export_dictionary(study)
    imported = import_dictionary(exported, name="kap_trd")
    # the dictionary has no instrument labels or schedule; every field comes back identical
    assert [(i.name, i.fields) for i in imported.instruments] == [(i.name, i.fields) for i in study.instruments]
    write_study(imported, tmp_path)
    assert export_dictionary(load_study(tmp_path)) == exported


def test_kap_metadata_rows_and_project_structure(repo_root):
    study = load_study(repo_root)
    rows = metadata_rows(study)
    assert all(tuple(r) == KEYS for r in rows) and len(KEYS) == len(HEADERS) == 18
    assert rows[0]["field_name"] == "record_id" and rows[0]["form_name"] == "consent"
    phq = next(r for r in rows if r["field_name"] == "phq9_total")
    assert phq["field_type"] == "calc" and phq["select_choices_or_calculations"].startswith("[phq9_1] + [phq9_2]")
    dob = next(r for r in rows if r["field_name"] == "dob")
    assert (dob["identifier"], dob["required_field"], dob["text_validation_type_or_show_slider_number"]) == (
        "y",
        "y",
        "date_ymd",
    )
    events = event_rows(study)
    assert [e["unique_event_name"] for e in events][:3] == ["screening_arm_1", "baseline_arm_1", "treatment_arm_1"]
    assert {"arm_num": 1, "unique_event_name": "treatment_arm_1", "form": "kap_session"} in form_event_rows(study)
    assert repeating_rows(study) == [
        {"event_name": "screening_arm_1", "form_name": "atrq", "custom_form_label": ""},
        {"event_name": "treatment_arm_1", "form_name": "kap_session", "custom_form_label": ""},
        {"event_name": "maintenance_arm_1", "form_name": "kap_session", "custom_form_label": ""},
    ]
    ps = project_structure(study)
    assert ps.longitudinal and ps.record_id_field == "record_id" and ps.arms == [{"arm_num": 1, "name": "KAP"}]
    assert len(ps.instruments) == len(study.instruments)


# ---- bad dictionaries ------------------------------------------------------------------------------------------
HEADER = ",".join(f'"{h}"' for h in HEADERS) + "\n"


def _row(name="record_id", form="f", ftype="text", **extra) -> str:
    cells = {k: "" for k in KEYS} | {"field_name": name, "form_name": form, "field_type": ftype} | extra
    return ",".join(f'"{cells[k]}"' for k in KEYS) + "\n"


@pytest.mark.parametrize(
    ("text", "code", "line", "col"),
    [
        ("", "DICT001", 1, 1),
        (HEADER, "DICT001", 1, 1),
        ('"Variable / Field Name","Form"\n', "DICT002", 1, 2),
        (HEADER.replace('"Field Note"', '"Notes"'), "DICT002", 1, 7),
        (HEADER + _row() + '"a","b"\n', "DICT003", 3, 1),
        (HEADER + _row() + _row("x", ftype="textbox"), "DICT004", 3, 4),
        (HEADER + _row() + _row("Bad_Name"), "DICT005", 3, 1),
        (HEADER + _row() + _row("x", form="Form A"), "DICT005", 3, 2),
        (HEADER + _row() + _row("record_id"), "DICT006", 3, 1),
        (HEADER + _row() + _row("x", form="g") + _row("y", form="f"), "DICT007", 4, 2),
        (HEADER + '"a\n', "DICT001", 2, 1),
        (HEADER + _row() + _row("x", ftype="radio", select_choices_or_calculations="1, A | 1, B"), "DICT008", 3, 6),
    ],
)
def test_bad_dictionaries_are_located(text, code, line, col):
    with pytest.raises(DefinitionError) as info:
        import_dictionary(text, path="dd.csv")
    d = next(d for d in info.value.diagnostics if d.code == code)
    assert (d.file, d.line, d.col) == ("dd.csv", line, col), d.format()


def test_a_header_mixing_titles_and_api_keys_names_the_first_odd_column():
    mixed = ",".join([f'"{HEADERS[0]}"', *KEYS[1:]]) + "\n"
    with pytest.raises(DefinitionError) as info:
        import_dictionary(mixed, path="dd.csv")
    assert [d.format() for d in info.value.diagnostics] == [
        "dd.csv:1:2: DICT002 column 2 is 'form_name', expected 'Form Name'"
    ]


def test_write_study_never_replaces_files_without_overwrite(tmp_path):
    study = import_dictionary(HEADER + _row())
    write_study(study, tmp_path)
    (tmp_path / "study.yaml").write_text("study: mine\ninstruments: [f]\n")
    with pytest.raises(UsageError):
        write_study(study, tmp_path)
    assert (tmp_path / "study.yaml").read_text() == "study: mine\ninstruments: [f]\n"
    write_study(study, tmp_path, overwrite=True)
    assert load_study(tmp_path).instruments == study.instruments


# ---- the YAML writer round-trips any text ------------------------------------------------------------------------
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(label=_text, note=_text, annotation=_text, code=_text.filter(lambda s: s.strip() != ""), choice=_text)
def test_any_text_survives_the_yaml_writer(label, note, annotation, code, choice):
    f = Field(
        name="x",
        type=FieldType.RADIO,
        form="f",
        label=label,
        note=note,
        annotation=annotation,
        choices=(Choice(code, choice),),
        show_if=label,
    )
    inst = Instrument(name="f", fields=(f,))
    from trialkit.definitions.loader import build_instrument
    from trialkit.definitions.yamlio import parse_yaml

    back = build_instrument(parse_yaml(instrument_text(inst), "t.yaml"), "f")
    assert back.fields == inst.fields


@pytest.mark.parametrize(
    ("ftype", "cell"),
    [
        ("checkbox", "a:b, A | #2, B | ~, C | null, D | true, E | 'q', F"),
        ("radio", ", empty code | 2, B"),
        ("slider", "a | b | c | d"),
        ("yesno", "1, Yes | 0, No"),
        ("calc", "[y] +"),
        ("dropdown", "1, A |2, B"),
        ("text", "leftover"),
    ],
)
def test_odd_cells_come_back_identical(tmp_path, ftype, cell):
    text = HEADER + _row() + _row("x", ftype=ftype, select_choices_or_calculations=cell)
    write_study(import_dictionary(text), tmp_path)
    from trialkit.definitions import check_study

    back = check_study(tmp_path).study  # may hold errors (an empty code, a bad calc): it is still read back whole
    assert _cells(export_dictionary(back))[1:] == _cells(text)[1:]
