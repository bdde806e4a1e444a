"""The sandbox's HTTP transport as an attacker tries it: body and header limits, the token checked before the body
is read, slow and partial requests, chunked bodies, malformed lengths, form-field caps, real dropped connections.

What PyCap cannot send goes over a raw socket or http.client.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from sandbox_data import classic_spec

from trialkit.redcap.sandbox import FaultPlan, running_sandbox
from trialkit.redcap.sandbox.wsgi import Limits

NO_RIGHTS = '{"error": "You do not have permissions to use the API"}'


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _connect(url: str, timeout: float = 10) -> socket.socket:
    return socket.create_connection(_address(url), timeout=timeout)


def _read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection or a complete Content-Length reply is in."""
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not piece:
            return data
        data += piece
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def _post_head(url: str, length: str, extra: str = "") -> bytes:
    host, port = _address(url)
    return (f"POST /api/ HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# ---- the token before the body -------------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_an_unauthenticated_large_body_is_refused_without_being_read_into_memory(sandbox, classic):
    size = 48 << 20
    filler = b"x" * 65536
    start = b"token=" + b"0" * 32 + b"&content=record&format=json&data="
    peak = [_vm_kb("VmRSS")]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _vm_kb("VmRSS"))
            time.sleep(0.002)

    watcher = threading.Thread(target=sample)
    before = _vm_kb("VmRSS")
    watcher.start()
    try:
        with _connect(sandbox.url, timeout=30) as sock:
            sock.sendall(_post_head(sandbox.url, str(size)) + start)
            sent = len(start)
            while sent < size:
                piece = filler[:size - sent]
                sock.sendall(piece)
                sent += len(piece)
            reply = _read_reply(sock)
    finally:
        done.set()
        watcher.join()
    assert _status(reply) == 403
    assert reply.endswith(NO_RIGHTS.encode())
    # the old server read all 48 MB into one bytes object and decoded it again (about +100 MB)
    assert peak[0] - before < 16 * 1024, f"server memory grew by {(peak[0] - before) // 1024} MB"


def test_a_token_after_the_first_64_kb_is_not_looked_for(sandbox, classic):
    data = "x" * (70 << 10)
    late = requests.post(sandbox.url, data=[("content", "version"), ("data", data), ("token", classic.token)],
                         timeout=10)
    assert late.status_code == 403
    early = requests.post(sandbox.url, data=[("token", classic.token), ("content", "version"), ("data", data)],
                          timeout=10)
    assert early.status_code == 200
    assert early.text == "14.5.8"


def test_a_multipart_request_has_its_token_checked_first(sandbox, classic):
    classic.import_records([{"record_id": "1"}])
    bad = requests.post(sandbox.url, data={"token": "0" * 32, "content": "file", "action": "import",
                                           "record": "1", "field": "report"},
                        files={"file": ("a.txt", b"y" * (200 << 10))}, timeout=10)
    assert bad.status_code == 403
    assert classic.export_records(fields=["report"])[0]["report"] == ""


# ---- sizes and lengths ---------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_from_its_length_alone(sandbox):
    with _connect(sandbox.url) as sock:
        sock.sendall(_post_head(sandbox.url, str(200 << 20)) + b"token=")
        reply = _read_reply(sock)  # answered at once: the old server waited for 200 MB (its limit was 1 GiB)
    assert _status(reply) == 413


@pytest.mark.parametrize("length", ["-1", "abc", "12, 12", "+5"])
def test_a_malformed_content_length_gets_a_400_reply(sandbox, length):
    with _connect(sandbox.url) as sock:
        sock.sendall(_post_head(sandbox.url, length) + b"token=x&content=version")
        reply = _read_reply(sock)
    assert _status(reply) == 400  # the old server read until the connection closed, or hung up with no reply


def test_headers_over_the_limit_are_refused(sandbox):
    with _connect(sandbox.url) as sock:
        sock.sendall(_post_head(sandbox.url, "0", extra="X-Padding: " + "a" * (40 << 10) + "\r\n"))
        reply = _read_reply(sock)
    assert _status(reply) == 431


def test_too_many_form_fields_are_refused(sandbox, classic):
    pairs = [("token", classic.token), ("content", "record"), ("format", "json")]
    pairs += [(f"records[{i}]", "1") for i in range(100_001)]
    reply = requests.post(sandbox.url, data=urlencode(pairs),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert reply.status_code == 413
    assert "more than 100000 form fields" in reply.json()["error"]
    many = requests.post(sandbox.url, data=pairs[:3] + pairs[3:5003], timeout=30)  # what PyCap sends for 5,000 ids
    assert many.status_code == 200


def test_too_many_multipart_parts_are_refused():
    with running_sandbox(classic_spec(), limits=Limits(max_fields=50)) as sb:
        fields = {"token": sb.token, "content": "version", **{f"f{i}": "1" for i in range(60)}}
        reply = requests.post(sb.url, data=fields, files={"file": ("a.txt", b"a")}, timeout=10)
        assert reply.status_code == 413
        fewer = requests.post(sb.url, data={"token": sb.token, "content": "version"}, files={"file": ("a", b"a")},
                              timeout=10)
        assert fewer.text == "14.5.8"


# ---- slow and partial requests -------------------------------------------------------------------------------

def _partial_requests(url: str, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = _connect(url, timeout=10)
        sock.sendall(b"POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Len")  # headers never finished
        socks.append(sock)
    return socks


def test_partial_requests_hold_no_thread_and_the_api_still_answers(sandbox, classic):
    threads_before = threading.active_count()
    socks = _partial_requests(sandbox.url, 60)
    try:
        time.sleep(0.3)
        assert threading.active_count() <= threads_before  # the old server started one thread each, for ever
        assert classic.export_version() is not None
    finally:
        for sock in socks:
            sock.close()


def test_partial_requests_are_closed_after_the_idle_timeout():
    with running_sandbox(classic_spec(), limits=Limits(channel_timeout=1)) as sb:
        socks = _partial_requests(sb.url, 60)
        try:
            deadline = time.monotonic() + 8
            for sock in socks:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                assert sock.recv(100) == b""  # closed by the server (a timeout here raises)
        finally:
            for sock in socks:
                sock.close()


def test_a_body_that_stops_arriving_is_dropped_after_the_idle_timeout():
    with running_sandbox(classic_spec(), limits=Limits(channel_timeout=1)) as sb, _connect(sb.url) as sock:
        sock.sendall(_post_head(sb.url, "1000") + b"token=" + sb.token.encode())
        start = time.monotonic()
        assert _read_reply(sock) == b""
        assert time.monotonic() - start < 8


# ---- chunked bodies ------------------------------------------------------------------------------------------

def test_a_chunked_request_body_is_read_and_the_connection_stays_in_step(sandbox, classic):
    classic.import_records([{"record_id": "1", "age": "31"}])
    host, port = _address(sandbox.url)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        body = [f"token={classic.token}".encode(), b"&content=record&format=json", b"&fields[0]=age"]
        conn.request("POST", "/api/", body=iter(body), encode_chunked=True,
                     headers={"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"})
        first = conn.getresponse()
        assert first.status == 200
        assert first.read() == b'[{"age":"31"}]'
        # the same connection, next request: the chunk bytes were not left behind to be parsed as one
        conn.request("POST", "/api/", body=f"token={classic.token}&content=version",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        second = conn.getresponse()
        assert (second.status, second.read()) == (200, b"14.5.8")
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_is_refused():
    with running_sandbox(classic_spec(), limits=Limits(max_body=100_000)) as sb:
        chunks = [f"token={sb.token}&content=version&data=".encode()] + [b"x" * 10_000] * 20
        reply = requests.post(sb.url, data=iter(chunks), timeout=10,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status_code == 413


# ---- faults still behave as on a real network ------------------------------------------------------------------

def test_a_dropped_connection_sends_not_one_byte(sandbox, classic):
    sandbox.set_faults(FaultPlan(kind="drop", next_n=1))
    try:
        body = f"token={classic.token}&content=version".encode()
        with _connect(sandbox.url) as sock:
            sock.sendall(_post_head(sandbox.url, str(len(body))) + body)
            assert _read_reply(sock) == b""
    finally:
        sandbox.set_faults(None)
    assert classic.export_version() is not None


def test_the_request_log_prints_no_request_text_but_a_plain_content_name(capsys):
    with running_sandbox(classic_spec(), log_requests=True) as sb:
        requests.post(sb.url, data={"token": sb.token, "content": "version"}, timeout=10)
        requests.post(sb.url, data={"token": sb.token, "content": "x\n12:00:00 POST /api/ content=fake -> 200"},
                      timeout=10)
        requests.post(sb.url, data={"token": "0" * 32, "content": "record"}, timeout=10)
        token = sb.token
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "POST /api/ content=version -> 200", "POST /api/ content=? -> 400", "POST /api/ content=record -> 403"]
    assert token not in "".join(lines)


def test_an_export_that_fails_midway_drops_the_connection_and_logs_one_line(sandbox, classic, capsys, monkeypatch):
    from trialkit.redcap.sandbox import records

    classic.import_records([{"record_id": str(i), "notes": "n" * 100} for i in range(1, 3001)])
    real = records.export_records

    def failing(*args, **kwargs):
        for i, piece in enumerate(real(*args, **kwargs)):
            if i == 2:  # the export's pieces are ~64 KB chunks (~330 KB of CSV here): two sent, then it fails
                raise ValueError("invalid literal: Jane Doe")
            yield piece

    monkeypatch.setattr(records, "export_records", failing)
    with pytest.raises(requests.exceptions.RequestException):  # never a complete-looking truncated export
        classic.export_records(format_type="csv")
    err = capsys.readouterr().err
    assert "internal error: ValueError at test_sandbox_http.py:" in err
    assert "Jane Doe" not in err and "Traceback" not in err


def test_a_request_trickling_in_is_closed_after_the_request_timeout():
    with running_sandbox(classic_spec(), limits=Limits(channel_timeout=2, request_timeout=2)) as sb, \
            _connect(sb.url) as sock:
        sock.settimeout(0.3)
        start = time.monotonic()
        header = b"POST /api/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        closed = False
        for byte in header:  # one byte every 0.3 s: never silent long enough for the idle timeout
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(100) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed or time.monotonic() - start > 10:
                break
        assert closed
        assert 2 <= time.monotonic() - start < 6
