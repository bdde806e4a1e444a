"""Every supported format reads as text first and types to the same records; bad files give DataError."""

from __future__ import annotations

import datetime as dt
import json

import intake_data as shared
import openpyxl
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.errors import DataError
from trialkit.records import read_intake
from trialkit.records.readers import read_text_frame, stringify


def _records_of(path, study):
    intake = read_intake(path, study)
    return intake.records, intake.instances["history"]


class TestFormatsAgree:
    """CSV, Excel, JSON, NDJSON and Parquet of the same rows give identical typed tables."""

    def test_csv_keeps_text_and_leading_zeros(self, clean_csv, mini_study):
        raw, fmt = read_text_frame(clean_csv)
        assert fmt == "csv"
        assert all(dtype == pl.String for name, dtype in raw.schema.items() if name != "_row")
        assert raw.get_column("record_id").to_list()[:2] == ["001", "001"]
        records, history = _records_of(clean_csv, mini_study)
        assert records.get_column("record_id").to_list() == ["001", "002"]
        assert records.schema["dob"] == pl.Date
        assert records.schema["age"] == pl.Int64
        assert records.schema["height"] == pl.Float64
        assert records.schema["visit_time"] == pl.Datetime("us")
        assert records.schema["sex"] == pl.String  # codes stay codes
        assert records.get_column("race____99").to_list() == ["0", "0"]
        assert history.get_column("dose").to_list() == [100.0, 150.0, 50.5]

    def test_excel_with_number_and_date_cells(self, tmp_path, clean_csv, clean_rows, mini_study):
        frame = shared.rows_frame(clean_rows)
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(frame.columns)
        for row in frame.iter_rows(named=True):
            cells = []
            for name, value in row.items():
                if value == "":
                    cells.append(None)
                elif name in ("age", "height", "dose", "mood"):
                    cells.append(float(value))  # Excel stores numbers as floats: 34 comes back as "34"
                elif name in ("dob", "screen_date", "start"):
                    cells.append(dt.datetime.fromisoformat(value))  # real date cells
                elif name == "visit_time":
                    cells.append(dt.datetime.fromisoformat(value))
                else:
                    cells.append(value)  # text cells: "001" stays text
            ws.append(cells)
        path = tmp_path / "intake.xlsx"
        wb.save(path)
        assert _records_of(path, mini_study)[0].equals(_records_of(clean_csv, mini_study)[0])
        assert _records_of(path, mini_study)[1].equals(_records_of(clean_csv, mini_study)[1])

    def test_json_with_numbers(self, tmp_path, clean_csv, clean_rows, mini_study):
        rows = []
        for row in clean_rows:
            out = {}
            for k, v in row.items():
                out[k] = int(v) if k in ("age", "mood", "redcap_repeat_instance") and v else v
            rows.append(out)
        path = tmp_path / "intake.json"
        path.write_text(json.dumps(rows))
        assert _records_of(path, mini_study)[0].equals(_records_of(clean_csv, mini_study)[0])

    def test_ndjson(self, tmp_path, clean_csv, clean_rows, mini_study):
        path = tmp_path / "intake.ndjson"
        path.write_text("\n".join(json.dumps(r) for r in clean_rows) + "\n")
        assert _records_of(path, mini_study)[1].equals(_records_of(clean_csv, mini_study)[1])

    def test_typed_parquet(self, tmp_path, clean_csv, mini_study):
        typed = read_intake(clean_csv, mini_study).typed.drop("_row")
        # A float column with gaps (pandas' int-with-NaN) must not turn codes into "1.0".
        typed = typed.with_columns(pl.col("redcap_repeat_instance").cast(pl.Float64))
        path = tmp_path / "intake.parquet"
        typed.write_parquet(path)
        assert _records_of(path, mini_study)[0].equals(_records_of(clean_csv, mini_study)[0])
        assert _records_of(path, mini_study)[1].equals(_records_of(clean_csv, mini_study)[1])


class TestStringify:
    def test_integral_floats_lose_the_point(self):
        out = stringify(pl.DataFrame({"a": [1.0, 2.5, None, 1e20]}))
        assert out.get_column("a").to_list() == ["1", "2.5", None, "1e+20"]

    def test_booleans_dates_and_times(self):
        frame = pl.DataFrame(
            {
                "b": [True, False],
                "d": [dt.date(2024, 2, 29), None],
                "t": [dt.datetime(2024, 1, 1, 9, 30), dt.datetime(2024, 1, 1, 9, 30, 15)],
            }
        )
        out = stringify(frame)
        assert out.rows() == [("1", "2024-02-29", "2024-01-01 09:30"), ("0", None, "2024-01-01 09:30:15")]

    def test_nested_values_are_refused(self):
        with pytest.raises(DataError, match="nested"):
            stringify(pl.DataFrame({"a": [[1, 2]]}))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.from_regex(r"0[0-9]{1,8}", fullmatch=True), min_size=1, max_size=5, unique=True))
    def test_identifiers_survive_every_text_format(self, tmp_path_factory, ids):
        """Leading zeros are kept whatever the reader (no float inference anywhere)."""
        tmp = tmp_path_factory.mktemp("ids")
        frame = pl.DataFrame({"record_id": ids, "age": ["34"] * len(ids)})
        frame.write_csv(tmp / "a.csv")
        (tmp / "a.json").write_text(json.dumps(frame.to_dicts()))
        frame.write_parquet(tmp / "a.parquet")
        for name in ("a.csv", "a.json", "a.parquet"):
            raw, _ = read_text_frame(tmp / name)
            assert raw.get_column("record_id").to_list() == ids


class TestUnusableFiles:
    def test_missing_file(self, tmp_path, mini_study):
        with pytest.raises(DataError, match="file not found"):
            read_intake(tmp_path / "none.csv", mini_study)

    def test_unknown_extension(self, tmp_path, mini_study):
        path = tmp_path / "data.sav"
        path.write_text("x")
        with pytest.raises(DataError, match="unknown data file type"):
            read_intake(path, mini_study)

    def test_empty_csv(self, tmp_path, mini_study):
        path = tmp_path / "empty.csv"
        path.write_text("")
        with pytest.raises(DataError, match="empty"):
            read_intake(path, mini_study)

    def test_not_utf8(self, tmp_path, mini_study):
        path = tmp_path / "latin.csv"
        path.write_bytes("record_id,email\n001,caf\xe9@example.org\n".encode("latin-1"))
        with pytest.raises(DataError, match="UTF-8"):
            read_intake(path, mini_study)

    def test_corrupt_excel(self, tmp_path, mini_study):
        path = tmp_path / "broken.xlsx"
        path.write_bytes(b"PK\x03\x04 not really a workbook")
        with pytest.raises(DataError, match="cannot read as xlsx"):
            read_intake(path, mini_study)

    def test_json_that_is_not_records(self, tmp_path, mini_study):
        path = tmp_path / "odd.json"
        path.write_text('{"record_id": {"nested": [1, 2]}}')
        with pytest.raises(DataError):
            read_intake(path, mini_study)

    def test_no_record_id_column(self, tmp_path, mini_study):
        path = tmp_path / "other.csv"
        path.write_text("participant,age\nP1,34\n")
        with pytest.raises(DataError, match="no 'record_id' column") as err:
            read_intake(path, mini_study)
        assert err.value.location is not None and err.value.location.file == str(path)

    def test_duplicate_header(self, tmp_path, mini_study):
        path = tmp_path / "dup.csv"
        path.write_text("record_id,age,age\n001,3,4\n")
        with pytest.raises(DataError, match="duplicate column 'age'"):
            read_intake(path, mini_study)


def test_excel_sheet_by_name(tmp_path, mini_study):
    wb = openpyxl.Workbook()
    wb.active.title = "notes"
    wb.active.append(["nothing here"])
    data = wb.create_sheet("intake")
    data.append(["record_id", "age"])
    data.append(["0042", 51])
    path = tmp_path / "book.xlsx"
    wb.save(path)
    rec = read_intake(path, mini_study, sheet="intake").records
    assert rec.select("record_id", "age").row(0) == ("0042", 51)
    with pytest.raises(DataError):
        read_intake(path, mini_study)  # the first sheet is not intake data
    with pytest.raises(DataError):
        read_intake(path, mini_study, sheet="missing")


@pytest.mark.parametrize("sheet", [None, "cover"])
def test_an_empty_sheet_is_named_not_called_a_damaged_workbook(tmp_path, mini_study, sheet):
    wb = openpyxl.Workbook()
    wb.active.title = "cover"  # left empty
    wb.create_sheet("intake").append(["record_id", "age"])
    path = tmp_path / "book.xlsx"
    wb.save(path)
    with pytest.raises(DataError) as info:
        read_intake(path, mini_study, sheet=sheet)
    message = info.value.message
    assert "is empty" in message and "'intake'" in message and "damaged" not in message


# ---- `-`: standard input where a data file is expected ----------------------------------------------------------
def _stdin(monkeypatch, data: bytes) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "ndjson", "parquet", "xlsx"])
def test_dash_reads_standard_input_in_any_format(tmp_path, monkeypatch, kind):
    from trialkit.records.readers import read_text_frame

    frame = pl.DataFrame({"record_id": ["001", "002"], "age": ["34", None]})
    path = tmp_path / f"d.{kind}"
    if kind == "csv":
        frame.write_csv(path)
    elif kind == "tsv":
        frame.write_csv(path, separator="\t")
    elif kind == "json":
        frame.write_json(path)
    elif kind == "ndjson":
        frame.write_ndjson(path)
    elif kind == "parquet":
        frame.write_parquet(path)
    else:
        wb = openpyxl.Workbook()
        wb.active.append(frame.columns)
        for row in frame.iter_rows():
            wb.active.append(list(row))
        wb.save(path)
    _stdin(monkeypatch, path.read_bytes())
    got, fmt = read_text_frame("-")
    assert fmt == {"tsv": "tsv", "ndjson": "ndjson"}.get(kind, kind)
    assert got.select("record_id", "age").to_dicts() == frame.to_dicts()


def test_an_error_on_standard_input_names_dash_not_a_temporary_file(monkeypatch):
    from trialkit.records.readers import read_delimited

    _stdin(monkeypatch, b'record_id,notes\n001,"never closed\n')
    with pytest.raises(DataError) as info:
        read_delimited("-")
    assert info.value.location.file == "-" and info.value.location.line == 2


@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_json_columns_keep_the_files_order(tmp_path, kind):
    # polars orders an inferred JSON schema by hash: validation listed a row's findings in another order each run
    keys = ["record_id", *(f"f{n:02d}_{'zyxwvutsrq'[n % 10]}" for n in range(30)), "a_last"]
    rows = [{k: str(i) for k in keys} for i in range(3)]
    rows[1]["extra"] = "x"  # a key the first record lacks comes after the first record's
    path = tmp_path / f"data.{kind}"
    text = json.dumps(rows) if kind == "json" else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    frame, fmt = read_text_frame(path)
    assert fmt == kind
    assert frame.columns[1:] == [*keys, "extra"]  # after ROW


def test_columns_without_a_name_are_said_so(tmp_path):
    # two empty columns at the end of each row (a spreadsheet's leftovers) read as "duplicate column ''"
    path = tmp_path / "intake.csv"
    path.write_text("record_id,age,,\n0001,34,,\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_text_frame(path)
    assert "column name missing in the header for 2 columns (3, 4)" in info.value.message
    assert info.value.location is not None and info.value.location.line == 1
