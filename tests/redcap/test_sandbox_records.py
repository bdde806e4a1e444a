"""Record export and import on a classic project, through PyCap over HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
from redcap import RedcapError
from sandbox_data import post

FORMAT_MESSAGE = (
    "The value you provided could not be validated because it does not follow the expected format. Please try again."
)
ALL_COLUMNS = [
    "record_id", "name", "dob", "email", "age", "sex", "race___1", "race___2", "race____4", "race___k__9",
    "race___abc", "smoker", "demographics_complete", "weight", "height", "bmi", "visit_time", "site", "pain",
    "report", "notes", "labs_complete",
]


def test_export_columns_in_metadata_order_with_checkbox_names_and_complete(classic):
    classic.import_records([{"record_id": "1", "age": 40, "race____4": "1"}])
    rows = classic.export_records()
    assert list(rows[0]) == ALL_COLUMNS
    row = rows[0]
    assert row["age"] == "40"  # JSON numbers are stored as text
    assert row["race____4"] == "1" and row["race___1"] == "0" and row["race___abc"] == "0"
    assert row["demographics_complete"] == "0"
    assert row["labs_complete"] == "0"  # a form with no data still exports 0
    assert all(isinstance(v, str) for v in row.values())


def test_unchecked_and_grey_forms_export_zero_or_blank_on_request(sandbox, classic):
    classic.import_records([{"record_id": "1", "age": "3"}])
    rows = post(sandbox.url, token=classic.token, content="record", format="json",
                exportBlankForGrayFormStatus="true").json()
    assert rows[0]["labs_complete"] == ""
    assert rows[0]["demographics_complete"] == "0"
    assert rows[0]["race___1"] == "0"


def test_empty_project_exports_empty_list_and_header_only_csv(classic):
    assert classic.export_records() == []
    text = classic.export_records(format_type="csv")
    assert text == ",".join(ALL_COLUMNS) + "\n"


def test_records_sorted_naturally(classic):
    classic.import_records([{"record_id": r} for r in ("10", "2", "1", "b", "a")])
    assert [r["record_id"] for r in classic.export_records(fields=["record_id"])] == ["1", "2", "10", "a", "b"]


def test_csv_export_quotes_like_fputcsv(classic):
    classic.import_records([{"record_id": "1", "name": "Ann Lee", "notes": 'said "hi", then left', "age": "7"}])
    text = classic.export_records(format_type="csv", fields=["record_id", "name", "age", "notes"])
    assert text == 'record_id,name,age,notes\n1,"Ann Lee",7,"said ""hi"", then left"\n'


def test_labels_and_checkbox_labels_and_label_headers(classic):
    classic.import_records([{"record_id": "1", "sex": "3", "race___1": "1", "smoker": "0",
                             "demographics_complete": "2"}])
    row = classic.export_records(raw_or_label="label", forms=["demographics"])[0]
    assert row["sex"] == "Other, please say"
    assert row["race___1"] == "Checked" and row["race___2"] == "Unchecked"
    assert row["smoker"] == "No"
    assert row["demographics_complete"] == "Complete"
    row = classic.export_records(raw_or_label="label", export_checkbox_labels=True, fields=["race"])[0]
    assert row["race___1"] == "White" and row["race___2"] == ""
    text = classic.export_records(format_type="csv", fields=["record_id", "sex", "race"],
                                  raw_or_label_headers="label")
    assert text.splitlines()[0] == ("\"Record ID\",Sex,\"Race (choice=White)\",\"Race (choice=Black)\","
                                    "\"Race (choice=Unknown)\",\"Race (choice=Odd code)\",\"Race (choice=Letters)\"")


def test_fields_and_forms_selection(classic):
    classic.import_records([{"record_id": "1", "age": "5", "weight": "70"}, {"record_id": "2", "age": "6"}])
    # PyCap adds the record id; the order asked for does not matter
    rows = classic.export_records(fields=["weight", "age"])
    assert list(rows[0]) == ["record_id", "age", "weight"]
    # without the record id field REDCap does not add it (PyCap always does, so ask raw)
    raw = post(classic.url, token=classic.token, content="record", format="json", **{"forms[0]": "labs"}).json()
    assert list(raw[0]) == ["weight", "height", "bmi", "visit_time", "site", "pain", "report", "notes",
                            "labs_complete"]
    assert len(raw) == 1  # without the record id, only rows holding a value asked for
    rows = classic.export_records(forms=["labs"])
    assert [r["record_id"] for r in rows] == ["1", "2"]  # with it (PyCap adds it), every record's row
    assert rows[1]["weight"] == "" and rows[1]["labs_complete"] == "0"
    assert list(rows[0]) == ["record_id", "weight", "height", "bmi", "visit_time", "site", "pain", "report", "notes",
                             "labs_complete"]


@pytest.mark.parametrize("bad", ["nope", "redcap_event_name", "race___1"])
def test_unknown_field_in_fields_is_an_error(classic, bad):
    with pytest.raises(RedcapError) as err:
        classic.export_records(fields=[bad])
    assert err.value.args[0] == {"error": f"The following values in the parameter \"fields\" are not valid: '{bad}'"}


def test_records_filter_ignores_unknown_records(classic):
    classic.import_records([{"record_id": "1"}, {"record_id": "2"}])
    rows = classic.export_records(records=["2", "99"])
    assert [r["record_id"] for r in rows] == ["2"]


def test_eav_export_has_only_stored_values(classic):
    classic.import_records([{"record_id": "1", "age": "5", "race___2": "1", "race___abc": "1"}])
    rows = classic.export_records(record_type="eav")
    assert {"record": "1", "field_name": "age", "value": "5"} in rows
    assert {"record": "1", "field_name": "race", "value": "2"} in rows
    assert {"record": "1", "field_name": "race", "value": "ABC"} in rows
    assert not any(r["field_name"] == "labs_complete" for r in rows)
    assert all(r["value"] != "" for r in rows)


def test_import_count_ids_and_coercion(classic):
    assert classic.import_records([{"record_id": 1, "age": 30}, {"record_id": 2}, {"record_id": 1, "email": ""}]) \
        == {"count": 2}
    assert classic.import_records([{"record_id": "7"}, {"record_id": "3"}], return_content="ids") == ["7", "3"]
    assert classic.export_records(records=["1"])[0]["age"] == "30"
    text = post(classic.url, token=classic.token, content="record", format="json", returnFormat="xml",
                data='[{"record_id":"9"}]').text
    assert text == '<?xml version="1.0" encoding="UTF-8" ?><count>1</count>'
    assert post(classic.url, token=classic.token, content="record", format="json", returnFormat="csv",
                data='[{"record_id":"9"}]').text == "1"


def test_count_is_distinct_records_even_when_unchanged(classic):
    classic.import_records([{"record_id": "1", "age": "5"}])
    assert classic.import_records([{"record_id": "1", "age": "5"}]) == {"count": 1}


def test_import_of_non_list_json_counts_zero_as_redcap_does(classic):
    reply = post(classic.url, token=classic.token, content="record", format="json", returnFormat="json",
                 data='{"record_id": "1"}')
    assert reply.json() == {"count": 0}
    assert classic.export_records() == []


def test_force_auto_number_and_auto_ids(classic):
    classic.import_records([{"record_id": "5"}, {"record_id": "abc"}])
    reply = classic.import_records([{"record_id": "x", "age": "1"}, {"record_id": "y"}, {"record_id": "x",
                                    "email": "a@b.org"}], return_content="auto_ids", force_auto_number=True)
    assert reply == ["6,x", "7,y"]
    row = classic.export_records(records=["6"])[0]
    assert row["age"] == "1" and row["email"] == "a@b.org"
    assert classic.generate_next_record_name() == "8"


def test_generate_next_record_name_starts_at_one(classic):
    assert classic.generate_next_record_name() == "1"


def test_blank_handling_normal_versus_overwrite(classic):
    classic.import_records([{"record_id": "1", "age": "5", "email": "a@b.org", "race___1": "1"}])
    classic.import_records([{"record_id": "1", "age": "", "email": "c@d.org", "race___1": ""}])
    row = classic.export_records()[0]
    assert (row["age"], row["email"], row["race___1"]) == ("5", "c@d.org", "1")  # normal ignores blanks
    classic.import_records([{"record_id": "1", "age": "", "race___1": ""}], overwrite="overwrite")
    row = classic.export_records()[0]
    assert (row["age"], row["email"], row["race___1"]) == ("", "c@d.org", "0")  # overwrite clears given cells
    classic.import_records([{"record_id": "1", "race___1": "1"}])
    classic.import_records([{"record_id": "1", "race___1": "0"}])  # 0 unchecks in normal mode too
    assert classic.export_records()[0]["race___1"] == "0"


def test_one_bad_cell_rejects_the_whole_batch(classic):
    batch = [{"record_id": str(i), "age": str(i)} for i in range(1, 50)]
    batch[30]["dob"] = "2023-02-30"
    batch[40]["sex"] = "9"
    with pytest.raises(RedcapError) as err:
        classic.import_records(batch)
    assert err.value.args[0]["error"] == (
        f'"31","dob","2023-02-30","{FORMAT_MESSAGE}"\n'
        '"41","sex","9","The value is not a valid category for sex"'
    )
    assert classic.export_records() == []


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("age", "1.0", False), ("age", "-3", True), ("email", "x@", False), ("email", "x@y.org", True),
        ("weight", "70.5", True), ("weight", "seventy", False), ("height", "170", False), ("height", "170.0", True),
        ("visit_time", "2024-02-29 13:05", True), ("visit_time", "2024-02-29", False), ("site", "a", True),
        ("site", "A", False), ("smoker", "1", True), ("smoker", "yes", False), ("pain", "100", True),
        ("pain", "101", False), ("race___2", "2", False), ("demographics_complete", "3", False),
        ("notes", "anything at all", True),
    ],
)
def test_cell_validation(classic, field, value, ok):
    data = [{"record_id": "1", field: value}]
    if ok:
        assert classic.import_records(data) == {"count": 1}
    else:
        with pytest.raises(RedcapError):
            classic.import_records(data)


def test_calc_values_are_computed_not_imported_and_descriptive_fields_rejected(classic):
    classic.import_records([{"record_id": "1", "weight": "70", "bmi": "22.1"}])
    assert classic.export_records()[0]["bmi"] == ""  # the imported value is ignored; no height, no BMI
    classic.import_records([{"record_id": "1", "height": "175.0"}])
    assert classic.export_records()[0]["bmi"] == "22.8571428571"  # [weight]/(([height]/100)^(2))
    classic.import_records([{"record_id": "1", "height": ""}], overwrite="overwrite")
    assert classic.export_records()[0]["bmi"] == ""
    with pytest.raises(RedcapError) as err:
        classic.import_records([{"record_id": "1", "intro": "x"}])
    assert "not found in the project as real data fields: intro" in err.value.args[0]["error"]


def test_unknown_import_field_is_an_error(classic):
    with pytest.raises(RedcapError) as err:
        classic.import_records([{"record_id": "1", "bogus": "1", "other": ""}])
    assert err.value.args[0] == {
        "error": "The following fields were not found in the project as real data fields: bogus, other"}


def test_date_format_mdy_and_dmy_are_stored_as_iso(classic):
    classic.import_records([{"record_id": "1", "dob": "02/24/2023"}], date_format="MDY")
    classic.import_records([{"record_id": "2", "dob": "24/02/2023", "visit_time": "24/02/2023 13:05"}],
                           date_format="DMY")
    rows = classic.export_records(fields=["dob", "visit_time"])
    assert [r["dob"] for r in rows] == ["2023-02-24", "2023-02-24"]
    assert rows[1]["visit_time"] == "2023-02-24 13:05"
    with pytest.raises(RedcapError):
        classic.import_records([{"record_id": "3", "dob": "24/02/2023"}], date_format="MDY")


def test_csv_import(classic):
    data = "record_id,age,race___1\n1,5,1\n2,,0\n"
    assert classic.import_records(data, import_format="csv") == {"count": 2}
    rows = classic.export_records(fields=["age", "race"])
    assert [(r["age"], r["race___1"]) for r in rows] == [("5", "1"), ("", "0")]


def test_delete_whole_records_and_missing_record_error(classic):
    classic.import_records([{"record_id": r, "age": "1"} for r in ("1", "2", "3")])
    assert classic.delete_records(["1", "3"]) == 2
    assert [r["record_id"] for r in classic.export_records()] == ["2"]
    with pytest.raises(RedcapError) as err:
        classic.delete_records(["2", "8", "9"])
    assert err.value.args[0] == {"error": "One or more of the records provided cannot be deleted because they do "
                                          "not exist in the project. The following records do not exist: 8, 9"}
    assert [r["record_id"] for r in classic.export_records()] == ["2"]  # the whole delete failed
    reply = post(classic.url, token=classic.token, content="record", action="delete", returnFormat="json",
                 **{"records[0]": "nope"})
    assert reply.status_code == 400


def test_delete_one_instrument_keeps_the_record(classic):
    classic.import_records([{"record_id": "1", "age": "5", "weight": "70"}])
    assert classic.delete_records(["1"], instrument="labs") == 1
    row = classic.export_records()[0]
    assert row["age"] == "5" and row["weight"] == "" and row["labs_complete"] == "0"


def test_date_range_uses_each_records_last_change(classic, clock):
    clock.now = dt.datetime(2025, 1, 1, 9, 0, 0)
    classic.import_records([{"record_id": "1", "age": "1"}, {"record_id": "2", "age": "2"}])
    clock.now = dt.datetime(2025, 1, 5, 9, 0, 0)
    classic.import_records([{"record_id": "2", "age": "3"}, {"record_id": "3"}])
    clock.now = dt.datetime(2025, 1, 9, 9, 0, 0)
    classic.import_records([{"record_id": "1", "age": "1"}])  # no change: last change stays 1 January
    since = classic.export_records(date_begin=dt.datetime(2025, 1, 3))
    assert [r["record_id"] for r in since] == ["2", "3"]
    until = classic.export_records(date_end=dt.datetime(2025, 1, 3))
    assert [r["record_id"] for r in until] == ["1"]
    window = classic.export_records(date_begin=dt.datetime(2025, 1, 5, 9), date_end=dt.datetime(2025, 1, 5, 9))
    assert [r["record_id"] for r in window] == ["2", "3"]
    bad = post(classic.url, token=classic.token, content="record", format="json", dateRangeBegin="yesterday")
    assert bad.status_code == 400 and "dateRangeBegin" in bad.json()["error"]


def test_log_lists_record_changes(classic, clock):
    clock.now = dt.datetime(2025, 3, 1, 10, 30, 0)
    classic.import_records([{"record_id": "1", "age": "5"}])
    clock.now = dt.datetime(2025, 3, 2, 10, 30, 0)
    classic.import_records([{"record_id": "1", "age": "6"}])
    classic.delete_records(["1"])
    log = classic.export_logging()
    # the project's creation is logged too, as a design change (REDCap's "Manage/Design")
    assert [e["action"] for e in log] == ["Delete record 1", "Update record 1", "Create record 1", "Manage/Design "]
    assert log[1]["details"] == "age = '6'"
    assert log[2]["timestamp"] == "2025-03-01 10:30"
    assert [e["action"] for e in classic.export_logging(log_type="record_add")] == ["Create record 1"]
    assert len(classic.export_logging(log_type="record", begin_time=dt.datetime(2025, 3, 2))) == 2


def test_non_ascii_values_round_trip_and_are_escaped_in_json(classic):
    classic.import_records([{"record_id": "1", "name": "José Ñúñez", "notes": 'a "quoted", line\nnext'}])
    row = classic.export_records(fields=["name", "notes"])[0]
    assert row["name"] == "José Ñúñez" and row["notes"] == 'a "quoted", line\nnext'
    raw = post(classic.url, token=classic.token, content="record", format="json", **{"fields[0]": "name"}).text
    assert "Jos\\u00e9" in raw  # as PHP's json_encode writes it
    text = classic.export_records(format_type="csv", fields=["record_id", "name", "notes"])
    assert text == 'record_id,name,notes\n1,"José Ñúñez","a ""quoted"", line\nnext"\n'


def test_long_records_list_is_exported_in_record_order(classic):
    classic.import_records([{"record_id": str(i), "age": str(i % 90)} for i in range(1, 1201)])
    wanted = [str(i) for i in range(1200, 0, -2)] + ["nope"]  # 600 ids, backwards, and one unknown
    rows = classic.export_records(records=wanted, fields=["age"])
    assert [r["record_id"] for r in rows] == [str(i) for i in range(2, 1201, 2)]


def test_an_exported_csv_imports_back_and_blank_cells_follow_the_overwrite_behavior(classic):
    classic.import_records([{"record_id": "1", "age": "5", "email": "a@b.org", "race___1": "1"}])
    text = classic.export_records(format_type="csv")
    assert classic.import_records(text, import_format="csv") == {"count": 1}
    assert classic.export_records(format_type="csv") == text
    blanks = "record_id,age,email,race___1\n1,,c@d.org,\n"
    classic.import_records(blanks, import_format="csv")
    row = classic.export_records()[0]
    assert (row["age"], row["email"], row["race___1"]) == ("5", "c@d.org", "1")
    classic.import_records(blanks, import_format="csv", overwrite="overwrite")
    row = classic.export_records()[0]
    assert (row["age"], row["email"], row["race___1"]) == ("", "c@d.org", "0")
    # a column named in the header is checked even when every cell under it is blank
    with pytest.raises(RedcapError) as err:
        classic.import_records("record_id,nosuch\n1,\n", import_format="csv")
    assert "nosuch" in err.value.args[0]["error"]


@pytest.mark.parametrize("fmt, body", [("json", "1"), ("csv", "1"), ("xml", "1")])
def test_delete_answers_the_count_as_plain_text_in_every_format(sandbox, classic, fmt, body):
    classic.import_records([{"record_id": "1", "age": "5"}])
    reply = post(sandbox.url, token=classic.token, content="record", action="delete", returnFormat=fmt,
                 **{"records[0]": "1"})
    assert (reply.status_code, reply.text) == (200, body)


def test_instance_1_on_a_row_that_does_not_repeat_is_accepted_and_ignored(classic):
    # PyCap's own import example sends it (redcap/methods/records.py doctest); any other instance is refused
    assert classic.import_records([{"record_id": "3", "redcap_repeat_instance": 1, "age": "7"}]) == {"count": 1}
    assert classic.export_records(records=["3"], fields=["age"]) == [{"record_id": "3", "age": "7"}]
    with pytest.raises(RedcapError) as err:
        classic.import_records([{"record_id": "3", "redcap_repeat_instance": 2, "age": "7"}])
    assert "redcap_repeat_instance must be blank" in err.value.args[0]["error"]


def test_survey_columns_are_ignored_on_import_and_refused_in_fields(classic):
    reply = classic.import_records([{"record_id": "1", "redcap_survey_identifier": "x",
                                     "demographics_timestamp": "2024-01-01 10:00", "age": "3"}])
    assert reply == {"count": 1}
    assert classic.export_records(fields=["age"]) == [{"record_id": "1", "age": "3"}]
    with pytest.raises(RedcapError) as err:
        classic.export_records(fields=["demographics_timestamp"])
    assert "demographics_timestamp" in err.value.args[0]["error"]


def test_log_filters_by_user_and_record(classic):
    classic.import_records([{"record_id": "1", "age": "5"}, {"record_id": "2", "age": "6"}])
    assert {e["username"] for e in classic.export_logging()} == {"sandbox_user"}
    assert classic.export_logging(user="somebody_else") == []
    assert [e["action"] for e in classic.export_logging(record="2")] == ["Create record 2"]
