"""Transport rules: tokens, error bodies by format, status codes, booleans, lists, version, admin access."""

from __future__ import annotations

import json

import pytest
import requests
from redcap import Project, RedcapError
from sandbox_data import ADMIN_SECRET, post

XML_ERROR = '<?xml version="1.0" encoding="UTF-8" ?><hash><error>{}</error></hash>'
NO_RIGHTS = "You do not have permissions to use the API"


def test_bad_token_is_403_and_pycap_raises(sandbox, classic):
    bad = Project(sandbox.url, "0" * 32)
    with pytest.raises(RedcapError) as err:
        bad.export_records()
    assert err.value.args[0] == {"error": NO_RIGHTS}
    reply = post(sandbox.url, token="0" * 32, content="record", format="json")
    assert reply.status_code == 403
    assert reply.json() == {"error": NO_RIGHTS}


def test_missing_token_is_403(sandbox):
    reply = post(sandbox.url, content="record", format="json")
    assert reply.status_code == 403


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"format": "json"}, json.dumps({"error": 'The value of the parameter "content" is not valid'})),
        ({"format": "csv"}, 'ERROR: The value of the parameter "content" is not valid'),
        ({"format": "json", "returnFormat": "csv"}, 'ERROR: The value of the parameter "content" is not valid'),
        ({}, XML_ERROR.format('The value of the parameter "content" is not valid')),
        ({"format": "xml"}, XML_ERROR.format('The value of the parameter "content" is not valid')),
    ],
)
def test_error_body_follows_return_format_then_format_then_xml(sandbox, classic, params, expected):
    reply = post(sandbox.url, token=classic.token, content="nonsense", **params)
    assert reply.status_code == 400
    assert reply.text == expected


def test_booleans_accept_python_and_json_spellings(sandbox, classic):
    classic.import_records([{"record_id": "1", "race___1": "1"}])
    for value in ("True", "true", "1"):
        rows = post(sandbox.url, token=classic.token, content="record", format="json", rawOrLabel="label",
                    exportCheckboxLabel=value, **{"fields[0]": "race"}).json()
        assert rows[0]["race___1"] == "White"
    for value in ("False", "false", "0"):
        rows = post(sandbox.url, token=classic.token, content="record", format="json", rawOrLabel="label",
                    exportCheckboxLabel=value, **{"fields[0]": "race"}).json()
        assert rows[0]["race___1"] == "Checked"


def test_lists_as_indexed_keys_and_comma_text(sandbox, classic):
    classic.import_records([{"record_id": str(i), "age": str(i)} for i in range(1, 5)])
    indexed = post(sandbox.url, token=classic.token, content="record", format="json",
                   **{"records[0]": "3", "records[1]": "1", "fields[0]": "record_id", "fields[1]": "age"}).json()
    assert [r["record_id"] for r in indexed] == ["1", "3"]
    comma = post(sandbox.url, token=classic.token, content="record", format="json", records="2,4",
                 fields="record_id,age").json()
    assert [r["record_id"] for r in comma] == ["2", "4"]


def test_version_is_plain_text_and_parses(sandbox, classic):
    version = classic.export_version()
    assert str(version) == "14.5.8"
    reply = post(sandbox.url, token=classic.token, content="version")
    assert reply.text == "14.5.8"


def test_get_is_refused_and_other_paths_are_404(sandbox):
    assert requests.get(sandbox.url, timeout=10).status_code == 405
    assert requests.post(sandbox.url.replace("/api/", "/other/"), data={}, timeout=10).status_code == 404


def test_admin_endpoint_needs_its_secret(sandbox, classic):
    admin = sandbox.url.replace("/api/", "/admin/reset")
    assert requests.post(admin, json={"token": classic.token}, timeout=10).status_code == 404
    wrong = requests.post(admin, json={"token": classic.token}, headers={"X-Trialkit-Admin": "nope"}, timeout=10)
    assert wrong.status_code == 404
    classic.import_records([{"record_id": "1", "age": "5"}])
    ok = requests.post(admin, json={"token": classic.token}, headers={"X-Trialkit-Admin": ADMIN_SECRET}, timeout=10)
    assert ok.status_code == 200
    assert classic.export_records() == []


def test_admin_endpoint_is_absent_without_a_secret():
    from sandbox_data import classic_spec

    from trialkit.redcap.sandbox import running_sandbox

    with running_sandbox(classic_spec()) as sb:
        reply = requests.post(sb.url.replace("/api/", "/admin/status"), json={},
                              headers={"X-Trialkit-Admin": ""}, timeout=10)
        assert reply.status_code == 404


def test_admin_can_create_a_project(sandbox):
    from sandbox_data import classic_spec

    spec = json.loads(classic_spec(title="Made remotely").to_json())
    reply = requests.post(sandbox.url.replace("/api/", "/admin/create_project"), json={"spec": spec},
                          headers={"X-Trialkit-Admin": ADMIN_SECRET}, timeout=10)
    token = reply.json()["token"]
    assert len(token) == 32
    assert Project(sandbox.url, token).export_project_info()["project_title"] == "Made remotely"
    sandbox.drop_project(token)


def test_unsupported_content_says_so(sandbox, classic):
    reply = post(sandbox.url, token=classic.token, content="report", format="json", report_id="1")
    assert reply.status_code == 501
    assert "does not support content=report" in reply.json()["error"]


def test_admin_refuses_a_bad_project_definition(sandbox):
    bad = {"metadata": [{"field_name": "Record ID", "form_name": "f", "field_type": "text"}]}
    reply = requests.post(sandbox.url.replace("/api/", "/admin/create_project"), json={"spec": bad},
                          headers={"X-Trialkit-Admin": ADMIN_SECRET}, timeout=10)
    assert reply.status_code == 400
    assert "Record ID" in reply.json()["error"]


def test_internal_error_is_a_500_error_reply_and_its_log_line_quotes_no_request_value(sandbox, classic, capsys,
                                                                                       monkeypatch):
    from trialkit.redcap.sandbox import server

    def broken(storage, request):
        raise ValueError(f"invalid literal for int(): {request.params['token']} {request.params['data']}")

    monkeypatch.setattr(server.api, "handle", broken)
    reply = post(sandbox.url, token=classic.token, content="record", format="json", data="Jane Doe")
    assert reply.status_code == 500
    assert reply.json() == {"error": "Internal error in the trialkit sandbox: ValueError"}
    err = capsys.readouterr().err
    assert "internal error: ValueError at test_sandbox_transport.py:" in err
    assert classic.token not in err
    assert "Jane Doe" not in err
