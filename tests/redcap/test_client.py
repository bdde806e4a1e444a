"""RedcapClient against the real sandbox over HTTP: retries, chunking, error mapping, token hygiene."""

from __future__ import annotations

import os
import time

import pytest
from sandbox_data import longitudinal_spec

from trialkit.errors import RedcapError, UsageError
from trialkit.redcap.client import RedcapClient, RetryPolicy, Token, load_token
from trialkit.redcap.sandbox import FaultPlan


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def project_token(sandbox):
    token = sandbox.create_project(longitudinal_spec())
    yield token
    sandbox.set_faults(None)
    sandbox.drop_project(token)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sandbox, project_token, sleeps) -> RedcapClient:
    return RedcapClient(
        sandbox.url, Token(project_token), timeout=10, chunk_size=2,
        retry=RetryPolicy(attempts=3, backoff=0.01), sleep=sleeps,
    )


def screening_rows(n: int) -> list[dict[str, str]]:
    return [
        {"record_id": str(i), "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "",
         "redcap_repeat_instance": "", "consent_date": f"2025-01-{i:02d}", "sbp": str(120 + i)}
        for i in range(1, n + 1)
    ]


def session_rows(record: str, n: int) -> list[dict[str, str]]:
    return [
        {"record_id": record, "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
         "redcap_repeat_instance": str(k), "ses_date": f"2025-02-{k:02d}", "ses_dose": "0.5"}
        for k in range(1, n + 1)
    ]


def test_token_never_shows_itself():
    token = Token("A" * 32)
    assert "A" * 8 not in repr(token) and "A" * 8 not in str(token) and "A" * 8 not in f"{token}"
    assert token.scrub(f"failed for {'A' * 32}!") == "failed for ***!"
    with pytest.raises(UsageError):
        Token("short")


def test_token_from_env_and_from_private_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TK_TEST_TOKEN", "B" * 32)
    assert load_token("TK_TEST_TOKEN").reveal() == "B" * 32
    secret = tmp_path / "token"
    secret.write_text("C" * 32 + "\n")
    os.chmod(secret, 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        load_token(file=secret)
    os.chmod(secret, 0o600)
    assert load_token(file=secret).reveal() == "C" * 32
    monkeypatch.delenv("TK_TEST_TOKEN")
    with pytest.raises(UsageError, match="TK_TEST_TOKEN"):
        load_token("TK_TEST_TOKEN")


def test_url_must_be_the_api_endpoint():
    with pytest.raises(UsageError, match="/api/"):
        RedcapClient("http://127.0.0.1:1/redcap/", Token("D" * 32))


@pytest.mark.parametrize("url", ["http://redcap.example.org/api/", "http://10.0.0.5/redcap/api/", "HTTP://h/api/"])
def test_a_token_never_goes_to_another_machine_over_plain_http(url):
    # README: a URL without https:// exits 2 with the fix (the token would cross the network readable)
    with pytest.raises(UsageError, match="https://") as info:
        RedcapClient(url, Token("D" * 32))
    assert "D" * 32 not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/api/", "http://localhost:8765/api/", "http://[::1]:1/api/",
                                 "https://redcap.example.org/api/"])
def test_https_and_this_machine_over_http_are_fine(url):
    assert RedcapClient(url, Token("D" * 32)).url == url


def test_import_and_export_are_chunked_by_record(client, sandbox, project_token):
    rows = screening_rows(5) + session_rows("1", 3) + session_rows("4", 2)
    written = client.import_records(rows)
    assert sorted(set(written), key=int) == ["1", "2", "3", "4", "5"]
    back = client.export_records()
    # every row comes back once, although a record's rows span two events and chunks hold two records
    keys = sorted((r["record_id"], r["redcap_event_name"], str(r["redcap_repeat_instance"])) for r in back)
    assert len(keys) == len(set(keys)) == 10
    assert client.verify(rows) == []


def test_dropped_connections_are_retried_with_backoff(client, sandbox, sleeps):
    client.import_records(screening_rows(3))
    sandbox.set_faults(FaultPlan(kind="drop", next_n=2))
    assert len(client.export_records()) == 3
    assert sleeps == [0.01, 0.02]


def test_http_500_is_retried(client, sandbox, sleeps):
    client.import_records(screening_rows(2))
    sandbox.set_faults(FaultPlan(kind="http500", next_n=1))
    assert len(client.export_records()) == 2
    assert sleeps == [0.01]


def test_rate_limit_is_waited_out(sandbox, project_token):
    waited = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        time.sleep(seconds)

    client = RedcapClient(sandbox.url, Token(project_token), sleep=sleep,
                          retry=RetryPolicy(attempts=8, backoff=0.05))
    client.import_records(screening_rows(3))
    sandbox.set_faults(FaultPlan(kind="slow", delay=0, rate_limit=2, rate_window=0.3))
    for _ in range(3):
        assert len(client.export_records()) == 3
    assert waited, "the limit of 2 requests per 0.3 s must have been hit"


def test_reply_lost_after_commit_does_not_duplicate(client, sandbox, project_token):
    # the server commits the import, then drops the connection: the client sends it again
    sandbox.set_faults(FaultPlan(kind="drop_after", next_n=1, contents=("record",)))
    rows = session_rows("7", 3)
    client.import_records(screening_rows(7)[-1:] + rows)
    sandbox.set_faults(None)
    back = client.export_records(["7"])
    sessions = [r for r in back if r["redcap_repeat_instrument"] == "session"]
    assert sorted(str(r["redcap_repeat_instance"]) for r in sessions) == ["1", "2", "3"]


def test_server_memory_error_halves_the_chunk(sandbox, project_token, sleeps):
    client = RedcapClient(sandbox.url, Token(project_token), chunk_size=4, sleep=sleeps,
                          retry=RetryPolicy(attempts=2, backoff=0.01))
    client.import_records(screening_rows(6))
    sandbox.set_faults(FaultPlan(kind="html_fatal", next_n=1, contents=("record",)))
    assert len(client.export_records(["1", "2", "3", "4", "5", "6"])) == 6
    assert sandbox.faults.injected == 1
    assert sleeps == [], "an out-of-memory page is answered by asking for less, not by waiting and resending"


def test_redcap_error_replies_are_not_retried_and_carry_no_token(client, sandbox, project_token, sleeps):
    bad = screening_rows(2)
    bad[1]["sbp"] = "high"
    with pytest.raises(RedcapError) as info:
        client.import_records(bad)
    assert "sbp" in str(info.value) and "high" in str(info.value)
    assert project_token not in str(info.value)
    assert sleeps == []
    # all-or-nothing: the good row of the rejected batch was not written either
    assert client.export_records() == []


def test_exhausted_retries_name_the_operation(client, sandbox, project_token):
    sandbox.set_faults(FaultPlan(kind="drop", share=1.0))
    with pytest.raises(RedcapError, match="failed after 3 attempts") as info:
        client.record_ids()
    assert project_token not in str(info.value)


def test_bad_token_is_a_clear_error(sandbox, project_token, sleeps):
    client = RedcapClient(sandbox.url, Token("E" * 32), sleep=sleeps)
    # a configuration error (exit 2, with the fix), not a network failure to rerun
    with pytest.raises(UsageError, match=r"permissions to use the API.*check that the token"):
        client.record_ids()
    assert sleeps == []


def test_verify_reports_cells_that_differ(client, sandbox, project_token):
    rows = screening_rows(2)
    client.import_records(rows)
    sandbox.project(project_token).import_records(
        [{"record_id": "2", "redcap_event_name": "screening_arm_1", "sbp": "99"}]
    )
    problems = client.verify(rows)
    assert problems == ["record 2: field sbp holds '99', sent '122'"]


def test_out_of_memory_reply_outside_a_chunked_export_is_a_redcap_error(client, sandbox, project_token):
    sandbox.set_faults(FaultPlan(kind="html_fatal", share=1.0, contents=("record",)))
    with pytest.raises(RedcapError, match="ran out of server memory") as info:
        client.record_ids()
    assert project_token not in str(info.value)


@pytest.fixture
def not_redcap():
    """A web service on this machine that answers every POST with JSON that is not a REDCap reply."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"status": "up", "service": "portal"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("call", ["project_info", "def_field", "metadata", "dags", "log"])
def test_json_that_is_not_a_redcap_reply_is_a_redcap_error_not_a_crash(not_redcap, call):
    import datetime as dt

    client = RedcapClient(not_redcap, Token("A" * 32), retry=RetryPolicy(attempts=2, backoff=0.0),
                          sleep=lambda s: None)
    calls = {"project_info": client.project_info, "def_field": lambda: client.def_field,
             "metadata": client.metadata, "dags": client.dags,
             "log": lambda: client.log_entries("manage", dt.datetime(2026, 1, 1))}
    with pytest.raises(RedcapError) as err:
        calls[call]()
    assert "not a REDCap API reply" in err.value.message and "A" * 32 not in err.value.message
