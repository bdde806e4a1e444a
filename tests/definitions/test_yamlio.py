"""YAML reading: positions, duplicate keys, dates as text, source text of scalars; never an exception."""

from __future__ import annotations

import json
from pathlib import Path

from definitions_helpers import BASE, make_study
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.definitions import check_study, load_study
from trialkit.definitions.yamlio import expression_position, parse_yaml


def test_dates_stay_text_and_numbers_keep_their_source():
    doc = parse_yaml("d: 2024-01-05\nm: 0.50\nc: {01: a, 1: b}\nt: true\nn: ~\n", "x.yaml")
    assert doc.data == {"d": "2024-01-05", "m": 0.5, "c": {"01": "a", "1": "b"}, "t": True, "n": None}
    assert doc.raw(("m",)) == "0.50"
    assert doc.where(("c", "1")) == (3, 15)
    assert doc.where(("c", "1"), key=True) == (3, 12)


def test_folded_scalars_are_clean_text():
    doc = parse_yaml("a: >-\n  one two\n  three\n\n  four\n", "x.yaml")
    assert doc.data == {"a": "one two three\nfour"}


def test_duplicate_keys_are_reported_at_the_second_one():
    doc = parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "x.yaml")
    assert [(d.code, d.line, d.col) for d in doc.diagnostics] == [("YAML002", 4, 3)]
    assert doc.data == {"a": 1, "b": {"c": 1}}


def test_expression_positions_in_plain_quoted_and_block_scalars():
    text = "a: round([x], 1)\nb: '[x] = 1'\nc: |\n    [x] = 1\n    and [y] = 2\n"
    doc = parse_yaml(text, "x.yaml")
    assert doc.ok
    assert expression_position(doc, ("a",), 1, 7) == (1, 10)
    assert expression_position(doc, ("b",), 1, 2) == (2, 6)
    assert expression_position(doc, ("c",), 2, 5) == (5, 9)


def test_schema_named_by_key_or_comment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_study(Path("."), {"base": "$schema: ../x.json\n" + BASE})
    assert load_study(".").instrument("base").fields[0].name == "record_id"
    assert parse_yaml("# yaml-language-server: $schema=../s.json\na: 1\n", "x").schema_hint() == "../s.json"


# Random documents built from the keys the formats know: checking them must never raise.
_keys = st.sampled_from(
    ["study", "instruments", "arms", "events", "label", "name", "number", "instrument", "fields", "type", "choices",
     "calculation", "show_if", "min", "max", "validation", "repeating", "repeating_instruments", "slider_labels",
     "identifier", "required", "day_offset", "missing_codes", "instruments_dir", "x"]
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["base", "text", "calc", "radio", "[base]", "a__b",
                                                                      "2024-01-01", "[x] +", "", "checkbox", "1, a"])
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=12)


def _dump(value) -> str:
    return json.dumps(value)  # JSON is YAML


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=st.dictionaries(_keys, _values, max_size=5), inst=st.dictionaries(_keys, _values, max_size=5))
def test_random_documents_never_raise(tmp_path, study, inst):
    root = tmp_path / "fuzz"
    make_study(root, {"base": _dump(inst)}, _dump(study))
    result = check_study(root)
    assert all(d.code and d.message for d in result.diagnostics)


def test_deep_nesting_is_a_diagnostic_not_a_crash():
    doc = parse_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n", "x.yaml")
    assert [(d.code, d.message) for d in doc.diagnostics] == [("YAML001", "not valid YAML: nested too deeply")]
    assert not doc.ok
