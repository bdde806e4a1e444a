from __future__ import annotations

import pytest

from trialkit.errors import Severity
from trialkit.logic import FieldSpec, check, parse

EVENTS = ["screening_arm_1", "baseline_arm_1"]


def codes(text: str, fields, **kw) -> list[str]:
    return [d.code for d in check(parse(text), fields, events=EVENTS, **kw)]


@pytest.fixture
def fields(kap_fields):
    extra = [
        FieldSpec("weight", "text", "number", form="vitals", events=frozenset({"screening_arm_1"})),
        FieldSpec("notes", "notes", form="vitals"),
        FieldSpec("section", "descriptive", form="vitals"),
    ]
    return {**kap_fields, **{f.name: f for f in extra}}


def test_valid_expressions_have_no_diagnostics(fields):
    for text in [
        "age_at_date([dob], 'today') >= 18 and [madrs_total] >= 20",
        "[conmeds(2)] = '1' or [sex] = '2'",
        "datediff([madrs_date], 'today', 'd', true) <= 14",
        "[screening_arm_1][weight] > 50",
        "count_distinct_instances(atrq, [atrq_drug], [atrq_improvement] < 50) >= 2",
        "[atrq_drug][last-instance] = 'sertraline'",
        "[sex] = 1",
    ]:
        assert check(parse(text), fields, events=EVENTS) == [], text


def test_every_problem_is_reported_with_position_and_suggestion(fields):
    text = "[madrs_totl] >= 20 and\n  [conmeds(7)] = '1' and [sex] = '3' and [conmeds] = '1'"
    diags = check(parse(text, file="rules.yaml", line=5, col=10), fields, events=EVENTS, file="rules.yaml")
    assert [(d.code, d.line, d.col) for d in diags] == [
        ("LOGIC001", 5, 10),
        ("LOGIC002", 6, 3),
        ("LOGIC014", 6, 34),
        ("LOGIC004", 6, 42),
    ]
    assert diags[0].message == "unknown field [madrs_totl]; did you mean [madrs_total] or [madrs_date]?"
    assert diags[0].file == "rules.yaml"
    assert diags[2].severity is Severity.WARNING
    assert diags[0].format() == f"rules.yaml:5:10: LOGIC001 {diags[0].message}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[sex(1)] = '1'", ["LOGIC003"]),
        ("[baselin_arm_1][weight] > 1", ["LOGIC005"]),
        ("[baseline_arm_1][weight] > 1", ["LOGIC006"]),
        ("[dob][2] = ''", ["LOGIC007"]),
        ("[dob] > 5", ["LOGIC008"]),
        ("[dob] + 1", ["LOGIC008"]),
        ("datediff([madrs_total], 'today', 'y')", ["LOGIC009"]),
        ("datediff([dob], 'tomorrow', 'y')", ["LOGIC009"]),
        ("year([sex])", ["LOGIC009"]),
        ("datediff([dob], 'today', 'years')", ["LOGIC010"]),
        ("datediff([dob], 'today', 'y', 'iso')", ["LOGIC010"]),
        ("count_instances(vitals) > 1", ["LOGIC012"]),
        ("count_instances(atrk) > 1", ["LOGIC012"]),
        ("count_instances(atrq, [madrs_total] > 1) > 1", ["LOGIC013"]),
        ("[notes] * 2", ["LOGIC015"]),
        ("[section] = ''", ["LOGIC016"]),
        ("[dob] > '2020-31-12'", ["LOGIC017"]),
        ("[conmeds(1)] = '2'", ["LOGIC014"]),
    ],
)
def test_each_check(fields, text, expected):
    assert codes(text, fields) == expected


def test_extensions_can_be_refused(fields):
    text = "count_instances(atrq) >= 2"
    assert codes(text, fields) == []
    assert codes(text, fields, allow_extensions=False) == ["LOGIC011"]


def test_events_none_skips_event_checks(fields):
    assert check(parse("[whatever_arm_9][weight] > 1"), fields) == []


@pytest.mark.parametrize(
    ("text", "strict", "lax"),
    [
        ("[flag] = 'true'", Severity.ERROR, Severity.WARNING),  # truefalse is 1/0
        ("[sex] = 'female'", Severity.ERROR, Severity.WARNING),
        ("[conmeds(2)] = 'yes'", Severity.ERROR, Severity.WARNING),
        ("[sex] >= 'f'", Severity.ERROR, Severity.WARNING),
        ("[sex] > 0", Severity.WARNING, Severity.WARNING),  # a threshold on numeric codes
        ("[sex] = 'NA'", None, None),  # a missing-data code of the study
        ("[flag] = 1.0", None, None),
    ],
)
def test_a_value_that_is_no_code_is_an_error_only_where_codes_are_strict(fields, text, strict, lax):
    specs = {**fields, "flag": FieldSpec("flag", "truefalse", form="demographics")}
    for strict_codes, want in ((True, strict), (False, lax)):
        found = [d.severity for d in check(parse(text), specs, missing_codes=("NA",), strict_codes=strict_codes)
                 if d.code == "LOGIC014"]
        assert found == ([want] if want else []), (text, strict_codes)
