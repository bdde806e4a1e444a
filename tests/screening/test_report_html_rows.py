"""The page's checklist rows are written in Python (forty thousand of them for two thousand checklists, one call
from the template per checklist): byte for byte what the template's markup for them gave, escaping included."""

# ruff: noqa: E501  (the template text below is kept line for line as it was)

from __future__ import annotations

import pytest
from jinja2 import Environment, select_autoescape

from trialkit.screening.outcomes import CriterionOutcome
from trialkit.screening.reports import _checklist_rows, _criterion_rows, value_words
from trialkit.screening.words import describe_needed, form_items, vocabulary

# the template's markup for one checklist row before it moved to Python (report.html.j2, trim and lstrip blocks)
TEMPLATE = """\
    {% for o in outcomes %}
      {% set cls = {"met": "met", "not_met": "notmet", "unknown": "unknown", "not_applicable": "na"}[o.result] %}
      {% set suffix = "" if o.result in ("unknown", "not_applicable") else ("-incl" if o.kind == "inclusion" else "-excl") %}
      <tr{% if o.decides_ineligible %} class="decides"{% endif %}>
        <td data-label="criterion ({{ o.kind }})"><strong>{{ o.id }}</strong> <span class="crit-text">{{ o.text }}</span></td>
        <td data-label="result"><span class="badge {{ cls }}{{ suffix }}">{{ o.result | replace("_", " ") }}</span></td>
        <td class="values" data-label="values">{% for what, name, v in value_words(o) %}<span class="v">{{ what }}{% if what != name %} <code>{{ name }}</code>{% endif %}: <strong>{{ v }}</strong></span>{% endfor %}</td>
        <td data-label="missing">{% if o.missing %}<span class="missing">{{ needed_words(o.missing) | join("; ") }}</span>{% endif %}{% if o.to_correct %} <span class="missing correct">to correct: {{ o.to_correct | join("; ") }}</span>{% endif %}</td>
      </tr>
    {% endfor %}
"""
@pytest.fixture
def outcomes():
    odd = '<b>"a" & \'b\'</b>\u2028é'
    return [
        CriterionOutcome("I1", "inclusion", "met", values={"today": "2026-10-25", "dob": "***"}, text="Age 18 < x"),
        CriterionOutcome("I5", "inclusion", "not_met", values={"madrs_total": 12, "x<y": odd}, text=odd),
        CriterionOutcome("E5", "exclusion", "met", values={"vs_sbp_1": 175.5, "n": None}, text="SBP > 160 & more"),
        CriterionOutcome("E6", "exclusion", "not_met", values={}, text=""),
        CriterionOutcome("I7", "inclusion", "not_applicable", values={"sex": "2"}, text="Women: test"),
        CriterionOutcome(
            "I4", "inclusion", "unknown", missing=("atrq", "madrs_10", odd), to_correct=(f"vs_sbp_1: {odd}", "b & c"),
            values={"atrq instances counted": "#1 x: no (atrq_duration 4 < 6)"}, text="History",
        ),
        # the same head again, a value seen before and one not
        CriterionOutcome("I5", "inclusion", "not_met", values={"madrs_total": 12, "x<y": "3"}, text=odd),
    ]


def test_the_rows_written_in_python_are_the_templates(outcomes, study, rules):
    vocab = vocabulary(study, rules)
    items = form_items(rules, vocab)
    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True, lstrip_blocks=True
    )
    needed = lambda labels: describe_needed(labels, vocab, items)  # noqa: E731
    plain = env.from_string(TEMPLATE).render(
        outcomes=outcomes, value_words=lambda o: value_words(o, vocab), needed_words=needed
    )
    rows = _checklist_rows(_criterion_rows(vocab, needed))
    assert rows(outcomes) == plain
    assert rows([]) == env.from_string(TEMPLATE).render(outcomes=[], value_words=None, needed_words=None) == ""
    fast = rows(outcomes)
    assert "&lt;b&gt;&#34;a&#34; &amp; &#39;b&#39;&lt;/b&gt;" in fast and ' class="decides"' in fast
