"""What spreadsheets do to intake data gets a message that says the fix (trialkit.records.spreadsheet, readers)."""

from __future__ import annotations

import datetime as dt

import intake_data as shared
import polars as pl
import pytest

from trialkit.errors import DataError
from trialkit.records import read_intake
from trialkit.validation import validate

AS_OF = dt.date(2026, 1, 1)


def findings_of(tmp_path, study, rows) -> list[dict]:
    intake = read_intake(shared.write_csv(tmp_path / "intake.csv", rows), study)
    return validate(intake, as_of=AS_OF).frame.select("row", "field", "check", "message", "value").to_dicts()


def test_a_us_date_says_how_to_write_it_without_quoting_it(tmp_path, mini_study, clean_rows):
    clean_rows[0].update(screen_date="01/10/2025", dob="05/02/1990")  # dob is an identifier
    got = findings_of(tmp_path, mini_study, clean_rows)
    dates = [f for f in got if f["field"] in ("screen_date", "dob")]
    assert [(f["row"], f["field"], f["check"]) for f in dates] == [(1, "screen_date", "type"), (1, "dob", "type")]
    for f in dates:
        assert "written with slashes" in f["message"] and "write it YYYY-MM-DD" in f["message"]
        assert "01/10/2025" not in f["message"] and "05/02/1990" not in f["message"]
    assert [f["value"] for f in dates if f["field"] == "dob"] == ["***"]


def test_a_date_with_dots_is_not_called_slashed(tmp_path, mini_study, clean_rows):
    clean_rows[0]["screen_date"] = "10.01.2025"  # Excel under a German region setting
    [f] = [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["field"] == "screen_date"]
    assert "dots" in f["message"] and "write it YYYY-MM-DD" in f["message"] and "10.01.2025" not in f["message"]


def test_other_unreadable_dates_keep_the_plain_message(tmp_path, mini_study, clean_rows):
    clean_rows[0]["screen_date"] = "2025-02-30"
    [f] = [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["field"] == "screen_date"]
    assert (f["check"], f["message"]) == ("type", "not a valid Date (YMD)")


def test_choice_labels_from_a_labels_export_say_export_raw_data(tmp_path, mini_study, clean_rows):
    clean_rows[0].update(sex="Female", pregnant="No", race___1="Checked", enrol_complete="Complete")
    got = {f["field"]: f for f in findings_of(tmp_path, mini_study, clean_rows) if f["check"] == "choice"}
    assert set(got) == {"sex", "pregnant", "race___1", "enrol_complete"}
    for f in got.values():
        assert "export raw data" in f["message"] and "labels" in f["message"]
    assert got["sex"]["message"].endswith("(codes: 1, 2)")


def test_a_wrong_code_that_is_no_label_keeps_the_plain_message(tmp_path, mini_study, clean_rows):
    clean_rows[0]["sex"] = "3"
    [f] = [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["check"] == "choice"]
    assert f["message"] == "not one of the codes 1, 2"


def test_record_ids_that_lost_their_leading_zeros(tmp_path, mini_study, clean_rows):
    for row in clean_rows[3:]:
        row["record_id"] = "2"  # 002 after Excel
    got = [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["field"] == "record_id"]
    assert [(f["row"], f["check"]) for f in got] == [(4, "record_id"), (5, "record_id")]
    assert "leading zeros" in got[0]["message"]


def test_ids_without_zero_padding_are_not_flagged(tmp_path, mini_study, clean_rows):
    for row in clean_rows:
        row["record_id"] = str(int(row["record_id"]) * 7)  # 7 and 14: different widths, none zero-padded
    assert [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["field"] == "record_id"] == []


@pytest.mark.parametrize(("weight", "finding"), [("175", False), ("-3", False), ("175.0", False), ("175.25", True),
                                                 ("175.", True)])
def test_a_whole_number_is_accepted_in_a_one_decimal_field(tmp_path, mini_study, clean_rows, weight, finding):
    clean_rows[0]["weight"] = weight
    got = [f for f in findings_of(tmp_path, mini_study, clean_rows) if f["field"] == "weight"]
    assert bool(got) is finding, got


def test_padded_decimals_writes_what_redcaps_import_takes():
    from trialkit.records.convert import padded_decimals

    frame = pl.DataFrame({"v": ["175", "-3", "175.5", None, "x"]})
    one = frame.select(padded_decimals(pl.col("v"), "number_1dp"))["v"].to_list()
    assert one == ["175.0", "-3.0", "175.5", None, "x"]
    assert frame.select(padded_decimals(pl.col("v"), "number_2dp_comma_decimal"))["v"].to_list()[0] == "175,00"
    assert frame.select(padded_decimals(pl.col("v"), "number"))["v"].to_list() == frame["v"].to_list()


# ---- files saved with other settings than their name says -----------------------------------------------------
def _refused(path, study) -> DataError:
    with pytest.raises(DataError) as info:
        read_intake(path, study)
    return info.value


def test_a_semicolon_csv_says_excel_saved_it_so(tmp_path, mini_study):
    path = tmp_path / "intake.csv"
    path.write_text('record_id;screen_date;email\n001;2025-01-10;"ann@example.org, work"\n', encoding="utf-8")
    err = _refused(path, mini_study)
    assert err.message.startswith("Excel saved it with semicolons")
    assert err.location.line == 1 and "ann" not in str(err)


def test_a_comma_file_named_txt_says_rename_it(tmp_path, mini_study):
    path = tmp_path / "intake.txt"
    path.write_text("record_id,screen_date\n001,2025-01-10\n", encoding="utf-8")
    err = _refused(path, mini_study)
    assert "separated by commas" in err.message and "rename it to .csv" in err.message


def test_a_tab_separated_txt_still_reads(tmp_path, mini_study):
    path = tmp_path / "intake.txt"
    path.write_text("record_id\tscreen_date\n001\t2025-01-10\n", encoding="utf-8")
    assert read_intake(path, mini_study).raw.height == 1


def test_a_labels_export_with_label_headers_says_export_raw_data(tmp_path, mini_study):
    path = tmp_path / "intake.csv"
    path.write_text("Record ID,Repeat Instrument,Repeat Instance,Screening date,Sex,Complete?\n"
                    "001,,,2025-01-10,Female,Complete\n", encoding="utf-8")
    err = _refused(path, mini_study)
    assert "'CSV (labels)' export" in err.message and "export raw data" in err.message
