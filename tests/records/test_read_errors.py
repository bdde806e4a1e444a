"""Unreadable intake files: the message names the file, the line and the kind of problem, and never quotes
file content (parsers' own messages repeat the offending cells: names, dates of birth, e-mails)."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from trialkit.errors import DataError
from trialkit.records import read_intake

ROOT = Path(__file__).resolve().parents[2]

# Identifier-like values planted in every malformed file; none may reach a message or a traceback.
PHI = ("Zebulon", "Quist", "zeb.quist@example.org", "1980-01-02", "555-0142", "Omar")
HEADER = "record_id,first_name,last_name,dob,email,phone\n"
GOOD = "001,Zebulon,Quist,1980-01-02,zeb.quist@example.org,555-0142\n"


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _error(path: Path, study) -> DataError:
    with pytest.raises(DataError) as err:
        read_intake(path, study)
    exc = err.value
    shown = str(exc) + "".join(traceback.format_exception(exc))  # what the CLI prints, with and without --debug
    for value in PHI:
        assert value not in shown, f"{value!r} leaked into: {shown}"
    assert exc.location is not None and exc.location.file == str(path)
    return exc


# (file name, content, expected line, expected column or None, words the message must hold)
CASES = [
    pytest.param(
        "quote.csv",
        HEADER + GOOD + '002,"Omar,Smith,1990-03-04,omar@example.org,555-0100\n003,Ann,Lee,1970-01-01,a@b.org,1\n',
        3,
        None,
        "unbalanced quote",
        id="csv-unbalanced-quote",
    ),
    pytest.param(
        "ragged.csv",
        HEADER + GOOD + GOOD.replace("001", "002").rstrip("\n") + ",extra\n",
        3,
        None,
        "7 fields where the header has 6",
        id="csv-ragged-line",
    ),
    pytest.param(
        "after.csv",
        HEADER + GOOD + '002,"Omar"x,Quist,1980-01-02,zeb.quist@example.org,555-0142\n',
        3,
        None,
        "text after a closing quote",
        id="csv-text-after-quote",
    ),
    pytest.param(
        "late.csv",
        HEADER + '001,"Zebulon,Quist\n002,Omar,"x",1980-01-02,zeb.quist@example.org,555-0142\n',
        2,
        None,
        "only closes on line 3",
        id="csv-quote-closes-late",
    ),
    pytest.param(
        "quote.tsv",
        'record_id\tfirst_name\tdob\n001\tZebulon\t1980-01-02\n002\t"Omar\t1980-01-02\n',
        3,
        None,
        "unbalanced quote",
        id="tsv-unbalanced-quote",
    ),
    pytest.param(
        "latin.csv",
        (HEADER + GOOD + "002,Omar,Caf\xe9,1980-01-02,zeb.quist@example.org,555-0142\n").encode("latin-1"),
        3,
        None,
        "not UTF-8",
        id="csv-not-utf8",
    ),
    pytest.param(
        "dup.csv",
        "record_id,dob,dob\n001,1980-01-02,1980-01-02\n",
        1,
        None,
        "duplicate column 'dob'",
        id="csv-duplicate-column",
    ),
    pytest.param(
        "nested.json",
        '[{"record_id": "001", "first_name": "Zebulon"},\n {"record_id": "002", "first_name": {"given": "Omar"}}]',
        2,
        None,
        "record 2: field 'first_name' holds an object",
        id="json-nested-object",
    ),
    pytest.param(
        "list.json",
        '[\n{"record_id": "001", "first_name": "Zebulon"},\n"Zebulon Quist"\n]',
        3,
        None,
        "record 2 is a string, not a JSON object",
        id="json-item-not-object",
    ),
    pytest.param(
        "trunc.json",
        '[{"record_id": "001", "first_name": "Zebulon"},\n{"record_id": "002", "first_name": ',
        2,
        36,
        "truncated",
        id="json-truncated",
    ),
    pytest.param(
        "token.json",
        '[{"record_id": "001",\n  "first_name": Zebulon}]',
        2,
        17,
        "invalid JSON: expecting value",
        id="json-bad-token",
    ),
    pytest.param(
        "comma.json",
        '[{"record_id": "001", "first_name": "Zebulon"}\n {"record_id": "002"}]',
        2,
        2,
        "invalid JSON: expecting ','",
        id="json-missing-comma",
    ),
    pytest.param(
        "scalar.json", '"Zebulon Quist"', None, None, "holds a string, not a list of records", id="json-scalar"
    ),
    pytest.param("empty.json", "  \n", None, None, "empty", id="json-empty"),
    pytest.param(
        "bad.ndjson",
        '{"record_id": "001", "first_name": "Zebulon"}\n\n{"record_id": "002", "first_name": "Omar"\n',
        3,
        42,  # just past the line's last character
        "invalid JSON: the line ends too early",
        id="ndjson-truncated-line",
    ),
    pytest.param(
        "text.ndjson",
        '{"record_id": "001", "first_name": "Zebulon"}\nZebulon Quist\n',
        2,
        1,
        "invalid JSON: expecting value",
        id="ndjson-text-line",
    ),
    pytest.param(
        "list.ndjson",
        '{"record_id": "001", "first_name": "Zebulon"}\n["Zebulon", "Quist"]\n',
        2,
        None,
        "this line is a list, not a JSON object",
        id="ndjson-line-not-object",
    ),
    pytest.param("empty.ndjson", "\n\n", None, None, "empty", id="ndjson-empty"),
    pytest.param(
        "broken.parquet", b"PAR1 Zebulon Quist 1980-01-02", None, None, "cannot read as parquet", id="parquet-corrupt"
    ),
    pytest.param("broken.xlsx", b"PK\x03\x04 Zebulon Quist", None, None, "cannot read as xlsx", id="xlsx-corrupt"),
]


@pytest.mark.parametrize(("name", "content", "line", "col", "words"), CASES)
def test_unreadable_file_is_located_without_content(tmp_path, mini_study, name, content, line, col, words):
    exc = _error(_write(tmp_path, name, content), mini_study)
    assert words in exc.message
    assert exc.location.line == line
    assert exc.location.col == col


def test_json_top_level_object_with_nested_value(tmp_path, mini_study):
    exc = _error(_write(tmp_path, "one.json", '{"record_id": {"nested": ["Omar", 2]}}'), mini_study)
    assert "field 'record_id' holds an object" in exc.message and exc.location.line == 1


def test_missing_sheet_lists_the_sheets(tmp_path, mini_study):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "intake"
    wb.active.append(["record_id", "first_name"])
    wb.active.append(["001", "Zebulon"])
    path = tmp_path / "book.xlsx"
    wb.save(path)
    with pytest.raises(DataError, match="no sheet 'visits' in this workbook; its sheets are: 'intake'"):
        read_intake(path, mini_study, sheet="visits")


def test_multiline_quoted_notes_still_read(tmp_path, mini_study):
    """Legal CSV (a quoted field with commas, doubled quotes and a line break) is not mistaken for damage."""
    path = _write(tmp_path, "ok.csv", 'record_id,email\n001,"a, ""b""\nc@example.org"\n002,d@example.org\n')
    records = read_intake(path, mini_study).records
    assert records.get_column("email").to_list() == ['a, "b"\nc@example.org', "d@example.org"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "quote.csv",
            HEADER + GOOD + '002,"Zebulon,Quist,1980-01-02,zeb.quist@example.org,555-0142\n',
            ":3: unbalanced quote",
            id="csv-unbalanced-quote",
        ),
        pytest.param(
            "ragged.csv",
            HEADER + GOOD + GOOD.rstrip("\n") + ",extra\n",
            ":3: a line with 7 fields where the header has 6",
            id="csv-ragged-line",
        ),
        pytest.param(
            "nested.ndjson",
            '{"record_id": "001"}\n{"record_id": "002", "first_name": "Zebulon", "dob": "1980-01-02"\n',
            ":2:",
            id="ndjson-bad-line",
        ),
    ],
)
def test_cli_validate_prints_location_not_content(tmp_path, name, content, expected):
    path = _write(tmp_path, name, content)
    run = subprocess.run(
        [sys.executable, "-m", "trialkit", "validate", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr  # unreadable data: exit 1 in every command (docs/cli.md)
    assert "Traceback" not in run.stderr
    assert f"{path}{expected}" in run.stderr
    for value in PHI:
        assert value not in run.stderr and value not in run.stdout


def test_a_token_file_read_as_intake_is_not_quoted(tmp_path, mini_study):
    token = "0123456789ABCDEF0123456789ABCDEF"
    path = tmp_path / "token.csv"
    path.write_text(token + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_intake(path, mini_study)
    assert token not in str(caught.value) and "none named like a field" in str(caught.value)
    path.write_text("record_id_typo,age\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_intake(path, mini_study)
    assert "columns: record_id_typo, age" in str(caught.value)  # names are still shown: they help
