"""The HTTP side: the sandbox's WSGI application (wsgi.py) served by waitress on loopback, at `/api/`.

`running_sandbox(...)` starts one on a free port in a background thread (for tests and demos);
`Sandbox.serve_forever()` is what `trialkit sandbox serve` runs. The token is never logged: request logging,
when enabled, prints only method, path, `content` and status.

Why waitress: a pure-Python production WSGI server, maintained by the Pylons project, that reads requests
asynchronously: a slow or stalled client holds no thread (only complete requests reach the worker threads), and
it enforces the transport limits itself: request header size, body size (also for chunked bodies, which it
de-chunks), connection count and idle time. It spools large bodies to a temporary file, not memory. The limits
used are `wsgi.Limits`.

An admin endpoint (`POST /admin/<action>`, JSON body) lets a test harness in another process create or reset
projects and set faults. It exists only when the server is started with an admin secret, and every call must
carry that secret in the `X-Trialkit-Admin` header.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from trialkit.errors import UsageError
from trialkit.redcap.sandbox import api  # noqa: F401  (tests patch server.api.handle)
from trialkit.redcap.sandbox.faults import FaultInjector, FaultPlan
from trialkit.redcap.sandbox.project import ProjectSpec, check_metadata
from trialkit.redcap.sandbox.storage import DESIGN_FIELDS, Storage
from trialkit.redcap.sandbox.wsgi import ADMIN_HEADER, Limits, SandboxApp, parse_form, report_internal_error

_CONTENT_NAME = re.compile(r"\w{1,40}")

__all__ = ["ADMIN_HEADER", "Limits", "Sandbox", "new_admin_secret", "parse_form", "report_internal_error",
           "running_sandbox"]


class Sandbox:
    """A running (or ready to run) sandbox server: storage + HTTP server + fault injector."""

    def __init__(self, *, db: str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 admin_secret: str | None = None, clock: Callable[[], dt.datetime] | None = None,
                 log_requests: bool = False, limits: Limits | None = None) -> None:
        self.storage = Storage(db, clock=clock)
        self.faults = FaultInjector()
        self.admin_secret = admin_secret
        self.log_requests = log_requests
        self.limits = limits or Limits()
        self.token: str | None = None
        self._map: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._server = _create_server(SandboxApp(self, self.limits), self._map, host, port, self.limits)
        except BaseException:
            self.storage.close(remove_created=True)  # a failed start leaves no new database file behind
            raise

    @property
    def url(self) -> str:
        host, port = self._server.effective_host, self._server.effective_port
        if ":" in str(host):
            host = f"[{host}]"
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

    def open_project(self, spec: ProjectSpec | None = None, token: str | None = None, *,
                     replace: bool = False) -> str:
        """Pick the project to serve from the database, as `trialkit sandbox serve` does, and make it `self.token`.

        The project of `token` (default: the first one stored) is served as stored. A `spec` creates the project
        when the database has none (or not that token); given for a stored project with another design it is
        refused unless `replace` (then the stored design is replaced, records kept): a mistyped --study must not
        silently hide a project's data.
        """
        existing = self.storage.tokens()
        chosen = token if token is not None else (existing[0] if existing else None)
        if chosen is not None and chosen in existing:
            if spec is not None and not self.storage.same_design(chosen, spec):
                if not replace:
                    title, records = self.storage.summary(chosen)
                    raise UsageError(
                        f"{self.storage.path}: holds the project {title!r} ({records} records) with a different "
                        "design; replacing its design needs --replace (replace=True); its records are kept")
                # the design is replaced; what is not design (the project's status, its user) stays as stored
                stored = self.storage.stored_spec(chosen)
                self.redefine(stored.with_(**{k: getattr(spec, k) for k in DESIGN_FIELDS}), chosen)
        elif spec is not None:
            chosen = self.create_project(spec, chosen)
        else:
            raise UsageError(f"{self.storage.path} holds no project yet: give --study, --dictionary or "
                             "--project-xml to create one")
        self.token = chosen
        return chosen

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
        self._thread = threading.Thread(target=self._loop, name="trialkit-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until closed: what `trialkit sandbox serve` runs, a process of its own, so its
        garbage collector is tuned for the server (`own_process`)."""
        own_process(self.storage, [self.token] if self.token else [])  # the project it serves
        self._loop()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with suppress(OSError):
                self._server.pull_trigger()  # wake the loop at once
            self._thread.join(timeout=15)
            self._thread = None
        else:
            self._shutdown()
        self.storage.close()

    def _loop(self) -> None:
        reading: dict[Any, tuple[Any, float]] = {}
        next_check = 0.0
        try:
            while not self._stop.is_set() and self._map:
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
                now = time.monotonic()
                if now >= next_check:
                    reading = self._close_overdue(reading, now)
                    next_check = now + 1.0
        finally:
            self._shutdown()

    def _close_overdue(self, reading: dict[Any, tuple[Any, float]], now: float) -> dict[Any, tuple[Any, float]]:
        """Close connections whose current request has been arriving for longer than `limits.request_timeout`.

        waitress's channel_timeout counts silence only, so a client sending a byte now and then would keep a
        connection for ever; this bounds the whole request. `channel.request` is the request waitress is still
        reading (None between requests); a channel with a request being answered is left alone.
        """
        still: dict[Any, tuple[Any, float]] = {}
        for channel in list(self._map.values()):
            request = getattr(channel, "request", None)
            if request is None or getattr(channel, "requests", None):
                continue
            seen, since = reading.get(channel, (None, now))
            if seen is not request:
                since = now
            if now - since > self.limits.request_timeout:
                with suppress(OSError):
                    channel.handle_close()
                continue
            still[channel] = (request, since)
        return still

    def _shutdown(self) -> None:
        # In the loop's own thread (or after it): waitress's socket map is not thread-safe. New connections are no
        # longer accepted; the worker threads finish what they are answering while the loop still sends their
        # output and wakes on their trigger; only then are the connections and the trigger closed.
        self._server.accepting = False
        stopped = threading.Event()

        def stop_workers() -> None:
            self._server.task_dispatcher.shutdown(timeout=5)
            stopped.set()
            with suppress(OSError):
                self._server.pull_trigger()  # wake the loop below at once

        workers = threading.Thread(target=stop_workers, name="trialkit-sandbox-stop", daemon=True)
        workers.start()
        while not stopped.is_set() and self._map:
            wasyncore.loop(timeout=0.5, map=self._map, use_poll=True, count=1)
        workers.join()
        for channel in list(self._map.values()):
            with suppress(OSError):
                channel.close()
        self._map.clear()

    def _log_request(self, content: str, status: int) -> None:
        if self.log_requests:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            shown = status if status else "dropped"
            # the content parameter is request text: only a plain name is printed
            name = (content if _CONTENT_NAME.fullmatch(content) else "?") if content else "-"
            print(f"{stamp} POST /api/ content={name} -> {shown}", file=sys.stderr, flush=True)


def own_process(storage: Storage, tokens: list[str]) -> None:
    """Prepare a process that only serves the sandbox: load what the first import into the projects of `tokens`
    would, then freeze the heap.

    An import batch (500 KAP-TRD records: ~9,000 row dicts kept until its reply) makes Python's cyclic garbage
    collector run full collections, each of which walked every object of the process, the ~10^5 of polars,
    trialkit and waitress included. `gc.freeze()` moves what exists after start-up (modules, project designs,
    compiled calc plans) out of the collector's generations: it is never freed anyway, and the collector's
    share of a batch falls to ~10 ms. Only for a process the server owns (`serve_forever`): a sandbox running in
    a thread of another program (`running_sandbox`) leaves that program's collector alone."""
    from trialkit.redcap.sandbox import calcs, filtering  # noqa: F401  (imports the first import would pay)

    con = storage.connect()
    try:
        for token in tokens:
            found = storage.project_for_token(con, token)
            if found is not None and found[1].spec.compute_calcs:
                _warm_calcs(found[1], storage.clock().date())
    finally:
        con.close()
    gc.collect()
    gc.freeze()


def _warm_calcs(schema: Any, today: dt.date) -> None:
    """Parse the design's calculated fields and compile their evaluation (kept on the Schema and in the logic
    engine's plan cache) on one blank row of each kind, as an import touching every kind of row would: the
    first import batch paid ~50 ms for it (and polars' first use of numpy)."""
    plan = schema.calc_plan
    if not plan.calcs:
        return
    rows: dict[tuple[str, str, str, int], dict[str, str]] = {}
    for event in schema.event_forms:
        rows[("", event, "", 0)] = {}
        for form in schema.repeating_forms.get(event, ()):
            rows[("", event, form, 1)] = {}
    with suppress(Exception):  # a warm-up only: the import that needs it reports what goes wrong
        plan.apply(rows, today)


@contextmanager
def running_sandbox(spec: ProjectSpec | None = None, *, db: str | Path | None = None, token: str | None = None,
                    host: str = "127.0.0.1", port: int = 0, faults: FaultPlan | None = None,
                    admin_secret: str | None = None, clock: Callable[[], dt.datetime] | None = None,
                    log_requests: bool = False, limits: Limits | None = None) -> Iterator[Sandbox]:
    """A sandbox serving on a free loopback port in a background thread; closed on exit.

    >>> with running_sandbox(ProjectSpec.classic(rows)) as sb:     # doctest: +SKIP
    ...     proj = redcap.Project(sb.url, sb.token)
    """
    sandbox = Sandbox(db=db, host=host, port=port, admin_secret=admin_secret, clock=clock, log_requests=log_requests,
                      limits=limits)
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


def _create_server(app: SandboxApp, socket_map: dict, host: str, port: int, limits: Limits) -> Any:
    server = create_server(
        app, map=socket_map, host="127.0.0.1" if host == "localhost" else host, port=port,
        threads=limits.threads,
        channel_timeout=limits.channel_timeout,
        cleanup_interval=max(1, min(30, limits.channel_timeout // 2)),
        connection_limit=limits.connection_limit,
        max_request_header_size=limits.max_header,
        max_request_body_size=limits.max_body,
        # replies stay in memory up to the high-water mark (the exporting thread waits there), not temp files;
        # 4 MB rather than waitress's 16 MB keeps the server's memory flat during a large export
        outbuf_overflow=16 << 20,
        outbuf_high_watermark=4 << 20,
        backlog=128,
        # a request body is read from the socket 256 KB at a time (waitress's 8 KB meant ~640 reads through the
        # event loop per 5 MB import batch) and kept in memory up to `limits.body_in_memory`, beyond which waitress
        # spools it to a temporary file (its 512 KB default wrote and re-read every import batch)
        recv_bytes=1 << 18,
        inbuf_overflow=limits.body_in_memory,
        asyncore_use_poll=True,  # no select() limit of 1024 descriptors
        log_socket_errors=False,  # a client hanging up (or a dropped-connection fault) is not a server error
        ident="trialkit-sandbox",
    )
    return server


def new_admin_secret() -> str:
    return secrets.token_urlsafe(24)
