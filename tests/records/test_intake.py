"""IntakeData shapes: one row per record, repeating instruments as their own tables, events when longitudinal."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import intake_data as shared
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.errors import UsageError
from trialkit.records import IntakeData, read_intake


class TestClassicStudy:
    def test_records_one_row_per_record_typed(self, clean_csv, mini_study):
        intake = read_intake(clean_csv, mini_study)
        rec = intake.records
        assert rec.height == 2
        assert rec.row(0, named=True)["dob"] == dt.date(1990, 5, 2)
        assert rec.row(0, named=True)["visit_time"] == dt.datetime(2025, 1, 10, 9, 30)
        assert rec.row(1, named=True)["weight"] == 80.0
        # repeating fields are not record columns; the record table has every non-repeating column
        assert "drug" not in rec.columns and "enrol_complete" in rec.columns

    def test_instances_keyed_by_record_and_instance(self, clean_csv, mini_study):
        hist = read_intake(clean_csv, mini_study).instances["history"]
        assert hist.columns[:2] == ["record_id", "redcap_repeat_instance"]
        assert hist.schema["redcap_repeat_instance"] == pl.Int64
        assert hist.select("record_id", "redcap_repeat_instance", "drug").rows() == [
            ("001", 1, "sertraline"),
            ("001", 2, "other"),
            ("002", 1, "sertraline"),
        ]
        assert hist.schema["start"] == pl.Date

    def test_record_with_only_instance_rows_still_listed(self, tmp_path, mini_study, clean_rows):
        rows = [
            *clean_rows,
            {
                "record_id": "003",
                "redcap_repeat_instrument": "history",
                "redcap_repeat_instance": "1",
                "drug": "sertraline",
            },
        ]
        intake = read_intake(shared.write_csv(tmp_path / "i.csv", rows), mini_study)
        rec = intake.records
        assert rec.get_column("record_id").to_list() == ["001", "002", "003"]
        assert rec.row(2, named=True)["age"] is None

    def test_bad_cells_become_null_but_raw_keeps_them(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["age"] = "thirty"
        clean_rows[0]["dob"] = "1990-02-30"
        intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), mini_study)
        assert intake.records.row(0, named=True)["age"] is None
        assert intake.records.row(0, named=True)["dob"] is None
        assert intake.raw.row(0, named=True)["age"] == "thirty"

    def test_fields_absent_from_the_file_are_null_columns(self, tmp_path, mini_study):
        path = tmp_path / "few.csv"
        path.write_text("record_id,age\n007,40\n")
        rec = read_intake(path, mini_study).records
        assert rec.schema["dob"] == pl.Date and rec.get_column("dob").to_list() == [None]
        assert rec.schema["race___1"] == pl.String
        assert read_intake(path, mini_study).instances["history"].height == 0

    def test_from_frame_accepts_typed_values(self, mini_study):
        frame = pl.DataFrame(
            {"record_id": ["010"], "age": [41], "dob": [dt.date(1984, 1, 2)], "height": [170.5], "sex": [1]}
        )
        rec = IntakeData.from_frame(frame, mini_study).records
        got = rec.select("record_id", "age", "dob", "height", "sex").row(0)
        assert got == ("010", 41, dt.date(1984, 1, 2), 170.5, "1")

    def test_keys_trimmed_values_verbatim_blank_is_null(self, tmp_path, mini_study):
        path = tmp_path / "ws.csv"
        path.write_text('record_id,age,email,sex\n 001 ,34,"", 1\n')
        intake = read_intake(path, mini_study)
        assert intake.records.select("record_id", "age", "email").row(0) == ("001", 34, None)
        # a padded code is kept as written, so validation can show it rather than silently fix it
        assert intake.raw.row(0, named=True)["sex"] == " 1"


class TestLongitudinalStudy:
    ROWS: ClassVar[list[dict[str, str]]] = [
        {
            "record_id": "1",
            "redcap_event_name": "screening_arm_1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "",
            "screening_date": "2025-02-01",
            "madrs_total": "31",
            "sex": "1",
        },
        {
            "record_id": "1",
            "redcap_event_name": "screening_arm_1",
            "redcap_repeat_instrument": "atrq",
            "redcap_repeat_instance": "1",
            "atrq_drug": "sertraline",
            "atrq_dose": "100",
        },
        {
            "record_id": "1",
            "redcap_event_name": "baseline_arm_1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "",
            "madrs_total": "28",
        },
        {
            "record_id": "1",
            "redcap_event_name": "treatment_arm_1",
            "redcap_repeat_instrument": "kap_session",
            "redcap_repeat_instance": "1",
            "ks_date": "2025-03-01",
            "ks_dose_mgkg": "0.50",
        },
        {
            "record_id": "2",
            "redcap_event_name": "baseline_arm_1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "",
            "madrs_total": "22",
        },
    ]

    def test_records_are_the_screening_rows(self, tmp_path, kap_study):
        intake = read_intake(shared.write_csv(tmp_path / "k.csv", self.ROWS), kap_study)
        assert intake.event == "screening_arm_1"
        rec = intake.records
        assert rec.get_column("record_id").to_list() == ["1", "2"]
        assert rec.get_column("madrs_total").to_list() == [31.0, None]
        assert "redcap_event_name" not in rec.columns

    def test_other_events_and_record_events(self, tmp_path, kap_study):
        intake = read_intake(shared.write_csv(tmp_path / "k.csv", self.ROWS), kap_study)
        assert intake.for_event("baseline_arm_1").get_column("madrs_total").to_list() == [28.0, 22.0]
        assert intake.record_events.height == 3
        chosen = read_intake(tmp_path / "k.csv", kap_study, event="baseline_arm_1")
        assert chosen.records.get_column("madrs_total").to_list() == [28.0, 22.0]
        with pytest.raises(UsageError, match="unknown event"):
            intake.for_event("week_99")

    def test_instances_carry_the_event(self, tmp_path, kap_study):
        intake = read_intake(shared.write_csv(tmp_path / "k.csv", self.ROWS), kap_study)
        ks = intake.instances["kap_session"]
        assert ks.columns[:3] == ["record_id", "redcap_event_name", "redcap_repeat_instance"]
        assert ks.row(0, named=True)["ks_dose_mgkg"] == 0.5
        assert intake.instances["atrq"].get_column("atrq_dose").to_list() == [100.0]

    def test_missing_event_column_reads_default_event(self, tmp_path, kap_study):
        path = tmp_path / "flat.csv"
        path.write_text("record_id,madrs_total\n1,30\n")
        intake = read_intake(path, kap_study)
        assert intake.records.get_column("madrs_total").to_list() == [30.0]
        assert intake.notes and "screening_arm_1" in intake.notes[0]


def test_parquet_date_times_at_midnight_in_date_fields_are_dates(tmp_path, kap_study):
    # a typed source (Parquet, Excel) may only hold a date as a date-time: midnight is the date itself
    path = tmp_path / "i.parquet"
    pl.DataFrame({
        "record_id": ["1", "2"],
        "redcap_event_name": ["screening_arm_1"] * 2,
        "screening_date": [dt.datetime(2026, 10, 13), dt.datetime(2026, 10, 13, 14, 30)],
    }).write_parquet(path)
    intake = read_intake(path, kap_study)
    assert intake.records.get_column("screening_date").to_list() == [dt.date(2026, 10, 13), None]


def test_parquet_reads_only_the_columns_asked_for(tmp_path, kap_study):
    # a column nobody reads is never loaded: not even one that could not be read as REDCap text (a nested list)
    from trialkit.errors import DataError

    path = tmp_path / "i.parquet"
    pl.DataFrame({
        "record_id": ["001", "002"],
        "redcap_event_name": ["screening_arm_1"] * 2,
        "screening_date": [dt.date(2026, 10, 13), None],
        "dob": [dt.date(1980, 1, 2), dt.date(1990, 3, 4)],
        "scanner_notes": [[1, 2], [3]],
    }).write_parquet(path)
    intake = read_intake(path, kap_study, columns={"screening_date"})
    assert set(intake.raw.columns) == {"_row", "record_id", "redcap_event_name", "screening_date"}
    assert intake.records.get_column("screening_date").to_list() == [dt.date(2026, 10, 13), None]
    assert intake.records.get_column("dob").null_count() == 2  # not read: absent, like a column not exported
    with pytest.raises(DataError, match="nested"):
        read_intake(path, kap_study)
    # the header is still checked whole: a duplicated column among those left out refuses the file
    pl.DataFrame({"record_id": ["1"], "dob": ["x"], "dob_duplicated_0": ["y"]}).write_parquet(path)
    with pytest.raises(DataError, match="duplicate column"):
        read_intake(path, kap_study, columns={"screening_date"})


def test_parquet_reads_only_the_rows_of_the_records_asked_for(tmp_path, kap_study, monkeypatch):
    # `screen --record ID` on a large Parquet file: the rows are filtered inside the read, and each keeps its row
    # number in the file (messages name it), exactly as when the whole file is read and then filtered
    from trialkit.records import readers

    path = tmp_path / "i.parquet"
    pl.DataFrame({
        "record_id": ["001", "002", " 003", "002", "004"],
        "redcap_event_name": ["screening_arm_1"] * 5,
        "dob": ["1980-01-02", "1990-03-04", "x", None, "1970-05-06"],
        "scanner_notes": [[1], [2], [3], [4], [5]],  # unreadable as REDCap text: never loaded
    }).write_parquet(path)
    wanted = ["002", "003"]
    seen = []
    real = readers.pl.read_parquet

    def spy(*args, **kwargs):  # the whole-file read must not happen
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(readers.pl, "read_parquet", spy)
    part = read_intake(path, kap_study, records=wanted, columns={"dob"})
    monkeypatch.undo()
    assert seen == []
    whole = read_intake(path, kap_study, columns={"dob"})
    expected = whole.raw.filter(pl.col("record_id").str.strip_chars().is_in(wanted))
    assert part.raw.to_dicts() == expected.to_dicts()
    assert part.raw.get_column("_row").to_list() == [2, 3, 4]
    assert part.records.to_dicts() == whole.records.filter(pl.col("record_id").is_in(wanted)).to_dicts()


def test_rows_with_no_cell_at_all_are_no_data(tmp_path, kap_study):
    path = tmp_path / "i.csv"
    path.write_text("record_id,redcap_event_name,dob\n1,screening_arm_1,1980-01-01\n,,\n,,\n", encoding="utf-8")
    intake = read_intake(path, kap_study)
    assert intake.raw.height == 1 and intake.records.get_column("record_id").to_list() == ["1"]


@pytest.mark.parametrize("content, encoding, hint", [
    ("record_id;redcap_event_name\n1;screening_arm_1\n", "utf-8", "Excel saved it with semicolons"),
    ("record_id,redcap_event_name\n1,screening_arm_1\n", "utf-16-le", "another encoding"),
    # a binary file (or another encoding) whose first bytes happen to hold a ';' is not "saved with semicolons"
    ("\x89PNG\x1a\x00\xff\xfe;\x01\n\x00\x00", "latin-1", "not UTF-8"),
])
def test_a_file_in_the_wrong_shape_says_what_to_do(tmp_path, kap_study, content, encoding, hint):
    from trialkit.errors import DataError

    path = tmp_path / "i.csv"
    path.write_bytes(content.encode(encoding))
    with pytest.raises(DataError, match=hint):
        read_intake(path, kap_study)


def test_every_record_gets_a_row_whatever_the_order_of_its_rows():
    """A record with only repeating rows still gets its (blank) row, whether each record's rows are together or
    not; the fast test for the usual grouped file never drops one."""
    import polars as pl

    from trialkit.records.intake import _with_all_records

    rows = pl.DataFrame({"record_id": ["A", "B"], "x": [1, 2]})
    for order in (["A", "A", "B", "C", "C"], ["A", "C", "B", "A", "C"], ["C", "A", "B"]):
        typed = pl.DataFrame({"record_id": order, "_row": range(1, len(order) + 1)})
        out = _with_all_records(typed, rows, "record_id")
        assert out.get_column("record_id").to_list() == list(dict.fromkeys(order))  # first appearance
        # rows grouped by kind (a Parquet file read by form) keep the file's first-appearance order
        shuffled = typed.sort("record_id", maintain_order=True)
        assert _with_all_records(shuffled, rows, "record_id").get_column("record_id").to_list() == list(
            dict.fromkeys(order)
        )
        assert out.filter(pl.col("record_id") == "C").get_column("x").to_list() == [None]
    grouped = pl.DataFrame({"record_id": ["A", "A", None, "B", "B"]})
    assert _with_all_records(grouped, rows, "record_id") is rows


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["0", "1", "2", " 1", "1.0", "", "99", "UNK", None]), max_size=10),
    st.lists(st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "UNK"]), min_size=0,
             max_size=12, unique=True),
)
def test_codes_checked_one_by_one_or_hashed_agree(cells: list[str | None], codes: list[str]) -> None:
    from trialkit.records.intake import _all_among

    frame = pl.DataFrame({"c": cells}, schema={"c": pl.String})
    expected = frame.select(pl.col("c").drop_nulls().is_in(codes).all()).item()
    assert frame.select(_all_among(pl.col("c"), codes)).item() == expected
