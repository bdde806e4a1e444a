"""The vectorised type/format checks agree with the per-cell REDCap validation types, cell for cell."""

from __future__ import annotations

import datetime as dt
import math
import re

import intake_data as shared
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.definitions import validation_types
from trialkit.records import IntakeData
from trialkit.validation import validate

FIELDS = {
    "screen_date": "date_ymd",
    "age": "integer",
    "height": "number",
    "weight": "number_1dp",
    "visit_time": "datetime_ymd",
    "email": "email",
}

cells = st.one_of(
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31)).map(str),
    st.from_regex(r"[-+]?[0-9]{1,4}(\.[0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?", fullmatch=True),
    st.from_regex(r"[a-z]{1,5}@[a-z]{1,5}\.(org|x)", fullmatch=True),
    st.text(alphabet="0123456789.-+e:@ aZ", min_size=1, max_size=8).map(str.strip).filter(bool),
)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(FIELDS)), cells), min_size=1, max_size=12))
def test_type_and_format_findings_match_per_cell_rules(mini_study, edits):
    rows = [dict(r) for r in shared.CLEAN_ROWS if r["redcap_repeat_instrument"] == ""]
    expected: set[tuple[int, str]] = set()
    for i, (name, value) in enumerate(edits):
        row = i % len(rows)
        rows[row][name] = value
    for row_number, row in enumerate(rows, start=1):
        for name, vtype in FIELDS.items():
            value = row.get(name, "")
            # a whole number in a number_Ndp field is accepted (as REDCap's data entry does; push pads it)
            whole = vtype.startswith("number_") and re.fullmatch(r"-?[0-9]+", value)
            if value and not validation_types.get(vtype).is_valid(value) and not whole:
                expected.add((row_number, name))
            elif value and vtype.startswith("number") and not math.isfinite(float(value.replace(",", "."))):
                expected.add((row_number, name))  # REDCap's pattern takes 1e309; no number holds it: unreadable
    intake = IntakeData.from_frame(shared.rows_frame(rows), mini_study)
    findings = validate(intake, as_of=dt.date(2026, 1, 1))
    got = set(findings.frame.filter(pl.col("check").is_in(["type", "format"])).select("row", "field").iter_rows())
    assert got == expected
