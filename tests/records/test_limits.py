"""The pre-read scan of delimited files (trialkit.records.limits): every record as wide as the header, quotes
closed, lines bounded; and the xlsx size check. The scan is compared with Python's csv module on random files,
with tiny chunks so that records, quoted fields and CRLF pairs straddle chunk boundaries."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.errors import DataError
from trialkit.records import limits
from trialkit.records.readers import read_text_frame

CELL = st.text(alphabet='ab,"\n\r\t ', max_size=6)


def _csv(rows: list[list[str]], sep: str = ",", crlf: bool = False) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return out.getvalue().encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 4),
    rows=st.lists(st.lists(CELL, min_size=1, max_size=5), min_size=1, max_size=6),
    sep=st.sampled_from([",", "\t"]),
    crlf=st.booleans(),
    chunk=st.sampled_from([3, 7, 64]),
    exact=st.booleans(),
)
def test_scan_agrees_with_the_csv_module(tmp_path, monkeypatch, width, rows, sep, crlf, chunk, exact):
    monkeypatch.setattr(limits, "_CHUNK", chunk)
    header = [f"c{i}" for i in range(width)]
    # a row that would read as blank is not a record to either reader; keep rows that say something
    if not crlf:
        # csv.writer leaves a lone CR unquoted under "\n" line ends; Python's csv reader then breaks the record
        # there while polars and the scan do not (only LF ends a line): the oracle cannot judge such files
        rows = [[c.replace("\r", "") for c in r] for r in rows]
    rows = [r for r in rows if not (len(r) == 1 and r[0] in ("", "\r"))]
    path = tmp_path / ("f.csv" if sep == "," else "f.tsv")
    path.write_bytes(_csv([header, *rows], sep, crlf))
    ragged = [i for i, r in enumerate(rows) if len(r) != width]
    if ragged and not exact and any(len(r) > width for r in rows):
        # the fast path counts separators per chunk: a short row and a long row cancel out there, and the reader
        # (which refuses long rows) is what refuses the file, as limits' module says
        with pytest.raises(DataError, match=f"where the header has {width}"):
            read_text_frame(path)
    elif ragged:
        with pytest.raises(DataError, match=f"where the header has {width}") as err:
            limits.check_delimited(path, sep, exact=exact)
        parsed = list(csv.reader(io.StringIO(path.read_bytes().decode(), newline=""), delimiter=sep))
        line = 1 + sum(len(_csv([r], sep, crlf).decode().splitlines() or [""]) for r in parsed[: ragged[0] + 1])
        assert err.value.location.line <= line  # the record's first physical line
    else:
        limits.check_delimited(path, sep, exact=exact)


@pytest.mark.parametrize("chunk", [4, 1 << 24])
@pytest.mark.parametrize(
    "content, line, words",
    [
        ("a,b,c\n1,2,3\n4,5\n", 3, "2 fields where the header has 3"),  # cut off at the end, no line end
        ("a,b,c\n1,2,3\n4,5\n6,7,8\n", 3, "2 fields where the header has 3"),
        ("a,b,c\n1,2,3\n4,5,6,7\n", 3, "4 fields where the header has 3"),
        ("a,b,c\n1,2,3\n   \n", 3, "1 field where the header has 3"),
        ('a,b,c\n1,"2\n\n,x",3\n4,"5,6\n', 5, "unbalanced quote"),
    ],
)
def test_bad_shapes_are_located(tmp_path, monkeypatch, chunk, content, line, words):
    monkeypatch.setattr(limits, "_CHUNK", chunk)
    path = tmp_path / "f.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=words) as err:
        limits.check_delimited(path, ",")
    assert err.value.location.line == line


@pytest.mark.parametrize("chunk", range(2, 13))  # every way a CRLF pair can straddle two chunks
@pytest.mark.parametrize("content", ["a,b\n1,2\n\n3,4\n", "a,b\r\n1,2\r\n\r\n3,4", 'a,b\n"x\n\ny",2\n', "a\n\n1\n"])
def test_blank_lines_and_quoted_line_ends_are_fine(tmp_path, monkeypatch, content, chunk):
    monkeypatch.setattr(limits, "_CHUNK", chunk)
    path = tmp_path / "f.csv"
    path.write_text(content, newline="")
    limits.check_delimited(path, ",")


def test_a_line_past_the_limit_is_refused_before_the_reader_sees_it(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(limits, "_CHUNK", 256)
    path = tmp_path / "f.csv"
    path.write_text("a,b\n1,2\n3," + "x" * 1500 + "\n")
    with pytest.raises(DataError, match="a line longer than") as err:
        limits.check_delimited(path, ",")
    assert err.value.location.line == 3
    path.write_text('a,b\n1,2\n3,"' + "x" * 1500)
    with pytest.raises(DataError, match="unbalanced quote") as err:
        limits.check_delimited(path, ",")
    assert err.value.location.line == 3


def _xlsx(tmp_path: Path, sheet_xml: bytes) -> Path:
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("xl/worksheets/sheet1.xml", sheet_xml)
    return path


def test_a_sheet_with_too_many_rows_is_refused_without_unpacking_it_into_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_XLSX_ROWS", 1000)
    rows = b"".join(b'<row><c t="n"><v>1</v></c></row>' for _ in range(1500))
    with pytest.raises(DataError, match="1,500 rows, more than the limit of 1,000"):
        limits.check_xlsx(_xlsx(tmp_path, b"<worksheet><sheetData>" + rows + b"</sheetData></worksheet>"))
    sparse = b'<worksheet><sheetData><row r="1"/><row r="5000"><c r="A5000"><v>1</v></c></row></sheetData></worksheet>'
    with pytest.raises(DataError, match="5,000 rows"):
        limits.check_xlsx(_xlsx(tmp_path, sparse))
    declared = b'<worksheet><dimension ref="A1:C9999"/><sheetData></sheetData></worksheet>'
    with pytest.raises(DataError, match="9,999 rows"):
        limits.check_xlsx(_xlsx(tmp_path, declared))
    limits.check_xlsx(_xlsx(tmp_path, b"<worksheet><sheetData>" + rows[: 33 * 900] + b"</sheetData></worksheet>"))


def test_a_part_that_unpacks_past_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_XLSX_SHEET_BYTES", 10_000)
    with pytest.raises(DataError, match="unpacks to"):
        limits.check_xlsx(_xlsx(tmp_path, b"<worksheet>" + b" " * 20_000 + b"</worksheet>"))


def test_read_text_frame_checks_an_openpyxl_workbook_before_reading_it(tmp_path, monkeypatch):
    from openpyxl import Workbook

    from trialkit.records.readers import read_text_frame

    wb = Workbook()
    for i in range(30):
        wb.active.append([f"{i:04d}", "screening_arm_1"])
    path = tmp_path / "book.xlsx"
    wb.save(path)
    frame, fmt = read_text_frame(path)  # a real workbook passes the check
    assert fmt == "xlsx" and frame.height == 29
    monkeypatch.setattr(limits, "MAX_XLSX_ROWS", 20)
    with pytest.raises(DataError, match="holds 30 rows, more than the limit of 20") as err:
        read_text_frame(path)
    assert err.value.location.file == str(path)


def test_read_text_frame_refuses_a_huge_line_before_polars(tmp_path, monkeypatch):
    from trialkit.records.readers import read_text_frame

    monkeypatch.setattr(limits, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "f.csv"
    path.write_text('record_id,notes\n0001,"' + "x" * 5000)
    with pytest.raises(DataError, match=r"a line longer than .* \(an unbalanced quote\?\)") as err:
        read_text_frame(path)
    assert err.value.location.line == 2


@pytest.mark.parametrize("diagnose_bytes", [10, 64 << 20])  # a large file is located by the exact scan
def test_a_short_and_a_long_row_that_cancel_out_are_still_located(tmp_path, monkeypatch, diagnose_bytes):
    from trialkit.records import readers

    monkeypatch.setattr(readers, "_DIAGNOSE_BYTES", diagnose_bytes)
    path = tmp_path / "f.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n6,7,8,9\n")  # the chunk's separator total is right
    with pytest.raises(DataError, match="a line with 2 fields where the header has 3") as err:
        readers.read_text_frame(path)
    assert err.value.location.line == 3
