"""The JSON report written to a file (`write_json`, what `screen --format json --out` uses) is byte for byte the
plain path's text (`render_json`, which the golden file pins), whatever the candidates' ids hold; its indented
checklists are byte for byte json.dumps(indent=2)."""

from __future__ import annotations

import enum
import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.cli.options import wrap_json_text
from trialkit.screening import reports
from trialkit.screening.reports import build_report, indented_json, render_json, write_json

from .test_reports import CANDIDATES

# ids a JSON writer must escape or must leave alone: quotes, backslashes, control characters, JSON's own
# unescaped line separators (U+2028, U+0085), non-ASCII, an astral character, markup, a spreadsheet formula
TRICKY_IDS = [
    'say "hi"',
    "back\\slash\\",
    "tab\there\x01\x1f\x7f",
    "line\u2028sep\u2029\u0085end",
    "Zoë-日本-🎉",
    "</script><b>&amp;",
    "=1+2",
    "plain",
]


class _Kind(enum.StrEnum):
    A = "a\u2028"


class _Num(enum.IntEnum):
    ONE = 1


_text = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(TRICKY_IDS)
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | _text
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([_Kind.A, _Num.ONE, -0.0, 1e300, 5e-324])
)
_keys = _text | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(value=_values, pad=st.sampled_from(["", "    ", "\t"]))
def test_indented_json_is_json_dumps_indented(value, pad):
    expected = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + pad)
    assert indented_json(value, pad) == expected


def test_indented_json_leaves_unknown_types_to_json():
    """A type json.dumps does not know is refused the same way; NaN is spelled as json.dumps spells it."""
    import datetime as dt

    with pytest.raises(TypeError):
        indented_json({"when": dt.date(2026, 1, 1)})
    with pytest.raises(TypeError):
        indented_json({(1, 2): "tuple key"})
    assert indented_json([math.nan, -math.inf]) == "[\n  NaN,\n  -Infinity\n]"


@pytest.fixture
def tricky(run, study):
    template = CANDIDATES  # eligible, ineligible, pending (with and without a treatment history)
    cands = {}
    for i, rid in enumerate(TRICKY_IDS):
        cands[rid] = list(template.values())[i % len(template)]
    return run(cands)


@pytest.mark.parametrize(("checklists", "labels"), [(0, True), (3, True), (None, True), (0, False), (3, False)])
def test_write_json_is_render_json(tricky, study, monkeypatch, checklists, labels):
    """Over every slice size (the last line of a slice, of the file), with checklists or without, from a table
    with the criterion labels or without (as the CLI builds it), and with the CLI's envelope in front: the same
    bytes, and the ids read back as they were."""
    report = build_report(tricky, checklists=checklists, study=study, source='in "x".csv', labels=labels)
    whole = render_json(build_report(tricky, checklists=checklists, study=study, source='in "x".csv'))
    ids = [c["record_id"] for c in json.loads(whole)["candidates"]]
    assert ids == TRICKY_IDS
    for size in (1, 2, 3, 50_000):
        monkeypatch.setattr(reports, "_JSON_SLICE", size)
        out = io.BytesIO()
        write_json(report, out)
        assert out.getvalue() == whole.encode("utf-8")
        out = io.BytesIO()
        write_json(report, out, opening=lambda text: wrap_json_text(text, "screen", True))
        assert out.getvalue() == wrap_json_text(whole, "screen", True).encode("utf-8")


def test_write_json_with_no_candidates(run, study):
    report = build_report(run({}), study=study)
    out = io.BytesIO()
    write_json(report, out)
    assert out.getvalue() == render_json(report).encode("utf-8")
    assert json.loads(out.getvalue())["candidates"] == []
