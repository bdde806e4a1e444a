"""Fault injection, rate limiting, concurrent imports and persistence across restarts."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from redcap import Project, RedcapError
from sandbox_data import ADMIN_SECRET, classic_spec

from trialkit.redcap.sandbox import FaultPlan, running_sandbox


@pytest.fixture
def faulty(sandbox, classic):
    yield classic
    sandbox.set_faults(None)


def test_next_n_error_bodies_then_normal(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="error", next_n=2, message="Temporarily unavailable"))
    for _ in range(2):
        with pytest.raises(RedcapError) as err:
            faulty.export_records()
        assert err.value.args[0] == {"error": "Temporarily unavailable"}
    assert faulty.export_records() == []


def test_http_500(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="http500", next_n=1))
    reply = requests.post(sandbox.url, data={"token": faulty.token, "content": "record", "format": "json"},
                          timeout=10)
    assert reply.status_code == 500
    with pytest.raises(RedcapError):  # PyCap cannot decode the HTML page
        sandbox.set_faults(FaultPlan(kind="http500", next_n=1))
        faulty.export_records()


def test_html_fatal_page_before_json_error(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="html_fatal", next_n=1))
    reply = requests.post(sandbox.url, data={"token": faulty.token, "content": "record", "format": "json"},
                          timeout=10)
    assert reply.status_code == 200
    assert reply.text.startswith("<br />\n<b>Fatal error</b>")
    assert reply.text.endswith('{"error": "REDCap ran out of server memory. The request cannot be processed. '
                               'Please try importing/exporting a smaller amount of data."}')
    sandbox.set_faults(FaultPlan(kind="html_fatal", next_n=1))
    with pytest.raises(RedcapError):
        faulty.export_records()


def test_slow_reply(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="slow", next_n=1, delay=0.6))
    start = time.monotonic()
    assert faulty.export_records() == []
    assert time.monotonic() - start >= 0.6
    sandbox.set_faults(FaultPlan(kind="slow", next_n=1, delay=0.5))
    slow = Project(faulty.url, faulty.token, timeout=0.2)
    with pytest.raises(requests.exceptions.Timeout):
        slow.export_records()
    time.sleep(0.4)  # let the server finish the abandoned request before the project is dropped


def test_dropped_connection_does_not_process_the_request(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="drop", next_n=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        faulty.import_records([{"record_id": "1"}])
    assert faulty.export_records() == []


def test_drop_after_commits_then_drops(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="drop_after", next_n=1, contents=("record",)))
    with pytest.raises(requests.exceptions.ConnectionError):
        faulty.import_records([{"record_id": "1", "age": "5"}])
    assert faulty.export_records()[0]["age"] == "5"  # the write happened although the client saw a failure


def test_seeded_share_is_reproducible(sandbox, faulty):
    def pattern() -> list[bool]:
        sandbox.set_faults(FaultPlan(kind="error", share=0.3, seed=7, contents=("record",)))
        out = []
        for _ in range(30):
            try:
                faulty.export_records(fields=["record_id"])
                out.append(False)
            except RedcapError:
                out.append(True)
        return out

    first, second = pattern(), pattern()
    assert first == second
    assert 3 <= sum(first) <= 18


def test_rate_limit_per_token(sandbox, faulty):
    sandbox.set_faults(FaultPlan(kind="error", rate_limit=3, rate_window=60))
    for _ in range(3):
        ok = requests.post(sandbox.url, data={"token": faulty.token, "content": "record", "format": "json"},
                           timeout=10)
        assert ok.status_code == 200
    other = requests.post(sandbox.url, data={"token": "1" * 32, "content": "record", "format": "json"}, timeout=10)
    assert other.status_code == 403  # another token has its own allowance
    reply = requests.post(sandbox.url, data={"token": faulty.token, "content": "record", "format": "json"},
                          timeout=10)
    assert reply.status_code == 429
    assert "maximum number of API requests" in reply.json()["error"]


def test_faults_through_the_admin_endpoint(sandbox, faulty):
    admin = sandbox.url.replace("/api/", "/admin/faults")
    headers = {"X-Trialkit-Admin": ADMIN_SECRET}
    reply = requests.post(admin, json={"plan": {"kind": "error", "next_n": 1, "message": "boom"}}, headers=headers,
                          timeout=10)
    assert reply.status_code == 200
    with pytest.raises(RedcapError):
        faulty.export_records()
    assert faulty.export_records() == []
    bad = requests.post(admin, json={"plan": {"kind": "meteor"}}, headers=headers, timeout=10)
    assert bad.status_code == 400


def test_concurrent_imports_never_interleave(classic):
    """Two clients write the same 300 records with different values; each batch lands whole or not at all."""
    def batch(tag: str) -> list[dict]:
        return [{"record_id": str(i), "name": tag, "notes": tag} for i in range(1, 301)]

    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for _ in range(3):
                Project(classic.url, classic.token, timeout=30).import_records(batch(tag))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = classic.export_records(fields=["name", "notes"])
    assert len(rows) == 300
    tags = {(r["name"], r["notes"]) for r in rows}
    assert tags in ({("A", "A")}, {("B", "B")})


def test_imports_while_an_export_streams(classic):
    """A long export holds a read snapshot; imports must still commit meanwhile (WAL), and the export sees
    one consistent state."""
    classic.import_records([{"record_id": str(i), "notes": "x" * 200} for i in range(1, 2001)])
    results: dict[str, object] = {}

    def exporter() -> None:
        try:
            results["rows"] = len(Project(classic.url, classic.token, timeout=30).export_records(format_type="csv")
                                  .splitlines()) - 1
        except BaseException as exc:
            results["export_error"] = exc

    def importer() -> None:
        try:
            for i in range(5):
                Project(classic.url, classic.token, timeout=30).import_records([{"record_id": f"n{i}"}])
        except BaseException as exc:
            results["import_error"] = exc

    threads = [threading.Thread(target=exporter), threading.Thread(target=importer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "export_error" not in results and "import_error" not in results
    assert 2000 <= results["rows"] <= 2005
    assert len(classic.export_records(fields=["record_id"])) == 2005


def test_data_survives_a_restart(tmp_path):
    db = tmp_path / "sandbox.db"
    with running_sandbox(classic_spec(), db=db) as sb:
        token = sb.token
        sb.project().import_records([{"record_id": "1", "age": "44"}])
    with running_sandbox(db=db) as sb:
        assert sb.token == token
        assert sb.project().export_records()[0]["age"] == "44"
