"""The HTTP side: a threaded standard-library server on loopback answering REDCap API calls at `/api/`.

`running_sandbox(...)` starts one on a free port in a background thread (for tests and demos);
`Sandbox.serve_forever()` is what `trialkit sandbox serve` runs. The token is never logged: request logging,
when enabled, prints only method, path, `content` and status.

An admin endpoint (`POST /admin/<action>`, JSON body) lets a test harness in another process create or reset
projects and set faults. It exists only when the server is started with an admin secret, and every call must
carry that secret in the `X-Trialkit-Admin` header.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hmac
import json
import re
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from trialkit.errors import TrialkitError, UsageError
from trialkit.redcap.sandbox import api, formats
from trialkit.redcap.sandbox.errors import OUT_OF_MEMORY
from trialkit.redcap.sandbox.faults import PHP_FATAL, RATE_LIMIT_MESSAGE, FaultInjector, FaultPlan
from trialkit.redcap.sandbox.project import ProjectSpec, check_metadata
from trialkit.redcap.sandbox.storage import Storage

ADMIN_HEADER = "X-Trialkit-Admin"
MAX_BODY = 1 << 30


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (or a dropped-connection fault) is not a server error; anything else is printed
        # without the request, which may hold a token.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        _report_internal_error(exc)


def _report_internal_error(exc: BaseException | None) -> None:
    """One stderr line for a sandbox bug: the exception type and where it was raised, never its message.

    The message of a KeyError/ValueError/sqlite error can quote a request value (a token, an identifier field).
    """
    where = ""
    tb = exc.__traceback__ if exc is not None else None
    if tb is not None:
        frame = traceback.extract_tb(tb)[-1]
        where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    print(f"trialkit sandbox: internal error: {type(exc).__name__}{where}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default would print the request line; requests are logged by _log_request when asked

    def do_GET(self) -> None:
        self._send(405, b"The REDCap API accepts POST requests only", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, b"Request too large", "text/plain; charset=utf-8")
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/admin/"):
            self._admin(path[len("/admin/"):], body)
            return
        if path != "/api/":
            self._send(404, b"Not Found", "text/plain; charset=utf-8")
            return
        try:
            request = _decode(self.headers.get("Content-Type", ""), body)
        except ValueError:
            self._send(400, formats.error_body("The request body could not be read", "xml")[0],
                       "text/xml; charset=utf-8")
            return
        content = request.params.get("content", "")
        fmt = formats.reply_format(request.params)
        faults = sandbox.faults
        if faults.rate_limited(request.params.get("token", "")):
            body_bytes, ctype = formats.error_body(RATE_LIMIT_MESSAGE, fmt)
            self._send(429, body_bytes, ctype, {"Retry-After": "1"})
            sandbox._log_request(content, 429)
            return
        fault = faults.decide(content)
        if fault == "drop":
            self._drop()
            sandbox._log_request(content, 0)
            return
        if fault == "slow":
            time.sleep(faults.plan.delay if faults.plan else 1.0)
        elif fault == "error":
            plan = faults.plan
            body_bytes, ctype = formats.error_body(plan.message if plan else "injected error", fmt)
            self._send(plan.status if plan else 400, body_bytes, ctype)
            sandbox._log_request(content, plan.status if plan else 400)
            return
        elif fault == "http500":
            self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html")
            sandbox._log_request(content, 500)
            return
        elif fault == "html_fatal":
            self._send(200, (PHP_FATAL + json.dumps({"error": OUT_OF_MEMORY})).encode(), "text/html; charset=UTF-8")
            sandbox._log_request(content, 200)
            return
        try:
            reply = api.handle(sandbox.storage, request)
        except Exception as exc:  # a sandbox bug must still produce a REDCap-shaped answer, not a hang-up
            _report_internal_error(exc)
            reply = api.Reply.error(f"Internal error in the trialkit sandbox: {type(exc).__name__}", fmt, 500)
        if fault == "drop_after":
            if not isinstance(reply.body, bytes):
                for _ in reply.body:
                    pass
            self._drop()
            sandbox._log_request(content, 0)
            return
        if isinstance(reply.body, bytes):
            self._send(reply.status, reply.body, reply.content_type, reply.headers)
        else:
            self._stream(reply.status, reply.body, reply.content_type)
        sandbox._log_request(content, reply.status)

    # ---- replies -------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, status: int, pieces: Iterator[bytes], ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for piece in pieces:
                if piece:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(pieces, "close", None)
            if close:
                close()

    def _drop(self) -> None:
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(2)

    # ---- admin ---------------------------------------------------------------------------------------------
    def _admin(self, action: str, body: bytes) -> None:
        sandbox = self.server.sandbox
        secret = sandbox.admin_secret
        given = self.headers.get(ADMIN_HEADER, "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            self._send(404, b"Not Found", "text/plain; charset=utf-8")
            return
        try:
            data = json.loads(body or b"{}")
            result = sandbox.admin(action, data)
        except (TrialkitError, ValueError, TypeError, KeyError) as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._send(200, json.dumps(result).encode(), "application/json")


def _decode(content_type: str, body: bytes) -> api.ApiRequest:
    if content_type.lower().startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        if not message.is_multipart():
            raise ValueError("bad multipart body")
        pairs: list[tuple[str, str]] = []
        files: dict[str, tuple[str, bytes, str]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            payload = part.get_payload(decode=True) or b""
            if filename is not None:
                files[name] = (filename, payload, part.get_content_type())
            elif name:
                pairs.append((name, payload.decode("utf-8")))
        return api.ApiRequest.from_pairs(pairs, files)
    return api.ApiRequest.from_pairs(parse_form(body))


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """application/x-www-form-urlencoded pairs, as parse_qsl gives them, several times faster on large bodies.

    A JSON import is mostly percent-escapes; urllib decodes them one by one in Python (about 1 s per 5 MB).
    binascii.a2b_qp decodes `=XX` in C, so '%' is swapped for '=' when the value holds no raw '=', CR or LF
    and no malformed escape (then the standard decoder is used).
    """
    pairs = []
    for part in body.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        pairs.append((_unquote(key), _unquote(value)))
    return pairs


def _unquote(raw: bytes) -> str:
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    if b"=" in raw or b"\r" in raw or b"\n" in raw or _BAD_ESCAPE.search(raw):
        return unquote_to_bytes(raw).decode("utf-8", "replace")
    return binascii.a2b_qp(raw.replace(b"%", b"=")).decode("utf-8", "replace")


class Sandbox:
    """A running (or ready to run) sandbox server: storage + HTTP server + fault injector."""

    def __init__(self, *, db: str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 admin_secret: str | None = None, clock: Callable[[], dt.datetime] | None = None,
                 log_requests: bool = False) -> None:
        self.storage = Storage(db, clock=clock)
        self.faults = FaultInjector()
        self.admin_secret = admin_secret
        self.log_requests = log_requests
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None
        self.token: str | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    # ---- projects ------------------------------------------------------------------------------------------
    def create_project(self, spec: ProjectSpec, token: str | None = None) -> str:
        """Create a project and return its 32-character API token (the first one becomes `self.token`)."""
        token = self.storage.create_project(spec, token)
        if self.token is None:
            self.token = token
        return token

    def reset(self, token: str | None = None) -> None:
        """Delete all records, files and log entries of a project (default: `self.token`), keep its design."""
        self.storage.reset_project(token or self._default_token())

    def redefine(self, spec: ProjectSpec, token: str | None = None) -> None:
        """Replace a project's design (metadata, events, ...), keeping its token and data."""
        self.storage.replace_spec(token or self._default_token(), spec)

    def drop_project(self, token: str) -> None:
        self.storage.drop_project(token)
        if token == self.token:
            self.token = None

    def set_faults(self, plan: FaultPlan | None) -> None:
        self.faults.configure(plan)

    def set_clock(self, clock: Callable[[], dt.datetime] | None) -> None:
        """Fix "now" (record change times, log) for tests of dateRangeBegin/End; None restores the real clock."""
        self.storage.clock = clock or (lambda: dt.datetime.now().replace(microsecond=0))

    def project(self, token: str | None = None, **request_kwargs: Any) -> Any:
        """A PyCap `redcap.Project` talking to this server (timeout 30 s unless given)."""
        from redcap import Project

        request_kwargs.setdefault("timeout", 30)
        return Project(self.url, token or self._default_token(), **request_kwargs)

    def _default_token(self) -> str:
        if self.token is None:
            raise UsageError("the sandbox has no project yet: call create_project(spec) first")
        return self.token

    def admin(self, action: str, data: dict) -> dict:
        if action == "create_project":
            spec = ProjectSpec.from_json(json.dumps(data["spec"]))
            check_metadata(spec.metadata)
            return {"token": self.create_project(spec, data.get("token"))}
        if action == "reset":
            self.reset(data.get("token"))
            return {"ok": True}
        if action == "drop_project":
            self.drop_project(data["token"])
            return {"ok": True}
        if action == "faults":
            plan = data.get("plan")
            self.set_faults(FaultPlan.from_dict(plan) if plan else None)
            return {"ok": True}
        if action == "status":
            return {"injected": self.faults.injected, "projects": len(self.storage.tokens())}
        raise ValueError(f"unknown admin action {action!r}")

    # ---- running -------------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="trialkit-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self.storage.close()

    def _log_request(self, content: str, status: int) -> None:
        if self.log_requests:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            shown = status if status else "dropped"
            print(f"{stamp} POST /api/ content={content or '-'} -> {shown}", file=sys.stderr, flush=True)


@contextmanager
def running_sandbox(spec: ProjectSpec | None = None, *, db: str | Path | None = None, token: str | None = None,
                    host: str = "127.0.0.1", port: int = 0, faults: FaultPlan | None = None,
                    admin_secret: str | None = None, clock: Callable[[], dt.datetime] | None = None,
                    log_requests: bool = False) -> Iterator[Sandbox]:
    """A sandbox serving on a free loopback port in a background thread; closed on exit.

    >>> with running_sandbox(ProjectSpec.classic(rows)) as sb:     # doctest: +SKIP
    ...     proj = redcap.Project(sb.url, sb.token)
    """
    sandbox = Sandbox(db=db, host=host, port=port, admin_secret=admin_secret, clock=clock, log_requests=log_requests)
    try:
        if spec is not None:
            sandbox.create_project(spec, token)
        elif db is not None:
            existing = sandbox.storage.tokens()
            sandbox.token = token if token in existing else (existing[0] if existing else None)
        if faults is not None:
            sandbox.set_faults(faults)
        sandbox.start()
        yield sandbox
    finally:
        sandbox.close()


def new_admin_secret() -> str:
    return secrets.token_urlsafe(24)
