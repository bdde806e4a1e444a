"""Bad rule files never crash the loader: any text gives diagnostics (or a rule set), never an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.definitions.rules import parse_ruleset

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
_keys = st.sampled_from(["id", "kind", "text", "logic", "applies_if", "attested", "notes", "requires_instances", "x"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_gives_diagnostics_not_exceptions(text):
    ruleset, diags = parse_ruleset(text, file="fuzz.yaml")
    assert ruleset is not None or diags


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(_keys, _values, max_size=6), max_size=4), _values)
def test_any_structure_gives_diagnostics_not_exceptions(criteria, protocol):
    import json

    doc = {"id": "x", "version": "1", "title": "t", "protocol": protocol, "criteria": criteria}
    ruleset, diags = parse_ruleset(json.dumps(doc), file="fuzz.yaml")  # JSON is YAML
    assert ruleset is not None or diags
    for d in diags:
        assert d.file == "fuzz.yaml" and d.code
