"""The raw flat export's fast path writes its rows' pieces straight into ~64 KB chunks (records._CHUNK) instead
of joining a line per row, and leaves out the pick of stored values when a row's stored columns are exported in
stored order. Pinned to the general row renderer, byte for byte, whatever the chunk size and the data: through
HTTP, as a client reads the reply."""

from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_data import MIXED_ROWS, longitudinal_spec, post

from trialkit.redcap.sandbox import records

# values a client can send: ASCII, quotes, commas, a backslash, non-ASCII, DEL (stored raw, escaped in JSON)
_TEXT = st.text(st.sampled_from(list('ab 1,"\\\né\x7f;')), min_size=1, max_size=6).filter(lambda t: t.strip())
_SHAPES = [
    lambda rid, t: {"record_id": rid, "redcap_event_name": "treatment_arm_1", "ae_term": t},
    lambda rid, t: {"record_id": rid, "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
                    "redcap_repeat_instance": "new", "ses_dose": "2"},
    lambda rid, t: {"record_id": rid, "redcap_event_name": "screening_arm_1", "sbp": "120", "phq_1": "1",
                    "phq_flags___2": "1"},
    lambda rid, t: {"record_id": rid, "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": "1",
                    "fu_status": "2"},
]


def _both(sandbox, token: str, monkeypatch, fmt: str, **ask: str) -> tuple[bytes, bytes]:
    fast = post(sandbox.url, token=token, content="record", format=fmt, **ask)
    with monkeypatch.context() as m:
        m.setattr(records, "FAST_FLAT", False)
        general = post(sandbox.url, token=token, content="record", format=fmt, **ask)
    assert fast.status_code == general.status_code == 200
    return fast.content, general.content


@pytest.mark.parametrize("chunk", [1, 300, 1 << 16])
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_any_chunk_size_gives_the_general_renderers_bytes(sandbox, longitudinal, monkeypatch, fmt, chunk):
    longitudinal.import_records(MIXED_ROWS, date_format="MDY")
    monkeypatch.setattr(records, "_CHUNK", chunk)
    fast, general = _both(sandbox, longitudinal.token, monkeypatch, fmt)
    assert fast == general
    fast, general = _both(sandbox, longitudinal.token, monkeypatch, fmt, fields="record_id,ses_dose")
    assert fast == general


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_empty_export_is_the_general_renderers(sandbox, longitudinal, monkeypatch, fmt):
    fast, general = _both(sandbox, longitudinal.token, monkeypatch, fmt)
    assert fast == general
    assert fast == (b"[]" if fmt == "json" else general)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3), _TEXT), min_size=1, max_size=12),
       chunk=st.sampled_from([1, 50, 700, 1 << 16]))
def test_random_rows_export_as_the_general_renderer_has_them(sandbox, monkeypatch, rows, chunk):
    token = sandbox.create_project(longitudinal_spec())
    try:
        project = sandbox.project(token)
        project.import_records([_SHAPES[shape](str(rid), text) for rid, shape, text in rows])
        monkeypatch.setattr(records, "_CHUNK", chunk)
        for fmt in ("csv", "json"):
            fast, general = _both(sandbox, token, monkeypatch, fmt)
            assert fast == general
    finally:
        sandbox.drop_project(token)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_rows_with_long_values_still_leave_in_chunks_of_about_64_kb(sandbox, longitudinal, fmt):
    """A chunk counts each row's stored text as well as its fixed text: rows of a long value and little else do not
    pile up into one reply-sized chunk (the server's memory stays flat whatever the export's size)."""
    longitudinal.import_records([{"record_id": str(i), "redcap_event_name": "treatment_arm_1", "ae_term": "x" * 4000}
                                 for i in range(1, 201)])
    reply = requests.post(sandbox.url, data={"token": longitudinal.token, "content": "record", "format": fmt},
                          stream=True, timeout=30)
    sizes = [len(chunk) for chunk in reply.raw.read_chunked(decode_content=False)]
    assert sum(sizes) > 800_000
    assert max(sizes) < 3 * records._CHUNK
