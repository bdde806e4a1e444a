"""The column-wise record import (records._validate_columns) against the row-by-row check it speeds up.

An import whose cells are all valid is checked column by column, per shape of row; anything refused sends the
import through the row-by-row check, which words REDCap's messages. These tests pin the fast path to the old
one: the same stored data, export and log for a mix of row shapes, and the old messages, in row order, when a
refusal comes after many valid rows. Through PyCap over HTTP.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redcap import RedcapError
from sandbox_data import MIXED_ROWS, longitudinal_spec, post

from trialkit.redcap.sandbox import records
from trialkit.redcap.sandbox.project import dag_rows

ROWS = MIXED_ROWS  # sandbox_data: plain rows of several shapes, repeating instances, unchecked boxes
# then an overwrite import: blanks clear values, a changed value, a new instance of a repeating form
OVERWRITE = [
    {"record_id": "1", "redcap_event_name": "screening_arm_1", "consent_date": "", "arm_choice": "2", "sbp": "",
     "phq_flags___1": "", "phq_flags___2": "1"},
    {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "new", "ses_date": "", "ses_dose": "1"},
]


def _log_entries(project) -> list[tuple[str, frozenset[str]]]:
    # a row's `<form>_complete` values follow its data in an order that carries no meaning
    return sorted((e["action"], frozenset(e["details"].split(", ")))
                  for e in project.export_logging() if e["action"] != "Manage/Design ")


def _import_both(project) -> None:
    assert project.import_records(ROWS, date_format="MDY") == {"count": 3}
    assert project.import_records(OVERWRITE, overwrite="overwrite", date_format="MDY") == {"count": 1}


def test_column_wise_import_stores_what_the_row_by_row_check_stores(sandbox, longitudinal, monkeypatch):
    _import_both(longitudinal)
    fast_rows, fast_log = longitudinal.export_records(), _log_entries(longitudinal)
    slow = sandbox.project(sandbox.create_project(longitudinal_spec()))
    try:
        monkeypatch.setattr(records, "_validate_columns", lambda *args, **kwargs: None)
        _import_both(slow)
        assert slow.export_records() == fast_rows
        assert _log_entries(slow) == fast_log
    finally:
        sandbox.drop_project(slow.token)
    # what both stored, spelled out: MDY dates as YMD, stripped text, unchecked boxes and blanks not stored
    screening = next(r for r in fast_rows if r["record_id"] == "1" and r["redcap_event_name"] == "screening_arm_1")
    assert (screening["consent_date"], screening["arm_choice"], screening["sbp"]) == ("", "2", "")
    assert (screening["phq_flags___1"], screening["phq_flags___2"], screening["phq_complete"]) == ("0", "1", "2")
    sessions = [r for r in fast_rows if r["redcap_repeat_instrument"] == "session"]
    assert [(r["redcap_repeat_instance"], r["ses_date"], r["ses_dose"]) for r in sessions] == [
        (1, "2023-03-01", "0.5"), (2, "2023-03-08", "0.75"), (3, "", "1")]
    ticked = next(r for r in fast_rows if r["record_id"] == "2" and r["redcap_event_name"] == "screening_arm_1")
    assert (ticked["enrolment_complete"], ticked["phq_complete"], ticked["vitals_complete"]) == ("0", "0", "0")
    assert next(r for r in fast_rows if r["ae_term"])["ae_term"] == "nausea"


def test_refusals_after_many_valid_rows_give_the_row_by_row_messages(longitudinal):
    valid = [{"record_id": str(i), "redcap_event_name": "screening_arm_1", "sbp": str(100 + i), "phq_1": "1"}
             for i in range(1, 41)]
    bad = [
        {"record_id": "41", "redcap_event_name": "screening_arm_1", "sbp": "high", "phq_1": "1"},
        {"record_id": "42", "redcap_event_name": "week_9_arm_1", "sbp": "120"},
        {"record_id": "43", "redcap_event_name": "screening_arm_1", "sbp": "120", "phq_1": "7",
         "phq_flags___1": "2"},
        {"record_id": "44", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": "0", "ses_dose": "1"},
    ]
    with pytest.raises(RedcapError) as err:
        longitudinal.import_records(valid + bad)
    assert err.value.args[0]["error"].splitlines() == [
        '"41","sbp","high","The value you provided could not be validated because it does not follow the expected '
        'format. Please try again."',
        '"42","redcap_event_name","week_9_arm_1","The value is not a valid unique event name"',
        '"43","phq_1","7","The value is not a valid category for phq_1"',
        '"43","phq_flags___1","2","The value is not a valid category for phq_flags"',
        '"44","redcap_repeat_instance","0","The repeat instance must be a whole number of 1 or more (or \'new\')"',
    ]
    assert longitudinal.export_records() == []  # all or nothing


NUMBERS = ('[{"record_id":1,"redcap_event_name":"treatment_arm_1","ae_term":12},'
           '{"record_id":2,"redcap_event_name":"treatment_arm_1","ae_term":2.50},'
           '{"record_id":3,"redcap_event_name":"treatment_arm_1","ae_term":-0},'
           '{"record_id":4,"redcap_event_name":"treatment_arm_1","ae_term":1e2}')


@pytest.mark.parametrize(("text", "more"), [
    (NUMBERS + "]", []),  # plain cells: the decoded rows are used as they are
    (NUMBERS + ',{"record_id":5,"redcap_event_name":"treatment_arm_1","ae_term":true}]', ["1"]),
    (NUMBERS + ',{"record_id":5,"redcap_event_name":"treatment_arm_1","ae_term":" x"}]', ["x"]),
    (NUMBERS + ',{"record_id":5,"redcap_event_name":"treatment_arm_1","ae_term":"x\\t"}]', ["x"]),
])
def test_json_numbers_are_stored_as_the_cell_by_cell_pass_stores_them(sandbox, longitudinal, text, more):
    reply = post(sandbox.url, token=longitudinal.token, content="record", format="json", data=text)
    assert reply.json() == {"count": 4 + len(more)}
    rows = longitudinal.export_records(fields=["record_id", "ae_term"], events=["treatment_arm_1"])
    assert [r["ae_term"] for r in rows] == ["12", "2.5", "0", "100.0", *more]


def test_a_refusal_in_a_later_shape_gives_the_messages_of_untouched_rows(longitudinal):
    # the column-wise check changes imported rows in place only once every shape is checked: the row-by-row
    # check that words the messages reads the rows as imported (record ids included)
    valid = [{"record_id": str(i), "redcap_event_name": "screening_arm_1", "sbp": "120", "phq_complete": "2"}
             for i in range(1, 6)]
    later = [{"record_id": "6", "redcap_event_name": "baseline_arm_1", "dbp": "low"}]
    with pytest.raises(RedcapError) as err:
        longitudinal.import_records(valid + later)
    assert err.value.args[0]["error"].splitlines() == [
        '"6","dbp","low","The value you provided could not be validated because it does not follow the expected '
        'format. Please try again."']
    assert longitudinal.export_records() == []


# new records only, rows of clean shapes (no blank, every box ticked: records.apply_import's loop for rows of new
# records), a row named twice in one import (the second changes it), a repeating instance, a group per record
NEW_ROWS = [
    {"record_id": "7", "redcap_event_name": "screening_arm_1", "consent_date": "2023-02-24", "arm_choice": "1",
     "phq_1": "0", "phq_flags___1": "1", "phq_flags___2": "1", "sbp": "120", "redcap_data_access_group": "site_a"},
    {"record_id": "7", "redcap_event_name": "baseline_arm_1", "phq_1": "2", "sbp": "118"},
    {"record_id": "8", "redcap_event_name": "baseline_arm_1", "phq_1": "1", "sbp": "121",
     "redcap_data_access_group": "site_b"},
    {"record_id": "7", "redcap_event_name": "baseline_arm_1", "phq_1": "3", "sbp": "118"},
    {"record_id": "8", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "2", "ses_dose": "1"},
    {"record_id": "9", "redcap_event_name": "baseline_arm_1", "phq_1": "1", "sbp": "99", "phq_complete": "2"},
]


def _log_in_order(project) -> list[tuple[str, str, frozenset[str]]]:
    return [(e["action"], e["record"], frozenset(e["details"].split(", ")))
            for e in reversed(project.export_logging()) if e["action"] != "Manage/Design "]


def test_new_records_are_stored_and_logged_as_the_general_path_does(sandbox, monkeypatch):
    def imported(*, general: bool):
        project = sandbox.project(sandbox.create_project(longitudinal_spec(dags=dag_rows(["Site A", "Site B"]))))
        with monkeypatch.context() as m:
            if general:  # the row-by-row check leaves every row to apply_import's general steps
                m.setattr(records, "_validate_columns", lambda *args, **kwargs: None)
            assert project.import_records(NEW_ROWS) == {"count": 3}
        try:
            return (project.export_records(export_data_access_groups=True), _log_in_order(project),
                    project.export_records(fields=["record_id"], export_data_access_groups=True))
        finally:
            sandbox.drop_project(project.token)

    fast = imported(general=False)
    assert fast == imported(general=True)
    rows, log, _ = fast
    baseline = next(r for r in rows if r["record_id"] == "7" and r["redcap_event_name"] == "baseline_arm_1")
    assert (baseline["phq_1"], baseline["sbp"], baseline["phq_complete"], baseline["vitals_complete"]) == (
        "3", "118", "0", "0")
    assert [action for action, _, _ in log] == [
        "Create record 7 (screening_arm_1)", "Update record 7 (baseline_arm_1)", "Create record 8 (baseline_arm_1)",
        "Update record 7 (baseline_arm_1)", "Update record 8 (treatment_arm_1)", "Create record 9 (baseline_arm_1)"]
    assert log[3][2] == frozenset({"phq_1 = '3'"})  # the second naming of a row logs what it changed
    assert {r["record_id"]: r["redcap_data_access_group"] for r in rows} == {"7": "site_a", "8": "site_b", "9": ""}


@pytest.mark.parametrize("text", [
    "", " ", '"', '" ', ' "', 'a "b"', '"a" b', '"a"  "b"', "a  b", 'x"y z"', '"a":"b c","d":"e"', '"a":"b ","c":1',
    '"a":" b"', " " * 100 + '"', '"' + " " * 100, "a b " * 50 + '"', "ab" * 200 + ' "',
])
def test_space_beside_quote_is_the_substring_test(text):
    assert records._space_beside_quote(text) == ('" ' in text or ' "' in text)


def _plain_by_substrings(text: str) -> bool:
    """_plain_cells as it was written with str's substring searches (main before the fifth pass)."""
    return (text.isascii() and "\\" not in text and '" ' not in text and ' "' not in text and '""' not in text
            and records._NOT_TEXT.search(text) is None)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=' "ab:,{}[]1t\\\u00e9', max_size=40))
def test_plain_cells_is_the_substring_test(text):
    # the searches through re (a space beside a quote, an empty string) decide as the substring searches did
    assert records._plain_cells(text) == _plain_by_substrings(text)
    assert records._space_beside_quote(text) == ('" ' in text or ' "' in text)


def test_plain_cells_of_pycap_json():
    rows = [{"record_id": "1", "a": "x y", "b": "2"}, {"record_id": "2", "a": "z", "b": 3}]
    assert records._plain_cells(json.dumps(rows, separators=(",", ":")))
    for bad in ({"a": ""}, {"a": " x"}, {"a": "x "}, {"a": None}, {"a": True}, {"a": "\u00a0x"}, {"a": "x\n"}):
        text = json.dumps([*rows, {"record_id": "3", **bad}], separators=(",", ":"))
        assert not records._plain_cells(text), bad


def test_insert_many_writes_every_row_in_order_across_statements(monkeypatch):
    import sqlite3

    from trialkit.redcap.sandbox import storage

    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
    rows = [(f"v{i}", i) for i in range(11)]
    monkeypatch.setattr(storage, "_ROWS_PER_INSERT", 4)  # statements of 4, 4 and 3 rows
    storage.insert_many(con, "INSERT INTO t(a, b)", rows)
    con.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 5)  # SQLite's own limit: 2 rows of 2 values a statement
    storage.insert_many(con, "INSERT INTO t(a, b)", rows)
    storage.insert_many(con, "INSERT INTO t(a, b)", [])
    assert con.execute("SELECT a, b FROM t ORDER BY id").fetchall() == rows + rows


def test_records_and_log_written_several_rows_to_a_statement_read_back_the_same(sandbox, longitudinal,
                                                                                monkeypatch):
    from trialkit.redcap.sandbox import storage

    _import_both(longitudinal)
    expected = longitudinal.export_records(), _log_in_order(longitudinal)
    other = sandbox.project(sandbox.create_project(longitudinal_spec()))
    try:
        monkeypatch.setattr(storage, "_ROWS_PER_INSERT", 2)
        _import_both(other)
        assert (other.export_records(), _log_in_order(other)) == expected
    finally:
        sandbox.drop_project(other.token)
