"""What a request's content can do to a reply: file names in headers, XML exports, and input that used to be an
HTTP 500 (filterLogic shapes, Unicode digits, deeply nested JSON). Through PyCap where it can send the request."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import requests
from redcap import RedcapError
from sandbox_data import ADMIN_SECRET, post

# ---- file names -----------------------------------------------------------------------------------------------


def _multipart_upload(url: str, token: str, disposition: str, data: bytes) -> requests.Response:
    """A file import whose part header is written by hand (PyCap always sends a plain filename="...")."""
    boundary = "trialkit-boundary-7d1c"
    fields = {"token": token, "content": "file", "action": "import", "record": "1", "field": "report"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; {disposition}\r\n"
             "Content-Type: application/pdf\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return requests.post(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                         timeout=10)


def test_a_file_name_cannot_add_a_header_to_the_download(sandbox, classic):
    classic.import_records([{"record_id": "1"}])
    injected = "filename*=utf-8''a.pdf%22%0D%0ASet-Cookie%3A%20session%3Devil%0D%0AX-Evil%3A%201"
    assert _multipart_upload(sandbox.url, classic.token, injected, b"%PDF-1.4").status_code == 200
    reply = post(sandbox.url, token=classic.token, content="file", action="export", record="1", field="report")
    assert reply.status_code == 200
    assert reply.content == b"%PDF-1.4"
    assert "Set-Cookie" not in reply.headers and "X-Evil" not in reply.headers
    content, info = classic.export_file("1", "report")
    assert content == b"%PDF-1.4"
    assert "\r" not in info["name"] and "\n" not in info["name"] and info["name"].startswith("a.pdf")


def test_a_non_ascii_file_name_downloads_as_redcap_sends_it(classic):
    classic.import_records([{"record_id": "1"}])
    name = "Überweisung_病历.pdf"
    classic.import_file("1", "report", name, io.BytesIO(b"scan"))
    content, info = classic.export_file("1", "report")  # the old server hung up here
    assert content == b"scan"
    # REDCap puts the UTF-8 bytes in the header; requests reads header bytes as Latin-1
    assert info["name"].encode("latin-1").decode("utf-8") == name
    assert classic.export_records(fields=["report"])[0]["report"] == name


@pytest.mark.parametrize(("given", "kept"), [("../../etc/cron.d/evil", "evil"), ("/abs/path/report.pdf", "report.pdf"),
                                             ("..", "file")])
def test_a_file_name_is_stored_as_its_base_name(classic, given, kept):
    classic.import_records([{"record_id": "1"}])
    classic.import_file("1", "report", given, io.BytesIO(b"data"))
    _, info = classic.export_file("1", "report")
    assert info["name"] == kept
    assert classic.export_records(fields=["report"])[0]["report"] == kept


def test_safe_file_name_takes_windows_paths_and_long_names_apart():
    from trialkit.redcap.sandbox.wsgi import safe_file_name

    assert safe_file_name("C:\\Users\\x\\scan 1.pdf") == "scan 1.pdf"
    assert safe_file_name('a"b;c\u202e.txt') == "a_b_c.txt"
    long = safe_file_name("é" * 300 + ".pdf")
    assert long.endswith(".pdf") and len(long.encode()) <= 255


# ---- XML ----------------------------------------------------------------------------------------------------------

def test_a_value_cannot_inject_a_record_into_an_xml_export(classic):
    value = "x]]></notes></item><item><record_id><![CDATA[666]]></record_id><notes><![CDATA[y"
    classic.import_records([{"record_id": "1", "notes": value}])
    root = ET.fromstring(classic.export_records(format_type="xml", fields=["record_id", "notes"]))
    items = root.findall("item")
    assert len(items) == 1
    assert items[0].findtext("record_id") == "1"
    assert items[0].findtext("notes") == value


def test_control_characters_keep_an_xml_export_valid(classic):
    classic.import_records([{"record_id": "1", "notes": "a\x01b\x0bc\ttab"}])
    root = ET.fromstring(classic.export_records(format_type="xml", fields=["record_id", "notes"]))
    assert root.find("item").findtext("notes") == "a\ufffdb\ufffdc\ttab"
    assert classic.export_records(fields=["notes"])[0]["notes"] == "a\x01b\x0bc\ttab"  # JSON keeps them


def test_xml_import_replies_escape_record_ids(sandbox, classic):
    reply = post(sandbox.url, token=classic.token, content="record", format="json", returnFormat="xml",
                 returnContent="ids", data='[{"record_id": "a<b&c"}]')
    assert reply.status_code == 200
    assert [e.text for e in ET.fromstring(reply.text).iter("id")] == ["a<b&c"]


def test_xml_error_bodies_stay_valid_with_control_characters(sandbox, classic):
    reply = post(sandbox.url, token=classic.token, content="record", format="json",
                 data='[{"record_id": "1", "age": "4\\u0001"}]', returnFormat="xml")
    assert reply.status_code == 400
    assert "4\ufffd" in ET.fromstring(reply.text).findtext("error")


# ---- input that was an HTTP 500 ---------------------------------------------------------------------------------

def test_filter_logic_on_the_record_id_field(classic):
    classic.import_records([{"record_id": "0002", "age": "1"}, {"record_id": "7", "age": "2"}])
    ids = [r["record_id"] for r in classic.export_records(filter_logic="[record_id] = '0002'", fields=["age"])]
    assert ids == ["0002"]
    assert classic.export_records(filter_logic="[record_id] = 'nobody'") == []


def test_filter_logic_on_an_event_with_no_rows_yet(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "120"}])
    assert longitudinal.export_records(filter_logic="[baseline_arm_1][sbp] > 5") == []
    rows = longitudinal.export_records(filter_logic="[baseline_arm_1][sbp] = ''", fields=["sbp"])
    assert [(r["redcap_event_name"], r["sbp"]) for r in rows] == [("screening_arm_1", "120")]


def test_a_record_id_written_with_a_unicode_digit_is_text(classic):
    assert classic.import_records([{"record_id": "²", "age": "3"}, {"record_id": "10"}, {"record_id": "9"}]) == \
        {"count": 3}
    assert [r["record_id"] for r in classic.export_records(fields=["record_id"])] == ["9", "10", "²"]
    assert classic.generate_next_record_name() == "11"


def test_a_repeat_instance_written_with_a_unicode_digit_is_refused(sandbox, longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1"}])
    with pytest.raises(RedcapError) as err:
        longitudinal.import_records([{"record_id": "1", "redcap_event_name": "treatment_arm_1",
                                      "redcap_repeat_instrument": "session", "redcap_repeat_instance": "²"}])
    assert "repeat instance must be a whole number" in str(err.value)
    for params in ({"content": "record", "action": "delete", "records[0]": "1", "event": "treatment_arm_1",
                    "instrument": "session", "repeat_instance": "²"},
                   {"content": "file", "action": "export", "record": "1", "field": "report",
                    "repeat_instance": "²"},
                   {"content": "arm", "arms[0]": "²"}):
        reply = post(sandbox.url, token=longitudinal.token, format="json", **params)
        assert reply.status_code == 400, params
        assert "error" in reply.json()


@pytest.mark.parametrize("content", ["record", "metadata", "event"])
def test_json_nested_100000_deep_is_a_400(sandbox, classic, longitudinal, content):
    token = longitudinal.token if content == "event" else classic.token
    reply = post(sandbox.url, token=token, content=content, format="json", action="import",
                 data="[" * 100_000 + "]" * 100_000)
    assert reply.status_code == 400
    assert "not formatted correctly" in reply.json()["error"]


def test_deeply_nested_json_to_the_admin_endpoint_is_a_400(sandbox):
    reply = requests.post(sandbox.url.replace("/api/", "/admin/create_project"), data="[" * 100_000,
                          headers={"X-Trialkit-Admin": ADMIN_SECRET}, timeout=10)
    assert reply.status_code == 400
