"""The sandbox's form decoder (wsgi.parse_form) against the standard library's, on well-formed and malformed
percent-escapes: its C shortcut must never change what a body decodes to."""

from __future__ import annotations

import io
import tempfile
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


class _OneWay(io.RawIOBase):
    """A stream that cannot go back (as a socket's)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


BODY = b"token=AB&content=record&data=" + b"%5B%7B%22a%22%3A%221%22%7D%5D" * 4000


def _rest(stream, length: int = len(BODY), head_size: int = 100):
    start = wsgi._position(stream)
    head = stream.read(head_size)
    return wsgi._Rest(head, stream, length, start)


def test_a_body_is_read_whole_again_from_where_it_started():
    memory = io.BytesIO(BODY)
    body = _rest(memory).read()
    assert body == BODY and body is memory.getvalue()  # an in-memory body is not copied
    for prefix in (b"", b"xyz"):
        with tempfile.TemporaryFile() as spooled:  # waitress spools a large body to a temporary file
            spooled.write(prefix + BODY + b"more")
            spooled.seek(len(prefix))
            assert _rest(spooled).read() == BODY
        shifted = io.BytesIO(prefix + BODY + b"more")
        shifted.seek(len(prefix))
        assert _rest(shifted).read() == BODY
    assert wsgi._position(_OneWay(BODY)) is None
    assert _rest(_OneWay(BODY)).read() == BODY
    assert _rest(io.BytesIO(BODY[:50]), length=50).read() == BODY[:50]  # the head is the whole body
    assert _rest(io.BytesIO(BODY), length=len(BODY) - 7).read() == BODY[:-7]


def test_a_body_read_in_parts_goes_on_from_where_the_last_part_ended():
    rest = _rest(io.BytesIO(BODY))
    first = rest.read(60) + rest.read(60)
    assert first + rest.read() == BODY
