"""The sandbox as a WSGI application: one REDCap API request from the wire to `api.handle` and back.

The server under it (waitress, see server.py) has already enforced the transport limits: header size, body size,
idle time, connection count; it de-chunks `Transfer-Encoding: chunked` bodies and spools a body larger than
`Limits.body_in_memory` (8 MB) to a temporary file, so a large upload never sits in memory before this code decides
to read it.

Here, in this order:
1. the token is looked for in the first `Limits.token_window` bytes of the body (PyCap and REDCap's own examples
   send it first): a request without a known token there is refused with REDCap's 403 and the rest of its body is
   never read into memory or parsed;
2. the form is decoded: `application/x-www-form-urlencoded` by `parse_form` (fast on multi-megabyte imports),
   `multipart/form-data` by werkzeug's parser, both with a cap on the number of fields;
3. faults are injected, then `api.handle` answers.

Reply headers never carry raw request text: every value passes `header_value` (no control characters, UTF-8
sent as bytes, as REDCap's PHP does), and waitress refuses CR/LF in a header value as a second guard.
"""

from __future__ import annotations

import binascii
import ctypes
import ctypes.util
import hmac
import io
import json
import re
import socket
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from trialkit.errors import TrialkitError
from trialkit.redcap.sandbox import api, formats
from trialkit.redcap.sandbox.errors import NO_API_RIGHTS, OUT_OF_MEMORY
from trialkit.redcap.sandbox.faults import PHP_FATAL, RATE_LIMIT_MESSAGE

if TYPE_CHECKING:
    from trialkit.redcap.sandbox.server import Sandbox

ADMIN_HEADER = "X-Trialkit-Admin"
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    """What one client may send. The defaults fit PyCap's traffic with a wide margin; REDCap's own servers cap
    request bodies by PHP's post_max_size (commonly 32 to 128 MB) and form fields by max_input_vars."""

    max_body: int = 64 << 20  # bytes of request body (after de-chunking); larger is answered 413
    # bytes of one request body held in memory while it arrives; a larger one is spooled to a temporary file. An
    # import batch of 500 KAP-TRD records is ~5 MB of form data. At most connection_limit bodies arrive at once.
    body_in_memory: int = 8 << 20
    max_header: int = 32 << 10  # bytes of request line + headers; larger is answered 431
    max_fields: int = 100_000  # form fields (pairs, or multipart parts); PyCap sends `records[i]` one field each
    token_window: int = 64 << 10  # the token must come within the body's first bytes; nothing more is read before
    channel_timeout: int = 30  # seconds a connection may stay silent (a partial request, an idle keep-alive)
    request_timeout: int = 120  # seconds to receive one whole request once it has begun, however it trickles in
    connection_limit: int = 100  # open connections (each may spool up to max_body to disk); beyond, new ones wait
    threads: int = 4  # requests answered at once (a partial request holds no thread: waitress reads it)

    def __post_init__(self) -> None:
        for name in ("max_body", "body_in_memory", "max_header", "max_fields", "token_window", "channel_timeout",
                     "request_timeout", "connection_limit", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SandboxApp:
    """The WSGI callable serving `/api/` (and `/admin/...` when the sandbox has an admin secret)."""

    def __init__(self, sandbox: Sandbox, limits: Limits) -> None:
        self.sandbox = sandbox
        self.limits = limits

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST":
            return _send(start_response, 405, b"The REDCap API accepts POST requests only",
                         "text/plain; charset=utf-8")
        if path != "/api/" and not path.startswith("/admin/"):
            return _send(start_response, 404, b"Not Found", "text/plain; charset=utf-8")
        try:
            if path.startswith("/admin/"):
                return self._admin(environ, start_response, path[len("/admin/"):])
            return self._api(environ, start_response)
        except _Refused as refused:
            body, ctype = formats.error_body(refused.message, "xml")
            return _send(start_response, refused.status, body, ctype)
        except Exception as exc:  # never a traceback from the server (its messages may quote the request)
            report_internal_error(exc)
            body, ctype = formats.error_body(f"Internal error in the trialkit sandbox: {type(exc).__name__}", "xml")
            return _send(start_response, 500, body, ctype)

    # ---- /api/ ---------------------------------------------------------------------------------------------
    def _api(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        sandbox = self.sandbox
        stream = environ["wsgi.input"]
        length = _content_length(environ)
        mimetype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        start = _position(stream)
        head = stream.read(min(length, self.limits.token_window)) if length else b""
        complete = len(head) >= length
        peek = _peek_params(head, complete, mimetype, options)
        token = peek.get("token", "")
        if not token or not sandbox.storage.has_token(token):
            # refused before the rest of the body is read (waitress holds it in a temporary file, then drops it)
            fmt = formats.reply_format(peek)
            body, ctype = formats.error_body(NO_API_RIGHTS, fmt)
            sandbox._log_request(peek.get("content", ""), 403)
            return _send(start_response, 403, body, ctype)
        try:
            request = self._decode(_Rest(head, stream, length, start), mimetype, options, length)
        except _Refused as refused:
            body, ctype = formats.error_body(refused.message, formats.reply_format(peek))
            return _send(start_response, refused.status, body, ctype)
        params = request.params
        content = params.get("content", "")
        fmt = formats.reply_format(params)
        faults = sandbox.faults
        if faults.rate_limited(params.get("token", "")):
            body, ctype = formats.error_body(RATE_LIMIT_MESSAGE, fmt)
            sandbox._log_request(content, 429)
            return _send(start_response, 429, body, ctype, headers={"Retry-After": "1"})
        fault = faults.decide(content)
        if fault == "drop":
            _drop(environ)
            sandbox._log_request(content, 0)
            return _send(start_response, 500, b"", "text/plain")
        if fault == "slow":
            time.sleep(faults.plan.delay if faults.plan else 1.0)
        elif fault == "error":
            plan = faults.plan
            status = plan.status if plan else 400
            body, ctype = formats.error_body(plan.message if plan else "injected error", fmt)
            sandbox._log_request(content, status)
            return _send(start_response, status, body, ctype)
        elif fault == "http500":
            sandbox._log_request(content, 500)
            return _send(start_response, 500, b"<html><body><h1>500 Internal Server Error</h1></body></html>",
                         "text/html")
        elif fault == "html_fatal":
            sandbox._log_request(content, 200)
            return _send(start_response, 200, (PHP_FATAL + json.dumps({"error": OUT_OF_MEMORY})).encode(),
                         "text/html; charset=UTF-8")
        try:
            reply = api.handle(sandbox.storage, request)
        except Exception as exc:  # a sandbox bug must still produce a REDCap-shaped answer, not a hang-up
            report_internal_error(exc)
            reply = api.Reply.error(f"Internal error in the trialkit sandbox: {type(exc).__name__}", fmt, 500)
        release = length >= RELEASE_AFTER and isinstance(reply.body, bytes)
        if fault == "drop_after":
            if not isinstance(reply.body, bytes):
                for _ in reply.body:
                    pass
            _drop(environ)
            sandbox._log_request(content, 0)
            return _send(start_response, 500, b"", "text/plain")
        sandbox._log_request(content, reply.status)
        if isinstance(reply.body, bytes):
            sent = _send(start_response, reply.status, reply.body, reply.content_type, headers=reply.headers)
            if not release:
                return sent
            # the request and what answering it made are freed, and the memory trimmed, after the reply is sent
            # (~25 ms for a 500-record import batch): the client is not kept waiting for them
            keep = [request, *reply.keep]
            del request, params
            return _ThenRun(sent, lambda: _free_later(keep))
        # no Content-Length: waitress sends the export with chunked transfer coding as it is produced
        start_response(_status(reply.status), _headers({"Content-Type": reply.content_type, **reply.headers}))
        return _guarded(reply.body, environ)

    def _decode(self, rest: _Rest, mimetype: str, options: dict[str, str], length: int) -> api.ApiRequest:
        limits = self.limits
        if mimetype == "multipart/form-data":
            boundary = options.get("boundary", "").encode("latin-1", "replace")
            if not boundary:
                raise _Refused(400, "The request body could not be read (multipart without a boundary)")
            parser = MultiPartParser(max_form_memory_size=limits.max_body, max_form_parts=limits.max_fields)
            try:
                form, files = parser.parse(rest, boundary, length)
            except RequestEntityTooLarge:
                raise _Refused(413, f"The request has more than {limits.max_fields} form fields") from None
            except ValueError:
                raise _Refused(400, "The request body could not be read (malformed multipart)") from None
            uploads = {name: (safe_file_name(fs.filename or ""), fs.read(), safe_mime(fs.mimetype))
                       for name, fs in files.items()}
            return api.ApiRequest.from_pairs(list(form.items(multi=True)), uploads)
        body = rest.read()
        if body.count(b"&") >= limits.max_fields:
            raise _Refused(413, f"The request has more than {limits.max_fields} form fields")
        return api.ApiRequest.from_pairs(parse_form(body))

    # ---- admin ---------------------------------------------------------------------------------------------
    def _admin(self, environ: dict[str, Any], start_response: StartResponse, action: str) -> Iterable[bytes]:
        secret = self.sandbox.admin_secret
        given = environ.get("HTTP_" + ADMIN_HEADER.upper().replace("-", "_"), "")
        if not secret or not hmac.compare_digest(given.encode("latin-1", "replace"), secret.encode()):
            return _send(start_response, 404, b"Not Found", "text/plain; charset=utf-8")
        length = _content_length(environ)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the admin request body must be a JSON object")
            result = self.sandbox.admin(action, data)
        except RecursionError:
            return _send(start_response, 400, b'{"error": "the JSON is nested too deeply"}', "application/json")
        except (TrialkitError, ValueError, TypeError, KeyError) as exc:
            return _send(start_response, 400, json.dumps({"error": str(exc)}).encode(), "application/json")
        return _send(start_response, 200, json.dumps(result).encode(), "application/json")


# ---- memory ------------------------------------------------------------------------------------------------------

RELEASE_AFTER = 1 << 20  # request bodies from this size on (an import batch) give their memory back when answered


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0): return the free pages of every malloc arena to the system.

    An import batch of a few MB becomes ~100 MB of Python objects for a moment, in the arena of the waitress
    thread that answered it; glibc keeps the freed pages for reuse, so after large imports the server held
    ~200-240 MB while idle at ~85 MB. Trimming after each large request costs a few ms. No-op off glibc."""
    path = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(path).malloc_trim if path else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


release_memory = _malloc_trim()
FREE_AFTER = 0.02  # seconds between a large request's reply and the freeing of what it made (see _free_later)


def _free_later(keep: list) -> None:
    """Free `keep` (a large request and what answering it made), then trim, in a thread of its own shortly after.

    The reply body's close() runs in the waitress thread right after the reply is queued, while the event loop
    thread that sends it may still be waiting for the GIL: freeing an import batch's ~10^5 objects is one C call
    that holds the GIL throughout (~25 ms), so done there it delayed the reply by as much. The items are freed one
    at a time, so the GIL can pass between them."""
    def run() -> None:
        time.sleep(FREE_AFTER)
        while keep:
            keep.pop()
        release_memory()

    threading.Thread(target=run, name="trialkit-sandbox-free", daemon=True).start()


# ---- request body -------------------------------------------------------------------------------------------

def _content_length(environ: dict[str, Any]) -> int:
    # waitress has checked the header (and de-chunked a chunked body, setting the length it found)
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        raise _Refused(400, "The Content-Length header is not a number") from None


def _position(stream: Any) -> int | None:
    """Where the input stream stands, if it can be read again from there (None: it cannot)."""
    try:
        return stream.tell() if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


class _Rest(io.RawIOBase):
    """The body again from its start: the peeked head, then the unread rest of the input stream.

    Read whole from a stream that can go back to `start` (waitress keeps a body of up to Limits.body_in_memory in
    an io.BytesIO, a larger one in a temporary file), the body is read again from there: from a BytesIO, its bytes
    themselves when they are the body (a 5 MB import batch is not copied), else one read, instead of joining the
    head to the rest (two copies onto fresh pages: ~3.5 ms more per 5 MB)."""

    def __init__(self, head: bytes, stream: Any, length: int, start: int | None = None) -> None:
        self._head = head
        self._stream = stream
        self._length = length
        self._left = length - len(head)
        self._start = start  # None: the stream cannot go back, or part of the body was handed out already

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            start, self._start = self._start, None
            if start is not None and self._left > 0:
                self._head, self._left = b"", 0
                getvalue = getattr(self._stream, "getvalue", None)
                if getvalue is not None:
                    return getvalue()[start:start + self._length]  # the same bytes object when it is all the body
                self._stream.seek(start)
                return self._stream.read(self._length)
            out = self._head + (self._stream.read(self._left) if self._left > 0 else b"")
            self._head, self._left = b"", 0
            return out
        self._start = None
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        if self._left <= 0:
            return b""
        out = self._stream.read(min(size, self._left))
        self._left -= len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _peek_params(head: bytes, complete: bool, mimetype: str, options: dict[str, str]) -> dict[str, str]:
    """token, content, format and returnFormat as far as the head of the body shows them (whole fields only)."""
    wanted = ("token", "content", "format", "returnFormat")
    found: dict[str, str] = {}
    if mimetype == "multipart/form-data":
        boundary = options.get("boundary", "").encode("latin-1", "replace")
        if not boundary:
            return found
        decoder = MultipartDecoder(boundary, max_form_memory_size=len(head) + 1)
        decoder.receive_data(head)
        if complete:
            decoder.receive_data(None)
        name: str | None = None
        value = bytearray()
        with suppress(ValueError):
            while True:
                event = decoder.next_event()
                if isinstance(event, (NeedData, Epilogue)):
                    break
                if isinstance(event, File):
                    name = None
                elif isinstance(event, Field):
                    name, value = event.name, bytearray()
                elif isinstance(event, Data) and name in wanted:
                    value += event.data
                    if not event.more_data:
                        found[name] = value.decode("utf-8", "replace")
        return found
    if not complete:
        head = head[:head.rfind(b"&") + 1]  # the last pair may be cut short
    for part in head.split(b"&"):
        key, _, value = part.partition(b"=")
        if key in (b"token", b"content", b"format", b"returnFormat"):
            found[_unquote(key)] = _unquote(value)
    return found


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """application/x-www-form-urlencoded pairs, as parse_qsl gives them, several times faster on large bodies.

    A JSON import is mostly percent-escapes; urllib decodes them one by one in Python (about 1 s per 5 MB).
    binascii.a2b_qp decodes `=XX` in C, so '%' is swapped for '=' when the value holds no raw '=', CR or LF; a
    malformed escape then leaves an '=' in the result (a2b_qp keeps it), and only then, or for an escape of '='
    itself, is the standard decoder used.

    The pairs are found by their offsets, not split out: a large value (LARGE_VALUE bytes or more) is decoded
    from a view of the body translated once, so a 5 MB import batch is copied once before decoding instead of
    three times (split, partition, translate), each copy onto fresh pages.
    """
    pairs = []
    size = len(body)
    translated: list[bytes] = []  # the body with '+' -> ' ' and '%' -> '=', made at the first large value
    start = 0
    while start <= size:
        end = body.find(b"&", start)
        if end < 0:
            end = size
        if end > start:
            eq = body.find(b"=", start, end)
            key_end, value_start = (end, end) if eq < 0 else (eq, eq + 1)
            key = _unquote(body[start:key_end])
            if end - value_start < LARGE_VALUE:
                pairs.append((key, _unquote(body[value_start:end])))
            else:
                pairs.append((key, _unquote_large(body, value_start, end, translated)))
        start = end + 1
    return pairs


LARGE_VALUE = 1 << 16  # bytes from which a value is decoded in place (parse_form)

# '+' -> ' ' and '%' -> '=' in one pass (a 5 MB import batch: one copy instead of two)
_PLUS_PERCENT = bytes.maketrans(b"+%", b" =")


def _unquote(raw: bytes) -> str:
    if b"%" not in raw:
        return raw.replace(b"+", b" ").decode("utf-8", "replace")
    # a2b_qp drops an '=' that ends its input, where unquote keeps the '%': that case takes the standard decoder
    if b"=" not in raw and b"\r" not in raw and b"\n" not in raw and not raw.endswith(b"%"):
        decoded = binascii.a2b_qp(raw.translate(_PLUS_PERCENT))
        if b"=" not in decoded:
            return decoded.decode("utf-8", "replace")
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def _unquote_large(body: bytes, start: int, end: int, translated: list[bytes]) -> str:
    """`_unquote(body[start:end])`, decoded from a view of the translated body (made once, kept in `translated`)."""
    if (body.find(b"%", start, end) >= 0 and body.find(b"=", start, end) < 0 and body.find(b"\r", start, end) < 0
            and body.find(b"\n", start, end) < 0 and body[end - 1] != 0x25):  # 0x25: '%'
        if not translated:
            translated.append(body.translate(_PLUS_PERCENT))
        decoded = binascii.a2b_qp(memoryview(translated[0])[start:end])
        if b"=" not in decoded:
            return decoded.decode("utf-8", "replace")
    return _unquote(body[start:end])


# ---- uploaded file names ------------------------------------------------------------------------------------------

_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+$")


def safe_file_name(name: str) -> str:
    """The name an uploaded file is stored and served under: its last path component, without control or format
    characters, quotes, backslashes or semicolons (they would end the name in a Content-Type header), at most 255
    UTF-8 bytes; "file" when nothing is left. `../../etc/cron.d/evil` becomes `evil`."""
    text = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    text = PurePosixPath(text.replace("\\", "/")).name
    text = re.sub(r'["\\;]', "_", text).strip(" .")
    if not text:
        return "file"
    while len(text.encode("utf-8")) > 255:
        stem, dot, ext = text.rpartition(".")
        text = f"{stem[:-1]}.{ext}" if dot and stem and len(ext) < 16 else text[:-1]
    return text


def safe_mime(mimetype: str | None) -> str:
    return mimetype if mimetype and _MIME.match(mimetype) else "application/octet-stream"


# ---- replies -----------------------------------------------------------------------------------------------------

_STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                413: "Content Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
                501: "Not Implemented"}


def _status(code: int) -> str:
    return f"{code} {_STATUS_TEXT.get(code, 'Status')}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_value(value: str) -> str:
    """A header value safe to send: control characters (CR, LF, ...) become spaces; text beyond Latin-1 goes as its
    UTF-8 bytes (WSGI headers are Latin-1 strings), which is what REDCap sends for a non-ASCII file name."""
    value = _CONTROL.sub(" ", value)
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("latin-1")
    return value


def _headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [(name, header_value(str(value))) for name, value in headers.items()]


def _send(start_response: StartResponse, status: int, body: bytes, ctype: str, *,
          headers: dict[str, str] | None = None) -> list[bytes]:
    out = {"Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})}
    start_response(_status(status), _headers(out))
    return [body]


class _ThenRun(list):
    """A reply body whose close(), which the server calls once it has written the body (WSGI), runs `after`."""

    def __init__(self, body: list[bytes], after: Callable[[], object]) -> None:
        super().__init__(body)
        self._after = after

    def close(self) -> None:
        self._after()


def _guarded(pieces: Iterator[bytes], environ: dict[str, Any]) -> Iterator[bytes]:
    """A streamed reply that fails midway ends with the connection dropped, so the client cannot take the part it
    got for the whole export; the failure is reported in one line, without the server's traceback."""
    try:
        yield from pieces
    except Exception as exc:
        report_internal_error(exc)
        _drop(environ)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
        release_memory()  # the export's buffers, in this thread's malloc arena: each thread would keep its own


def _drop(environ: dict[str, Any]) -> None:
    """Close the client's connection with no reply at all, as a crashed server or a proxy timeout does.

    WSGI gives an application no socket; waitress's `waitress.client_disconnected` is a method of the connection's
    channel, whose socket is shut down here. Whatever the application then returns goes nowhere.
    """
    channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
    sock = getattr(channel, "socket", None)
    if not isinstance(sock, socket.socket):
        raise RuntimeError("the dropped-connection fault needs the waitress server")
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def report_internal_error(exc: BaseException | None) -> None:
    """One stderr line for a sandbox bug: the exception type and where it was raised, never its message.

    The message of a KeyError/ValueError/sqlite error can quote a request value (a token, an identifier field).
    """
    where = ""
    tb = exc.__traceback__ if exc is not None else None
    if tb is not None:
        frame = traceback.extract_tb(tb)[-1]
        where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    print(f"trialkit sandbox: internal error: {type(exc).__name__}{where}", file=sys.stderr)


__all__ = ["ADMIN_HEADER", "Limits", "SandboxApp", "header_value", "parse_form", "safe_file_name"]
