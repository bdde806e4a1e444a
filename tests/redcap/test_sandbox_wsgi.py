"""The sandbox's form decoder (wsgi.parse_form) against the standard library's, on well-formed and malformed
percent-escapes: its C shortcut must never change what a body decodes to."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote_plus

import pytest

from trialkit.redcap.sandbox import wsgi
from trialkit.redcap.sandbox.wsgi import parse_form

VALUES = ["plain", "a b+c", "caf\u00e9 \u00a0x", '[{"record_id":"1","a":"x, y"}]', "50%", "a=b", "%", "x%", "%2",
          "%G1", "%%", "%3D", "%3d%41", "%e9", "%C3%A9", "%2B", "line\r\nbreak", "a%0Ab", "%zz%41", "=%41", ""]


@pytest.mark.parametrize("raw", [*VALUES, *(quote_plus(v) for v in VALUES)])
def test_parse_form_decodes_as_parse_qsl(raw):
    body = f"token=AB&data={raw}&content=record".encode()
    expected = parse_qsl(body.decode(), keep_blank_values=True, encoding="utf-8", errors="replace")
    assert parse_form(body) == expected


BODIES = ["", "&", "a", "a=", "=b", "a&&b=1&", "&a=1&b", "a=1&a=2", "k%41=v%42&x+y=1+2", "data=%zz&t=%"]


@pytest.mark.parametrize("raw", [*VALUES, *(quote_plus(v) for v in VALUES), *BODIES])
def test_values_decoded_in_place_decode_as_parse_qsl(raw, monkeypatch):
    # every value through the in-place path (from a view of the body translated once), and the pairs found by
    # their offsets: empty parts, a key without '=', repeated keys, escapes in keys, a body that is only '&'
    monkeypatch.setattr(wsgi, "LARGE_VALUE", 0)
    for body in (f"token=AB&data={raw}&content=record".encode(), raw.encode(), f"{raw}&{raw}".encode()):
        expected = parse_qsl(body.decode(), keep_blank_values=True, encoding="utf-8", errors="replace")
        assert parse_form(body) == expected, body


def test_a_large_value_decodes_as_parse_qsl():
    data = quote_plus('[{"record_id":"1","a":"x, y \u00e9"}]' * 3000)
    body = f"token=AB&data={data}&x=%zz&data2={data}%".encode()
    assert parse_form(body) == parse_qsl(body.decode(), keep_blank_values=True, encoding="utf-8", errors="replace")
