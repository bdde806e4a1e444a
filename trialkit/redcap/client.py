"""A careful PyCap wrapper for jobs that must not lose or duplicate data.

PyCap 2.7.0 is a thin transport: it never looks at status codes, sets no timeout, has no retries, and some
calls swallow server errors (see shared reference, PyCap blind spots). This wrapper adds what a nightly job
needs on top of it, and nothing else:

- the token comes from an environment variable or a 0600 file, is held in a `Token` that never prints, and
  is scrubbed from every error message;
- every request has a timeout; transient failures (dropped connection, timeout, a 5xx or an HTML fatal page
  instead of JSON) are retried with exponential backoff; REDCap's own error replies are not retried,
  because sending the same bad request again cannot help;
- exports are chunked by *record* (never by row: a record's events must not straddle chunks), and a
  "ran out of server memory" reply halves the chunk;
- imports are chunked by record, ask for the written ids back (never `returnContent=nothing`, which hides
  errors) and can be verified by reading back.

Retrying an import is safe because a flat import keyed by record, event and instance is idempotent: sending
the same rows twice leaves the same data. Rows that auto-number (`redcap_repeat_instance = new`) are not
idempotent, so they are never retried.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import requests
from redcap import Project

from trialkit.errors import RedcapError, UsageError

T = TypeVar("T")

DEFAULT_TOKEN_ENV = "REDCAP_API_TOKEN"
_MEMORY_ERROR = "ran out of server memory"


class Token:
    """A REDCap API token that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if len(value) not in (32, 64) or not value.isalnum():
            raise UsageError("the REDCap API token must be 32 (or 64 for a super token) letters and digits")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__


def load_token(env: str | None = DEFAULT_TOKEN_ENV, file: str | Path | None = None) -> Token:
    """Read the token from a file readable only by its owner, else from an environment variable.

    Never from argv: command lines are visible to every user of the machine and end up in shell history.
    """
    if file is not None:
        path = Path(file)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"the token file {path} is readable by others: run `chmod 600 {path}`")
        return Token(path.read_text(encoding="utf-8"))
    if env and os.environ.get(env):
        return Token(os.environ[env])
    raise UsageError(f"no REDCap token: set the environment variable {env or DEFAULT_TOKEN_ENV} or give a token file")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.5  # seconds before the second attempt; doubles each time
    max_backoff: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.backoff
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff)


@dataclass
class CallStats:
    """What a client has cost so far: HTTP requests, bytes each way, retries (for summaries and progress)."""

    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retries: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "retries": self.retries}


class _Transient(Exception):
    """A failure worth retrying; carries the scrubbed reason."""


class _ServerMemory(Exception):
    """REDCap refused the size of the request; retry with less."""


class RedcapClient:
    """One REDCap project, reached through PyCap with timeouts, retries, chunking and error mapping."""

    def __init__(
        self,
        url: str,
        token: Token,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        chunk_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
        requests_per_second: float | None = None,
    ) -> None:
        if not url.endswith("/api/"):
            raise UsageError(f"the REDCap API URL must end with /api/ (got {url})")
        _require_scheme(url)
        self.url = url
        self._token = token
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self.chunk_size = max(1, chunk_size)
        # spacing between requests, so a job stays under a server's API rate limit instead of tripping it
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._last_request = float("-inf")
        self.calls: list[str] = []  # what each request was ("metadata import", ...), for reports and tests
        self.stats = CallStats()
        self._status = 0
        #: called as on_retry(what, reason, delay) before each retry, for progress and logs
        self.on_retry: Callable[[str, str, float], None] | None = None
        # a requests hook sees every HTTP exchange PyCap makes, retries included, with its real sizes
        self._project = Project(url, token.reveal(), timeout=timeout, hooks={"response": self._count})

    def __repr__(self) -> str:
        return f"RedcapClient({self.url!r})"

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.stats.calls += 1
        self._status = response.status_code  # PyCap's errors drop it; a refused token is told by it
        body = response.request.body if response.request is not None else None
        self.stats.bytes_sent += len(body) if body else 0
        self.stats.bytes_received += len(response.content or b"")

    # -- the retry loop -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], *, retry: bool = True, shrinkable: bool = False) -> T:
        """Run one API call with retries. `shrinkable` callers handle REDCap's out-of-memory reply themselves
        (by asking for less); for everyone else it is a plain RedcapError."""
        delays = self._retry.delays() if retry else iter(())
        while True:
            try:
                return self._classify(what, fn)
            except _ServerMemory as exc:
                if shrinkable:
                    raise
                raise RedcapError(f"REDCap {what} failed: {exc}") from None
            except _Transient as exc:
                delay = next(delays, None)
                if delay is None:
                    raise RedcapError(f"REDCap {what} failed after {self._retry.attempts} attempts: {exc}") from None
                self.stats.retries += 1
                if self.on_retry is not None:
                    self.on_retry(what, str(exc), delay)
                self._sleep(delay)

    def _classify(self, what: str, fn: Callable[[], T]) -> T:
        if self._interval:
            wait = self._last_request + self._interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()
        self.calls.append(what)
        self._status = 0
        try:
            return fn()
        except requests.exceptions.JSONDecodeError as exc:
            # A 200 or 5xx whose body is not JSON: a proxy error page, or REDCap's PHP fatal-error block
            # followed by its out-of-memory JSON error (what too large a request gets).
            if _MEMORY_ERROR in (getattr(exc, "doc", "") or "").lower():
                raise _ServerMemory("REDCap ran out of server memory (PHP fatal error page)") from None
            raise _Transient("the server's reply was not valid JSON (server error page?)") from None
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,  # the connection dropped part-way through the reply
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _Transient(f"network: {type(exc).__name__} talking to {self.url}") from None
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL):
            raise UsageError(_url_fix(self.url)) from None
        except requests.RequestException as exc:
            message = self._token.scrub(_error_text(exc))
            if _MEMORY_ERROR in message.lower():
                raise _ServerMemory(message) from None
            if _looks_transient(message):  # first: some servers answer a rate limit or a proxy page with a 403
                raise _Transient(message) from None
            if self._status in (401, 403):
                # not the network: sending the same token again cannot help, the configuration must change
                raise UsageError(f"REDCap {what} refused: {message} ({_TOKEN_FIX})") from None
            raise RedcapError(f"REDCap {what} failed: {message}") from None
        except AssertionError as exc:  # PyCap asserts on reply shapes it did not expect
            raise _Transient(self._token.scrub(f"unexpected reply ({exc})")) from None

    # -- reading -------------------------------------------------------------------------------------

    @property
    def def_field(self) -> str:
        """The record id field: the dictionary's first field (exported once; later reads use PyCap's copy, so they
        are not requests and are not counted in `calls`)."""
        if getattr(self._project, "_metadata", None) is None:
            self.metadata()  # checked for its shape before PyCap reads its first row's field name
        if not self._project._metadata:
            raise RedcapError("REDCap metadata export: the project has no fields")
        return self._project.def_field

    def metadata(self) -> list[dict[str, str]]:
        rows = _rows("metadata export", self._call("metadata export", lambda: self._project.export_metadata()))
        if hasattr(self._project, "_metadata"):
            # PyCap 2.7's cache, which def_field reads: the fresh copy serves it too (one fetch per job)
            self._project._metadata = rows
        return rows

    def record_ids(
        self,
        *,
        filter_logic: str | None = None,
        changed_since: datetime | None = None,
        changed_until: datetime | None = None,
    ) -> list[str]:
        """Every record id (first-seen order), optionally only those matching logic or changed in a window
        (REDCap's dateRangeBegin/End, in the server's local time)."""
        def_field = self.def_field
        rows = self._call(
            "record id export",
            lambda: self._project.export_records(
                fields=[def_field],
                filter_logic=filter_logic,
                date_begin=changed_since,
                date_end=changed_until,
            ),
        )
        return list(dict.fromkeys(str(row[def_field]) for row in rows))

    def export_records(
        self,
        records: Sequence[str] | None = None,
        *,
        fields: Sequence[str] | None = None,
        forms: Sequence[str] | None = None,
        events: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Flat rows of the given records (all when None), fetched record-chunk by record-chunk."""
        ids = list(records) if records is not None else self.record_ids()
        rows: list[dict[str, Any]] = []
        for chunk in self._record_chunks(
            ids,
            lambda chunk: self._project.export_records(
                records=chunk,
                fields=list(fields) if fields else None,
                forms=list(forms) if forms else None,
                events=list(events) if events else None,
            ),
        ):
            rows.extend(chunk)
        return rows

    def _record_chunks(self, ids: Sequence[str], export: Callable[[list[str]], T],
                       on_chunk: Callable[[int, int], None] | None = None) -> Iterator[T]:
        """One export call per chunk of record ids; REDCap's out-of-memory reply halves the chunk."""
        size = self.chunk_size
        start = 0
        while start < len(ids):
            chunk = list(ids[start : start + size])
            try:
                reply = self._call("record export", lambda chunk=chunk: export(chunk), shrinkable=True)
            except _ServerMemory as exc:
                if size == 1:
                    raise RedcapError(f"REDCap record export failed even one record at a time: {exc}") from None
                size = max(1, size // 2)
                continue
            start += len(chunk)
            yield reply
            if on_chunk is not None:
                on_chunk(start, len(ids))

    def export_frame(
        self,
        records: Sequence[str] | None = None,
        *,
        fields: Sequence[str] | None = None,
        changed_since: datetime | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> pl.DataFrame:
        """Flat rows as a polars frame of text (blank -> null), exported as CSV record-chunk by record-chunk.

        CSV read by polars never builds Python rows: a JSON export of 20,000 records decoded into dicts costs
        several times the CSV path. `on_chunk(records_done, records_total)` reports progress.
        """
        ids = list(records) if records is not None else self.record_id_frame(changed_since=changed_since).to_list()
        def_field = self.def_field
        frames = [
            csv_frame(text)
            for text in self._record_chunks(
                ids,
                lambda chunk: _csv_reply(
                    self._project.export_records(
                        format_type="csv", records=chunk, fields=list(fields) if fields else None
                    ),
                    def_field,
                ),
                on_chunk,
            )
        ]
        frames = [f for f in frames if f.width]
        return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()

    def record_id_frame(
        self, *, changed_since: datetime | None = None, changed_until: datetime | None = None
    ) -> pl.Series:
        """Every record id (first-seen order) in one CSV call, optionally only those changed in a window
        (REDCap's dateRangeBegin/End, server local time). CSV: a longitudinal project answers with a row per
        record-event-instance, and as JSON each row repeats the field name, several times the bytes of the ids."""
        def_field = self.def_field
        text = self._call(
            "record id export",
            lambda: _csv_reply(
                self._project.export_records(
                    format_type="csv", fields=[def_field], date_begin=changed_since, date_end=changed_until
                ),
                def_field,
            ),
        )
        frame = csv_frame(text)
        if not frame.width:
            return pl.Series(def_field, [], dtype=pl.String)
        return frame[def_field].unique(maintain_order=True)

    def next_record_name(self) -> str:
        """REDCap's next auto-number (the highest numeric id + 1); not a reservation."""
        return str(self._call("next record name", lambda: self._project.generate_next_record_name())).strip()

    def changed_ids(self, since: datetime, *, until: datetime | None = None) -> list[str]:
        """The ids of records changed in a window, first-seen order (see record_id_frame)."""
        return self.record_id_frame(changed_since=since, changed_until=until).drop_nulls().to_list()

    def export_changed(self, since: datetime, *, with_dag_column: bool = False) -> tuple[pl.DataFrame, bool]:
        """Every row of the records changed since `since` (REDCap's dateRangeBegin, server local time), in one
        CSV call; when REDCap runs out of memory on it, by the id list and record chunks instead.

        Returns the frame and whether REDCap sent its `redcap_data_access_group` column (asked for with
        `with_dag_column`; dropped from the frame). REDCap sends it only to a user in no group, in a project
        that has groups: a way to learn that the user sees every record without another call."""
        def_field = self.def_field
        try:
            text = self._call(
                "changed record export",
                lambda: _csv_reply(
                    self._project.export_records(format_type="csv", date_begin=since,
                                                 export_data_access_groups=with_dag_column),
                    def_field,
                ),
                shrinkable=True,
            )
            frame = csv_frame(text)
        except _ServerMemory:
            frame = self.export_frame(changed_since=since)
        dag_column = "redcap_data_access_group" in frame.columns
        return (frame.drop("redcap_data_access_group") if dag_column else frame), dag_column

    def dags(self) -> list[dict[str, Any]]:
        """The project's Data Access Groups ([] when it has none)."""
        return _rows("data access group export",
                     self._call("data access group export", lambda: self._project.export_dags()))

    def log_entries(self, logtype: str, since: datetime) -> list[dict[str, Any]]:
        """REDCap's log (`content=log`) of one type since `since` (server local time; REDCap takes the minute).

        Needs the user's Logging right; a refusal is a RedcapError like any other."""
        return _rows("log export", self._call(
            "log export", lambda: self._project.export_logging(log_type=logtype, begin_time=since)))

    def seed_metadata(self, rows: list[dict[str, str]]) -> None:
        """Use a data dictionary known to be current (kept from an earlier run) instead of exporting it."""
        if hasattr(self._project, "_metadata"):
            self._project._metadata = rows

    # -- project design ------------------------------------------------------------------------------

    def project_info(self) -> dict[str, Any]:
        info = self._call("project info export", lambda: self._project.export_project_info())
        if not isinstance(info, dict) or "project_id" not in info:
            raise RedcapError(f"REDCap project info export: {_NOT_REDCAP}")
        return info

    def instruments(self) -> list[dict[str, str]]:
        return _rows("instrument export", self._call("instrument export", lambda: self._project.export_instruments()))

    def arms(self) -> list[dict[str, Any]]:
        return _rows("arm export", self._call("arm export", lambda: self._project.export_arms()))

    def events(self) -> list[dict[str, Any]]:
        return _rows("event export", self._call("event export", lambda: self._project.export_events()))

    def form_event_mappings(self) -> list[dict[str, Any]]:
        what = "form-event mapping export"
        return _rows(what, self._call(what, lambda: self._project.export_instrument_event_mappings()))

    def repeating(self) -> list[dict[str, str]]:
        """The repeating set-up; [] when the project has none (REDCap answers that case with an error)."""
        try:
            return self._call("repeating set-up export", lambda: self._project.export_repeating_instruments_events())
        except RedcapError as exc:
            if "does not contain any repeating" in exc.message:
                return []
            raise

    # Design imports are replayable (each one states the whole wanted set, or adds keyed rows), so they retry.
    def import_metadata(self, rows: Sequence[Mapping[str, str]]) -> int:
        """Replace the whole data dictionary (REDCap allows this in development status only)."""
        return self._call("metadata import", lambda: self._project.import_metadata([dict(r) for r in rows]))

    def import_arms(self, rows: Sequence[Mapping[str, Any]]) -> int:
        # never override=1: it deletes every arm, event and mapping (and so their data) before importing
        return self._call("arm import", lambda: self._project.import_arms([dict(r) for r in rows], override=0))

    def import_events(self, rows: Sequence[Mapping[str, Any]]) -> int:
        return self._call("event import", lambda: self._project.import_events([dict(r) for r in rows], override=0))

    def delete_events(self, names: Sequence[str]) -> int:
        return self._call("event delete", lambda: self._project.delete_events(list(names)))

    def delete_arms(self, numbers: Sequence[int]) -> int:
        return self._call("arm delete", lambda: self._project.delete_arms([str(n) for n in numbers]))

    def import_form_event_mappings(self, rows: Sequence[Mapping[str, Any]]) -> int:
        return self._call("form-event mapping import",
                          lambda: self._project.import_instrument_event_mappings([dict(r) for r in rows]))

    def import_repeating(self, rows: Sequence[Mapping[str, str]]) -> int:
        return self._call("repeating set-up import",
                          lambda: self._project.import_repeating_instruments_events([dict(r) for r in rows]))

    # -- writing -------------------------------------------------------------------------------------

    def import_records(self, rows: Sequence[Mapping[str, Any]], *, overwrite: bool = False) -> list[str]:
        """Write flat rows record-chunk by record-chunk; returns the ids REDCap says it wrote.

        With `overwrite=False` (REDCap's "normal") a blank cell leaves the stored value alone; pass
        `overwrite=True` only when blanks are meant to clear, and then only with the fields to clear.
        """
        def_field = self.def_field
        written: list[str] = []
        for chunk in _chunks_by_record(rows, def_field, self.chunk_size):
            written.extend(self.import_batch(chunk, overwrite=overwrite))
        return written

    def import_batch(self, rows: Sequence[Mapping[str, Any]], *, overwrite: bool = False) -> list[str]:
        """One import call (no chunking): the ids REDCap says it wrote. Retried only when replaying is safe."""
        replayable = all(str(row.get("redcap_repeat_instance", "")) != "new" for row in rows)
        ids = self._call(
            "record import",
            lambda: self._project.import_records(
                [dict(row) for row in rows],
                overwrite="overwrite" if overwrite else "normal",
                return_content="ids",
            ),
            retry=replayable,
        )
        return [str(i) for i in ids]

    def verify(self, rows: Sequence[Mapping[str, Any]], *, blanks_clear: bool = False) -> list[str]:
        """Read written rows back; return one message per cell REDCap does not hold as sent."""
        def_field = self.def_field
        wanted = {_row_key(row, def_field): row for row in rows}
        fields = sorted({k for row in rows for k in row if not k.startswith("redcap_")} - {def_field})
        have = {
            _row_key(row, def_field): row
            for row in self.export_records(list(dict.fromkeys(str(r[def_field]) for r in rows)),
                                           fields=[def_field, *_base_fields(fields)])
        }
        problems = []
        for key, row in wanted.items():
            stored = have.get(key)
            if stored is None:
                problems.append(f"record {key[0]}: row {key[1:]} missing after import")
                continue
            for name in fields:
                sent = "" if row.get(name) is None else str(row.get(name))
                if sent == "" and not blanks_clear:
                    continue
                if str(stored.get(name, "")) != sent:
                    problems.append(f"record {key[0]}: field {name} holds {stored.get(name)!r}, sent {sent!r}")
        return problems


_NOT_REDCAP = ("the server's reply is not a REDCap API reply (check that the URL is the project's API address, "
               "https://<server>/api/)")


def _rows(what: str, reply: Any) -> list[dict[str, Any]]:
    """A JSON export's reply as REDCap gives it, a list of objects; anything else did not come from REDCap's API
    (another web service at that URL), and must be said so rather than crash whoever reads the rows."""
    if not isinstance(reply, list) or not all(isinstance(row, dict) for row in reply):
        raise RedcapError(f"REDCap {what}: {_NOT_REDCAP}")
    return reply


def _csv_reply(text: str, def_field: str) -> str:
    """REDCap's CSV export as it came, or the failure it hides: PyCap hands back any text body (a proxy's error
    page, PHP's fatal-error block) as if it were CSV."""
    head = text.lstrip("\ufeff")[:200].lower()
    if _MEMORY_ERROR in text[:2000].lower():
        raise _ServerMemory("REDCap ran out of server memory")
    if head.strip() and not head.startswith((def_field.lower(), f'"{def_field.lower()}"')):
        raise _Transient("the server's reply was not the CSV asked for (server error page?)")
    return text.lstrip("\ufeff")


def csv_frame(text: str) -> pl.DataFrame:
    """A REDCap CSV export as text cells (blank -> null); an empty export is an empty frame."""
    if not text.strip():
        return pl.DataFrame()
    return pl.read_csv(io.StringIO(text), infer_schema=False, null_values=[""])


def _base_fields(columns: Iterable[str]) -> list[str]:
    # checkbox columns are requested by their base name; <form>_complete columns by themselves
    return list(dict.fromkeys(c.split("___")[0] for c in columns))


def _row_key(row: Mapping[str, Any], def_field: str) -> tuple[str, str, str, str]:
    return (
        str(row[def_field]),
        str(row.get("redcap_event_name", "") or ""),
        str(row.get("redcap_repeat_instrument", "") or ""),
        str(row.get("redcap_repeat_instance", "") or ""),
    )


def _chunks_by_record(rows: Sequence[Mapping[str, Any]], def_field: str, size: int) -> Iterator[list]:
    by_record: dict[str, list] = {}
    for row in rows:
        if def_field not in row:
            raise UsageError(f"a row to import has no {def_field} (the record id field)")
        by_record.setdefault(str(row[def_field]), []).append(row)
    ids = list(by_record)
    for start in range(0, len(ids), size):
        yield [row for rid in ids[start : start + size] for row in by_record[rid]]


def _error_text(exc: requests.RequestException) -> str:
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, dict):
        return str(arg.get("error", arg))
    return str(arg)


_TOKEN_FIX = ("check that the token is this project's, from its API page, and that its user has the API rights "
              "the job needs; and that the URL is this project's server")


def _url_fix(url: str) -> str:
    return f"the REDCap API URL must be http(s)://host/.../api/, e.g. https://redcap.example.org/api/ (got {url})"


def _require_scheme(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UsageError(_url_fix(url))
    if parts.scheme.lower() == "http" and not _loopback(parts.hostname):
        # the token travels in every request body: over plain http it could be read on the way
        raise UsageError("the REDCap API URL must start with https:// (over http:// the token would cross the "
                         "network readable); http:// is only for a server on this machine (127.0.0.1, localhost)")


def _loopback(host: str | None) -> bool:
    import ipaddress

    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _looks_transient(message: str) -> bool:
    lowered = message.lower()
    return any(
        hint in lowered
        for hint in ("<html", "fatal error", "service unavailable", "gateway", "too many requests", "rate limit",
                     "maximum number of api requests")
    )
