"""The raw flat export's fast path (records._fast_flat: per-shape line templates) against the general row
renderer that label exports use: the same bytes, CSV and JSON, for rows of every kind. Over HTTP."""

from __future__ import annotations

import pytest
from sandbox_data import MIXED_ROWS, post

from trialkit.redcap.sandbox import records

TEXT = [
    {"record_id": "7", "redcap_event_name": "treatment_arm_1", "ae_term": 'said "ouch", then\nleft; caf\u00e9 \\ ok'},
    {"record_id": "10", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "1", "ses_dose": "2", "ses_date": "2024-01-31"},
    # DEL is ASCII and orjson stores it raw, but JSON exports escape it (\u007f): not a row to copy as stored
    {"record_id": "8", "redcap_event_name": "treatment_arm_1", "ae_term": "rash\x7f"},
    {"record_id": "9", "redcap_event_name": "treatment_arm_1", "ae_term": 'ASCII "quoted"\ttab \\ back'},
]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("ask", [{}, {"fields": "record_id,phq_flags,ses_dose,fu_status"}, {"forms": "session"},
                                 {"records": "1,10", "events": "treatment_arm_1"}])
def test_fast_export_is_byte_for_byte_the_general_renderer(sandbox, longitudinal, monkeypatch, fmt, ask):
    longitudinal.import_records(MIXED_ROWS, date_format="MDY")
    longitudinal.import_records(TEXT)
    fast = post(sandbox.url, token=longitudinal.token, content="record", format=fmt, **ask)
    monkeypatch.setattr(records, "FAST_FLAT", False)
    general = post(sandbox.url, token=longitudinal.token, content="record", format=fmt, **ask)
    assert fast.status_code == general.status_code == 200
    assert fast.content == general.content


def test_fast_export_without_its_caches_is_the_same(sandbox, longitudinal, monkeypatch):
    """Past its bounds (row shapes, remembered cells) the fast path builds each line afresh: same bytes."""
    longitudinal.import_records(MIXED_ROWS, date_format="MDY")
    longitudinal.import_records(TEXT)
    cached = [post(sandbox.url, token=longitudinal.token, content="record", format=f).content for f in ("csv", "json")]
    monkeypatch.setattr(records, "_TEMPLATE_LIMIT", 0)
    monkeypatch.setattr(records, "_MEMO_LIMIT", 0)
    assert [post(sandbox.url, token=longitudinal.token, content="record", format=f).content
            for f in ("csv", "json")] == cached
