"""REDCap behaviours of issue 11 §2: whole-mapping imports, the design log, the single-arm default event and file
download types, through PyCap 2.7.0 over HTTP (raw HTTP where PyCap hides the reply)."""

from __future__ import annotations

import io

import pytest
from redcap import RedcapError
from sandbox_data import post


def test_a_mapping_import_replaces_the_whole_mapping_of_every_arm(longitudinal):
    longitudinal.import_arms([{"arm_num": 2, "name": "Open label"}])
    longitudinal.import_events([{"event_name": "Week 12", "arm_num": 2}])
    # REDCap replaces the project's whole designation: arm 1's pairs go, though the import names arm 2 only
    assert longitudinal.import_instrument_event_mappings(
        [{"arm_num": 2, "unique_event_name": "week_12_arm_2", "form": "phq"}]) == 1
    assert longitudinal.export_instrument_event_mappings() == [
        {"arm_num": 2, "unique_event_name": "week_12_arm_2", "form": "phq"}]
    with pytest.raises(RedcapError, match=r"not designated for the event .{1,3}screening_arm_1"):
        longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "120"}])


def test_design_changes_are_logged_as_manage_design(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "120"}])
    longitudinal.import_arms([{"arm_num": 2, "name": "Open label"}])
    longitudinal.import_events([{"event_name": "Week 12", "arm_num": 2}])
    longitudinal.import_instrument_event_mappings([{"arm_num": 2, "unique_event_name": "week_12_arm_2",
                                                    "form": "phq"}])
    longitudinal.import_metadata(longitudinal.export_metadata())
    longitudinal.delete_events(["week_12_arm_2"])
    manage = longitudinal.export_logging(log_type="manage")
    # as REDCap's own log (PyCap's doctest: action 'Manage/Design ', details 'Create project ...'), newest first
    assert {e["action"] for e in manage} == {"Manage/Design "}
    details = [e["details"] for e in reversed(manage)]
    assert details[0].startswith("Create project")
    assert details[1] == "Create/rename arm 2"
    assert details[2] == "Create/rename event week_12_arm_2"
    assert details[3].startswith("Perform instrument-event mappings")
    assert details[4].startswith("Upload data dictionary")
    assert details[5] == "Delete event week_12_arm_2"
    # record changes are not design changes, and the other way round
    records = longitudinal.export_logging(log_type="record")
    assert [e["action"] for e in records] == ["Create record 1 (screening_arm_1)"]
    # and, as in REDCap, each export of the log is itself a Manage/Design event ("Export Logging (API)")
    everything = longitudinal.export_logging()
    assert len(everything) == len(manage) + 1 + 2
    assert [e["details"] for e in everything[:2]] == ["Export Logging (API)"] * 2


def test_a_single_arm_project_files_rows_without_an_event_under_the_first_event(longitudinal):
    assert longitudinal.import_records([{"record_id": "7", "sbp": "120", "phq_1": "2"}]) == {"count": 1}
    rows = longitudinal.export_records(records=["7"])
    assert [(r["redcap_event_name"], r["sbp"], r["phq_1"]) for r in rows] == [("screening_arm_1", "120", "2")]
    # a field the first event does not hold is refused there, as REDCap does (PyCap#142)
    with pytest.raises(RedcapError, match=r"not designated for the event .{1,3}screening_arm_1"):
        longitudinal.import_records([{"record_id": "8", "fu_status": "1"}])
    # CSV with a blank event cell: the same
    longitudinal.import_records("record_id,redcap_event_name,dbp\n7,,80\n", import_format="csv")
    assert longitudinal.export_records(records=["7"])[0]["dbp"] == "80"


def test_rows_without_an_event_after_rows_naming_theirs_are_filed_under_the_first_event(longitudinal):
    """The batch's rows are first looked over for any without an event (api._default_event): one after many that
    name theirs, or with a blank event kept by overwriteBehavior=overwrite, is still filed."""
    named = [{"record_id": str(i), "redcap_event_name": "baseline_arm_1", "sbp": str(100 + i)} for i in range(1, 30)]
    assert longitudinal.import_records([*named, {"record_id": "30", "sbp": "130"}]) == {"count": 30}
    assert longitudinal.import_records([{"record_id": "31", "redcap_event_name": "", "dbp": "70"}],
                                       overwrite="overwrite") == {"count": 1}
    rows = {r["record_id"]: r for r in longitudinal.export_records(records=["29", "30", "31"])}
    assert [(rows[r]["redcap_event_name"], rows[r]["sbp"] or rows[r]["dbp"]) for r in ("29", "30", "31")] == [
        ("baseline_arm_1", "129"), ("screening_arm_1", "130"), ("screening_arm_1", "70")]


def test_a_project_with_two_arms_still_needs_the_event(longitudinal):
    longitudinal.import_arms([{"arm_num": 2, "name": "Open label"}])
    with pytest.raises(RedcapError, match="The unique event name is missing"):
        longitudinal.import_records([{"record_id": "1", "sbp": "120"}])


@pytest.fixture
def with_file(sandbox):
    from sandbox_data import _row

    from trialkit.redcap.sandbox import ProjectSpec

    spec = ProjectSpec.classic([_row("record_id", "f", label="Record ID"), _row("doc", "f", "file")])
    token = sandbox.create_project(spec)
    project = sandbox.project(token)
    project.import_records([{"record_id": "1"}])
    yield project
    sandbox.drop_project(token)


@pytest.mark.parametrize(("name", "expected"), [
    ("notes.txt", "text/plain; charset=UTF-8"),
    ("table.csv", "text/csv; charset=UTF-8"),
    ("scan.pdf", "application/pdf"),
    ("photo.png", "image/png"),
    ("blob.unknownext", "application/octet-stream"),
])
def test_file_download_sends_the_files_type_with_a_charset_for_text(with_file, name, expected):
    with_file.import_file(record="1", field="doc", file_name=name, file_object=io.BytesIO(b"abc\n"))
    content, info = with_file.export_file(record="1", field="doc")
    assert content == b"abc\n" and info["name"] == name
    reply = post(with_file.url, token=with_file.token, content="file", action="export", record="1", field="doc")
    assert reply.headers["Content-Type"] == f'{expected}; name="{name}"'
    if expected.startswith("text/"):
        assert info["charset"] == "UTF-8"  # what PyCap's own doctest shows for a text file
    else:
        assert "charset" not in info

