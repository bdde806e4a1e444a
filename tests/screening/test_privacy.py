"""No identifier value reaches a report, not even through an expression: a value computed from an identifier
field (initials, a phone prefix, the year of birth, a calc over the birth date) is masked like the field."""

from __future__ import annotations

import dataclasses

import pytest

from trialkit.definitions.model import Field, FieldType
from trialkit.definitions.privacy import identifying_fields
from trialkit.definitions.rules import parse_ruleset
from trialkit.records import IntakeData
from trialkit.screening.engine import compile_rules, screen
from trialkit.screening.reports import (
    build_report,
    render_csv,
    render_html,
    render_json,
    render_screening_log,
    render_table,
)
from trialkit.validation import validate

from .conftest import AS_OF, ELIGIBLE, TRIALS, flat_rows

RULES = """
id: privacy
version: "1"
title: expressions over identifiers
protocol: {reference: test, version: "1"}
criteria:
  - id: I1
    kind: inclusion
    text: a name is recorded
    logic: "lower(concat([first_name], ' ', [last_name], ' ', [email])) <> ''"
  - id: I2
    kind: inclusion
    text: a phone is recorded
    logic: "left([phone], 20) <> ''"
  - id: I3
    kind: inclusion
    text: born after 1900
    logic: "year([dob]) > 1900"
"""

SECRETS = ("Secretname", "Hiddenlast", "secret.person@example.org", "(615) 555-0199", "1984")


@pytest.fixture
def report(study):
    ruleset, diags = parse_ruleset(RULES, "privacy.yaml")
    assert ruleset is not None, diags
    rules = compile_rules(ruleset, study)
    person = {
        **ELIGIBLE,
        "first_name": "Secretname",
        "last_name": "Hiddenlast",
        "email": "secret.person@example.org",
        "phone": "(615) 555-0199",
        "dob": "1984-03-02",
    }
    intake = IntakeData.from_frame(flat_rows({"0001": (person, TRIALS)}), study)
    return build_report(screen(rules, intake, as_of=AS_OF))


@pytest.mark.parametrize("render", [render_csv, render_html, render_json, render_screening_log, render_table])
def test_no_value_derived_from_an_identifier_is_printed(report, render):
    text = render(report) if render is not render_table else render_table(report, details=True)
    assert report.candidates[0].disposition == "eligible"
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), (render.__name__, secret)


def test_a_calc_over_an_identifier_is_an_identifier(study):
    private = identifying_fields(study)
    assert {"dob", "first_name", "email"} <= private
    assert "age_screening" in private  # rounddown(datediff([dob], [screening_date], 'y'), 0)
    assert "madrs_total" not in private


def test_validation_findings_mask_a_calc_derived_from_an_identifier(study):
    # age_screening is computed from dob: a stored value that disagrees is shown masked, like dob itself
    rows = flat_rows({"0001": ({**ELIGIBLE, "age_screening": "7"}, TRIALS)})
    findings = validate(IntakeData.from_frame(rows, study), as_of=AS_OF).frame
    wrong = findings.filter(findings["field"] == "age_screening")
    assert wrong.height >= 1
    assert set(wrong["value"].to_list()) == {"***"}
    assert not any("(calculated: 4" in m for m in wrong["message"].to_list())


def test_identifying_fields_follow_nested_calcs(study):
    inst = study.instruments[1]
    dob_calc = Field(
        name="age_decade", form=inst.name, type=FieldType.CALC, label="decade",
        calculation="rounddown([age_screening] / 10, 0)",
    )
    changed = dataclasses.replace(study, instruments=(
        *study.instruments[:1], dataclasses.replace(inst, fields=(*inst.fields, dob_calc)), *study.instruments[2:]
    ))
    assert "age_decade" in identifying_fields(changed)
