"""Rule files: loading, JSON Schema, structure checks and expression checks, each located in the file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent

import pytest

from trialkit.definitions import load_study
from trialkit.definitions.rules import CriterionKind, check_ruleset, load_ruleset, parse_ruleset, read_ruleset
from trialkit.errors import DefinitionError

ROOT = Path(__file__).resolve().parents[2]
KAP_RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"

HEADER = """\
id: demo
version: "1.0"
title: Demo rules
protocol: {reference: demo protocol, version: "1.0"}
criteria:
"""


@pytest.fixture(scope="module")
def study():
    return load_study(ROOT)


def _rules(body: str) -> str:
    return HEADER + dedent(body)


def _codes(diags) -> list[str]:
    return [d.code for d in diags]


def test_kap_rules_load_clean_against_the_study(study):
    ruleset = load_ruleset(KAP_RULES, study)
    assert ruleset.id == "kap_trd"
    assert ruleset.ids == tuple(f"I{i}" for i in range(1, 9)) + tuple(f"E{i}" for i in range(1, 14))
    assert all(c.kind is CriterionKind.INCLUSION for c in ruleset.criteria[:8])
    assert all(c.kind is CriterionKind.EXCLUSION for c in ruleset.criteria[8:])
    assert ruleset.sha256 == hashlib.sha256(KAP_RULES.read_bytes()).hexdigest()
    assert ruleset.stamp() == {"id": "kap_trd", "version": ruleset.version, "sha256": ruleset.sha256}
    assert [d for d in check_ruleset(ruleset, study) if d.is_error] == []


def test_kap_rules_keep_applicability_and_attestation(study):
    ruleset = load_ruleset(KAP_RULES, study)
    assert ruleset.criterion("I6").applies_if == "[current_ad] = '1'"
    assert ruleset.criterion("I7").applies_if == "[childbearing_potential] = '1'"
    e13 = ruleset.criterion("E13")
    assert e13.is_attested and e13.logic is None
    assert e13.attested.fields == ("inv_unsafe", "inv_name", "inv_date")
    assert e13.expression == "[inv_unsafe] = '1'"
    assert ruleset.reference_date == "screening_date"
    # folded YAML text is one clean line (ruamel marks folds with BEL characters internally)
    assert "\a" not in ruleset.criterion("E1").text and "  " not in ruleset.criterion("E1").text


def test_hash_changes_with_the_file_bytes():
    a, _ = parse_ruleset(_rules('  - {id: I1, kind: inclusion, text: t, logic: "[x] = 1"}\n'), file="a.yaml")
    b, _ = parse_ruleset(_rules('  - {id: I1, kind: inclusion, text: t, logic: "[x] = 2"}\n'), file="a.yaml")
    assert a is not None and b is not None and a.sha256 != b.sha256


def test_unknown_key_is_located_schema_error():
    text = _rules(
        """\
          - id: I1
            kind: inclusion
            text: t
            logik: "[age] >= 18"
        """
    )
    ruleset, diags = parse_ruleset(text, file="r.yaml")
    assert ruleset is None
    d = next(d for d in diags if d.code == "SCH003")
    assert (d.file, d.line, d.col) == ("r.yaml", 9, 3)  # the key `logik` (body dedented to column 1)
    assert "logik" in d.message


def test_bad_kind_and_missing_text_are_schema_errors():
    text = _rules('  - {id: I1, kind: inclusive, logic: "[a] = 1"}\n')
    _, diags = parse_ruleset(text, file="r.yaml")
    assert "SCH005" in _codes(diags)  # enum
    assert "SCH002" in _codes(diags)  # required text
    assert all(d.line == 6 for d in diags)


def test_duplicate_id_no_logic_and_both_logic_and_attested():
    text = _rules(
        """\
          - {id: I1, kind: inclusion, text: a, logic: "[a] = 1"}
          - {id: I1, kind: inclusion, text: b, logic: "[b] = 1"}
          - {id: E1, kind: exclusion, text: c}
          - {id: E2, kind: exclusion, text: d, logic: "[d] = 1", attested: {field: d}}
        """
    )
    _, diags = parse_ruleset(text, file="r.yaml")
    by_code = {d.code: d for d in diags}
    assert by_code["RULE001"].line == 7 and "line 6" in by_code["RULE001"].message
    assert by_code["RULE002"].line == 8
    assert by_code["RULE003"].line == 9


def test_yaml_syntax_and_duplicate_keys_are_located():
    _, diags = parse_ruleset(HEADER + "  - {id: I1, kind: [inclusion\n", file="r.yaml")
    assert _codes(diags) == ["YAML001"] and diags[0].line is not None
    _, diags = parse_ruleset(HEADER.replace("title: Demo rules\n", "title: a\ntitle: b\n") + "  []\n", file="r.yaml")
    assert "YAML002" in _codes(diags)


def test_a_duplicate_key_does_not_hide_the_files_other_problems(study, tmp_path):
    """A repeated key is an error, and the file is still checked (first value kept), as instrument files are: a
    researcher sees every problem at once, not one per run."""
    text = _rules(
        """\
          - id: I1
            kind: inclusion
            kind: exclusion
            text: t
            logic: "[no_such_field] = '1'"
          - {id: I1, kind: inclusion, text: u, logic: "[mini_mdd] = '1'"}
        """
    )
    ruleset, diags = parse_ruleset(text, file="r.yaml")
    assert ruleset is not None and ruleset.criteria[0].kind is CriterionKind.INCLUSION
    assert {"YAML002", "RULE001"} <= set(_codes(diags))
    assert any("no_such_field" in d.message for d in check_ruleset(ruleset, study))
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_ruleset(tmp_path / "r.yaml", study)
    codes = [d.code for d in caught.value.diagnostics]
    assert "YAML002" in codes and "RULE001" in codes and any(c.startswith("LOG") for c in codes)


def test_logic_syntax_error_points_into_the_file(study):
    text = _rules("  - {id: I1, kind: inclusion, text: t, logic: \"[mini_mdd] = '1' and (\"}\n")
    ruleset, diags = parse_ruleset(text, file="r.yaml")
    assert ruleset is not None and diags == []
    found = check_ruleset(ruleset, study)
    d = next(d for d in found if d.code == "LOG001")
    assert d.file == "r.yaml" and d.line == 6
    # the column is inside the expression on that line, past the opening quote
    assert d.col > text.splitlines()[5].index('"')
    assert d.format().startswith(f"r.yaml:6:{d.col}: LOG001 criterion I1:")


def test_unknown_field_in_block_scalar_is_located_on_its_line(study):
    text = _rules(
        """\
          - id: I5
            kind: inclusion
            text: t
            logic: |
              [madrs_total] >= 20
              and [madrs_dat] <> ''
        """
    )
    ruleset, diags = parse_ruleset(text, file="r.yaml")
    assert diags == []
    found = [d for d in check_ruleset(ruleset, study) if d.is_error]
    assert found, "an unknown field must be reported"
    d = found[0]
    assert d.line == 11  # the second line of the block
    assert d.col == 9  # where [madrs_dat] starts: 4 spaces of block indent + "and "
    assert "madrs_dat" in d.message


def test_attestation_fields_are_checked(study):
    text = _rules(
        """\
          - {id: I1, kind: inclusion, text: t, logic: "[mini_mdd] = '1'"}
          - {id: E1, kind: exclusion, text: a, attested: {field: nope, signed_by: inv_name, signed_on: gone}}
          - {id: E2, kind: exclusion, text: b, attested: {field: dob}}
        """
    )
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    found = check_ruleset(ruleset, study)
    codes = _codes(found)
    assert codes.count("RULE010") == 2  # field 'nope' and signed_on 'gone'
    assert "RULE011" in codes  # dob is a date, not yes/no
    assert "RULE012" in codes  # unsigned attestation warns
    assert next(d for d in found if d.code == "RULE012").is_error is False


def test_reference_date_must_be_a_date_field(study):
    text = HEADER.replace("criteria:\n", "reference_date: sex\ncriteria:\n") + (
        "  - {id: I1, kind: inclusion, text: t, logic: \"[mini_mdd] = '1'\"}\n"
    )
    ruleset, diags = parse_ruleset(text, file="r.yaml")
    assert diags == []
    d = next(d for d in check_ruleset(ruleset, study) if d.code == "RULE013")
    assert (d.file, d.line, d.col) == ("r.yaml", 5, 17)  # the value of reference_date


def test_reference_date_on_a_repeating_instrument_is_refused(study):
    # a candidate's row never holds atrq_start_date: 'today' silently became the --as-of date for everyone
    text = HEADER.replace("criteria:\n", "reference_date: atrq_start_date\ncriteria:\n") + (
        "  - {id: I1, kind: inclusion, text: t, logic: \"[mini_mdd] = '1'\"}\n"
    )
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    d = next(d for d in check_ruleset(ruleset, study) if d.code == "RULE013")
    assert d.is_error and "repeating instrument 'atrq'" in d.message and d.line == 5


def test_an_attested_field_on_a_repeating_instrument_is_refused(study):
    # atrq_ongoing is yes/no but on the treatment history's instances: the candidate's row never holds it, so the
    # criterion stayed unknown for everyone and asked for a field of the instances
    text = _rules(
        """\
          - {id: I1, kind: inclusion, text: t, logic: "[mini_mdd] = '1'"}
          - {id: E1, kind: exclusion, text: a, attested: {field: atrq_ongoing, signed_on: atrq_start_date}}
        """
    )
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    found = [d for d in check_ruleset(ruleset, study) if d.code == "RULE016"]
    assert len(found) == 2 and all(d.is_error and "repeating instrument 'atrq'" in d.message for d in found)
    assert {d.line for d in found} == {7}  # the criterion E1


def test_load_ruleset_raises_with_every_diagnostic(tmp_path, study):
    path = tmp_path / "bad.yaml"
    path.write_text(
        _rules(
            """\
              - {id: I1, kind: inclusion, text: t, logic: "[no_such_field] = 1"}
              - {id: E1, kind: exclusion, text: t, logic: "[mini_mdd] = '1' and"}
            """
        )
    )
    with pytest.raises(DefinitionError) as info:
        load_ruleset(path, study)
    diags = info.value.diagnostics
    assert len(diags) >= 2
    assert {d.line for d in diags} == {6, 7}
    assert all(d.file == str(path) for d in diags)


def test_unreadable_and_non_mapping_files(tmp_path):
    ruleset, diags = read_ruleset(tmp_path / "missing.yaml")
    assert ruleset is None and _codes(diags) == ["IO001"]
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    ruleset, diags = read_ruleset(path)
    assert ruleset is None and _codes(diags) == ["RULE005"]


def test_a_checkbox_cannot_be_an_attested_decision(study):
    text = _rules(
        """\
          - {id: I1, kind: inclusion, text: t, logic: "[mini_mdd] = '1'"}
          - {id: E1, kind: exclusion, text: a, attested: {field: race, signed_by: inv_name, signed_on: inv_date}}
          - {id: E2, kind: exclusion, text: b, attested: {field: sex, signed_by: inv_name, signed_on: inv_date}}
        """
    )
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    found = [(d.code, d.line) for d in check_ruleset(ruleset, study)]
    assert found == [("RULE011", 7)]  # race is a checkbox; sex is a radio with a '1' code


@pytest.mark.parametrize(
    "logic",
    [
        "[mini_mdd] = 'yes'",  # yesno: 1/0
        "[consent_signed] <> 'no'",
        "[sex] = 'female'",  # radio 1/2/3
        "[sex] = 4",
        "'male' = [sex]",  # the literal on either side
        "[atrq_drug][1] = 'prozac'",  # dropdown (an instance of a repeating form)
        "[race(2)] = 'yes'",  # a checkbox option is 1 or 0
        "[race(2)] = '2'",
        "[demographics_complete] = '3'",  # form status: 0/1/2
        "[sex] > 'male'",  # ordering with text that is no code
    ],
)
def test_a_value_that_is_no_code_of_the_field_is_an_error_in_a_rule(study, logic, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(_rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"}}\n"))
    with pytest.raises(DefinitionError) as info:  # screening refuses the rule set
        load_ruleset(path, study)
    found = [d for d in info.value.diagnostics if d.code == "LOGIC014"]
    assert [(d.is_error, d.file, d.line) for d in found] == [(True, str(path), 6)], logic


@pytest.mark.parametrize(
    "logic",
    [
        "[mini_mdd] = '1' and [consent_signed] <> '0'",
        "[sex] = 2 or [sex] = '3.0'",  # the same number as a code
        "[race(9)] = '1' or [race(1)] = 0",
        "[demographics_complete] = '2'",
        "[mini_mdd] = ''",  # blank is no code but always a fair question
        "[sex] < 3",  # a threshold on numeric codes
    ],
)
def test_codes_blanks_and_thresholds_are_fine(study, logic):
    ruleset, _ = parse_ruleset(_rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"}}\n"), file="r.yaml")
    assert [d for d in check_ruleset(ruleset, study) if d.code == "LOGIC014" and d.is_error] == [], logic


def test_a_missing_data_code_of_the_study_is_a_value_of_every_field(study):
    from dataclasses import replace

    from trialkit.definitions.model import Choice

    ruleset, _ = parse_ruleset(_rules("  - {id: I1, kind: inclusion, text: t, logic: \"[sex] <> 'UNK'\"}\n"))
    assert any(d.code == "LOGIC014" for d in check_ruleset(ruleset, study))
    with_unknown = replace(study, missing_codes=(Choice("UNK", "Unknown"),))
    assert not any(d.code == "LOGIC014" for d in check_ruleset(ruleset, with_unknown))


@pytest.mark.parametrize(
    ("logic", "applies_if"),
    [("[atrq_duration] >= 6", None), ("[mini_mdd] = '1'", "[atrq_failed] = '1'"),
     ("[mini_mdd] = '1' and count_instances(atrq) >= 1 and [atrq_drug] = 'other'", None)],
)
def test_a_repeating_forms_field_read_once_per_candidate_is_an_error(study, logic, applies_if):
    # the candidate's row holds none of atrq's values: the criterion stayed unknown for everyone and asked for
    # fields the instances hold
    extra = f", applies_if: \"{applies_if}\"" if applies_if else ""
    text = _rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"{extra}}}\n")
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    found = [d for d in check_ruleset(ruleset, study) if d.code == "LOGIC018"]
    assert len(found) == 1 and found[0].is_error and found[0].line == 6
    assert "repeating instrument 'atrq'" in found[0].message and "[1]" in found[0].message


@pytest.mark.parametrize(
    "logic",
    ["count_instances(atrq, [atrq_duration] >= 6) >= 1", "[atrq_duration][1] >= 6",
     "[atrq_duration][last-instance] >= 6", "max_instances(atrq, [atrq_duration]) >= 6"],
)
def test_instances_named_or_aggregated_are_fine(study, logic):
    text = _rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"}}\n")
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    assert [d for d in check_ruleset(ruleset, study) if d.is_error] == []


@pytest.mark.parametrize(
    "logic",
    ["[baseline_arm_1][phq9_total] > 5", "[screening_arm_1][phq9_total] > 5", "[previous-event-name][phq9_total] > 5",
     "[user-name] <> ''", "[arm-number] = 1", "[current-instance] > 1", "[atrq_duration][current-instance] > 5",
     "[atrq_duration][previous-instance] > 5"],
)
def test_what_a_candidates_one_row_cannot_hold_is_an_error(study, logic):
    # check passed these; screening then left every candidate unknown (another event's column, the current
    # instance) or stopped with "1:1: smart variable ... not available", naming no rule file
    text = _rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"}}\n")
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    found = [d for d in check_ruleset(ruleset, study) if d.is_error]
    assert [d.code for d in found] == ["LOGIC019"] and found[0].line == 6


@pytest.mark.parametrize(
    "logic", ["[record-name] <> ''", "[event-name][phq9_total] > 5", "[atrq_duration][first-instance] > 5",
              "count_instances(atrq, [atrq_duration][current-instance] > 5) >= 1"],
)
def test_what_screening_reads_from_a_candidates_row_is_fine(study, logic):
    text = _rules(f"  - {{id: I1, kind: inclusion, text: t, logic: \"{logic}\"}}\n")
    ruleset, _ = parse_ruleset(text, file="r.yaml")
    assert [d.format() for d in check_ruleset(ruleset, study) if d.is_error] == []
