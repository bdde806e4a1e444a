"""Metadata, field names, instruments, classic-project refusals, users, files."""

from __future__ import annotations

import io

import pytest
from redcap import Project, RedcapError
from sandbox_data import CLASSIC_METADATA, post

from trialkit.redcap.sandbox.project import METADATA_KEYS, ProjectSpec


def test_metadata_export_has_the_18_keys_in_field_order(classic):
    meta = classic.export_metadata()
    assert [list(r) for r in meta] == [list(METADATA_KEYS)] * len(CLASSIC_METADATA)
    assert [r["field_name"] for r in meta] == [r["field_name"] for r in CLASSIC_METADATA]
    assert all(isinstance(v, str) for r in meta for v in r.values())
    assert not any(r["field_name"].endswith("_complete") for r in meta)
    assert [r["field_name"] for r in classic.export_metadata(fields=["age"], forms=["labs"])][:2] == ["age", "weight"]
    text = classic.export_metadata(format_type="csv")
    assert text.startswith(",".join(METADATA_KEYS) + "\n")
    with pytest.raises(RedcapError):
        classic.export_metadata(fields=["nope"])


def test_metadata_import_replaces_the_dictionary(classic):
    meta = classic.export_metadata()
    kept = [r for r in meta if r["form_name"] == "demographics"]
    kept.append(dict(kept[4], field_name="new_field", field_label="New"))
    assert classic.import_metadata(kept) == len(kept)
    fresh = Project(classic.url, classic.token)
    assert [r["field_name"] for r in fresh.export_metadata()][-1] == "new_field"
    assert fresh.forms == ["demographics"]
    fresh.import_records([{"record_id": "1", "new_field": "12"}])
    assert fresh.export_records()[0]["new_field"] == "12"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"field_name": "Bad Name"}, "Row 4: field name 'Bad Name' must be lowercase letters"),
        ({"field_type": "widget"}, "Row 4: field 'email': unknown field type 'widget'"),
        ({"field_type": "text", "text_validation_type_or_show_slider_number": "zodiac"},
         "the validation type 'zodiac'"),
    ],
)
def test_metadata_import_refuses_bad_rows(classic, change, message):
    meta = classic.export_metadata()
    meta[3] = dict(meta[3], **change)
    with pytest.raises(RedcapError) as err:
        classic.import_metadata(meta)
    assert message in err.value.args[0]["error"]
    assert len(classic.export_metadata()) == len(CLASSIC_METADATA)


def test_metadata_import_from_csv(classic):
    text = classic.export_metadata(format_type="csv")
    assert classic.import_metadata(text, import_format="csv") == len(CLASSIC_METADATA)


def test_export_field_names(classic):
    names = classic.export_field_names()
    exported = [r["export_field_name"] for r in names]
    assert "report" not in exported and "intro" not in exported  # file and descriptive fields
    assert "bmi" in exported and "demographics_complete" in exported
    race = [r for r in names if r["original_field_name"] == "race"]
    assert race[2] == {"original_field_name": "race", "choice_value": "-4", "export_field_name": "race____4"}
    assert classic.export_field_names(field="age") == [
        {"original_field_name": "age", "choice_value": "", "export_field_name": "age"}]
    with pytest.raises(RedcapError):
        classic.export_field_names(field="nope")


def test_instruments(classic):
    assert classic.export_instruments() == [
        {"instrument_name": "demographics", "instrument_label": "Demographics"},
        {"instrument_name": "labs", "instrument_label": "Labs"},
    ]


def test_classic_project_refuses_longitudinal_calls(classic):
    assert classic.is_longitudinal is False
    for call, message in (
        (classic.export_instrument_event_mappings, "You cannot export form/event mappings for classic projects"),
        (classic.export_arms, "You cannot export arms for classic projects"),
        (classic.export_events, "You cannot export events for classic projects"),
        (classic.export_repeating_instruments_events,
         "You cannot export repeating instruments and events because the project does not contain any repeating "
         "instruments and events"),
    ):
        with pytest.raises(RedcapError) as err:
            call()
        assert err.value.args[0] == {"error": message}
    reply = post(classic.url, token=classic.token, content="formEventMapping", format="json")
    assert reply.status_code == 400
    with pytest.raises(RedcapError):
        classic.import_records([{"record_id": "1", "redcap_event_name": "event_1_arm_1"}])


def test_classic_repeating_instrument(sandbox):
    spec = ProjectSpec.classic(CLASSIC_METADATA, repeating=({"form_name": "labs", "custom_form_label": ""},))
    proj = sandbox.project(sandbox.create_project(spec))
    assert proj.export_repeating_instruments_events() == [{"form_name": "labs", "custom_form_label": ""}]
    proj.import_records([
        {"record_id": "1", "age": "5"},
        {"record_id": "1", "redcap_repeat_instrument": "labs", "redcap_repeat_instance": "1", "weight": "70"},
        {"record_id": "1", "redcap_repeat_instrument": "labs", "redcap_repeat_instance": "2", "weight": "71"},
    ])
    rows = proj.export_records(fields=["record_id", "age", "weight"])
    assert rows == [
        {"record_id": "1", "redcap_repeat_instrument": "", "redcap_repeat_instance": "", "age": "5", "weight": ""},
        {"record_id": "1", "redcap_repeat_instrument": "labs", "redcap_repeat_instance": 1, "age": "", "weight": "70"},
        {"record_id": "1", "redcap_repeat_instrument": "labs", "redcap_repeat_instance": 2, "age": "", "weight": "71"},
    ]
    assert proj.export_records(raw_or_label="label", fields=["weight"])[1]["redcap_repeat_instrument"] == "Labs"
    sandbox.drop_project(proj.token)


def test_user_is_the_tokens_user(classic):
    users = classic.export_users()
    assert len(users) == 1
    assert users[0]["username"] == "sandbox_user"
    assert users[0]["api_import"] == 1 and users[0]["forms"] == {"demographics": 1, "labs": 1}


def test_file_import_export_delete(classic):
    classic.import_records([{"record_id": "1", "age": "5"}])
    classic.import_file("1", "report", "scan.txt", io.BytesIO(b"hello file"))
    content, headers = classic.export_file("1", "report")
    assert content == b"hello file"
    assert headers["name"] == "scan.txt"
    assert classic.export_records()[0]["report"] == "scan.txt"
    classic.delete_file("1", "report")
    assert classic.export_records()[0]["report"] == ""
    with pytest.raises(RedcapError) as err:
        classic.export_file("1", "report")
    assert b"<error>There is no file to download for this record</error>" in err.value.args[0]
    reply = post(classic.url, token=classic.token, content="file", action="export", record="1", field="age")
    assert reply.status_code == 400
    assert "<error>The field 'age' does not exist or is not a 'file' field</error>" in reply.text


def test_file_import_to_missing_record_fails_visibly_on_read_back(classic):
    # PyCap never checks the reply of import_file; the server refuses and nothing is stored
    classic.import_file("42", "report", "x.txt", io.BytesIO(b"x"))
    assert classic.export_records(records=["42"]) == []
