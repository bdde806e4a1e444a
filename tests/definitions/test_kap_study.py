"""The KAP-TRD study as defined in the repository: checks clean, carries what the protocol needs."""

from __future__ import annotations

import polars as pl
import pytest

from trialkit.definitions import FieldType, check_study, load_study
from trialkit.logic import evaluate, parse


@pytest.fixture(scope="module")
def study(repo_root):
    return load_study(repo_root)


def test_repository_study_has_no_problem(repo_root):
    result = check_study(repo_root)
    assert [d.format() for d in result.diagnostics] == []


def test_schedule_matches_the_protocol(study):
    assert [e.name for e in study.events] == [
        "screening_arm_1",
        "baseline_arm_1",
        "treatment_arm_1",
        "end_of_series_arm_1",
        "maintenance_arm_1",
        "followup_1m_arm_1",
        "followup_3m_arm_1",
        "followup_6m_arm_1",
    ]
    assert study.event("screening_arm_1").instruments[:2] == ("consent", "demographics")
    assert set(study.event("baseline_arm_1").instruments) == {"phq9", "madrs", "vital_signs", "pregnancy_test"}
    assert set(study.event("end_of_series_arm_1").instruments) == {"phq9", "madrs", "gad7", "cssrs", "maintenance_plan"}
    for fu in ("followup_1m_arm_1", "followup_3m_arm_1", "followup_6m_arm_1"):
        assert set(study.event(fu).instruments) == {"phq9", "madrs", "cssrs", "followup"}
    assert study.is_repeating("atrq", "screening_arm_1")
    assert study.is_repeating("kap_session", "treatment_arm_1")
    assert study.is_repeating("kap_session", "maintenance_arm_1")
    assert not study.is_repeating("phq9")


# Fields every eligibility criterion (I1-I8, E1-E13 of STUDY.md) is decided from.
CRITERIA_FIELDS = {
    "I1": ["dob", "screening_date"],
    "I2": ["mini_mdd", "mini_mde_current"],
    "I3": ["episode_start_date", "episode_duration_weeks"],
    "I4": ["atrq_drug", "atrq_dose", "atrq_min_dose", "atrq_duration", "atrq_current_episode", "atrq_improvement",
           "atrq_adequate", "atrq_failed"],
    "I5": ["madrs_total", "madrs_date"],
    "I6": ["current_ad", "current_ad_stable_date"],
    "I7": ["childbearing_potential", "preg_test_result", "preg_test_date"],
    "I8": ["consent_signed", "consent_date"],
    "E1": ["mini_bipolar_1", "mini_bipolar_2", "mini_schizophrenia", "mini_schizoaffective", "mini_other_psychotic",
           "mini_psychotic_features"],
    "E2": ["aud_severity", "sud_severity"],
    "E3": ["ketamine_recreational_12m", "ketamine_use_disorder"],
    "E4": ["prior_ketamine_treatment", "prior_ketamine_nonresponse"],
    "E5": ["vs_sbp_1", "vs_dbp_1", "vs_sbp_2", "vs_dbp_2"],
    "E6": ["pregnant", "breastfeeding"],
    "E7": ["cssrs_q4", "cssrs_q5", "cssrs_q6_lifetime", "cssrs_q6_3m"],
    "E8": ["vs_bmi", "vs_height_cm", "vs_weight_kg"],
    "E9": ["maoi_last_dose_date", "benzo_lorazepam_eq"],
    "E10": ["ect_current_episode", "tms_current_episode", "vns_current_episode"],
    "E11": ["hx_aneurysm", "hx_avm", "hx_ich"],
    "E12": ["ketamine_hypersensitivity"],
    "E13": ["inv_unsafe", "inv_name", "inv_date"],
}


@pytest.mark.parametrize("criterion", sorted(CRITERIA_FIELDS))
def test_every_criterion_can_be_decided_from_fields(study, criterion):
    fields = study.fields
    missing = [f for f in CRITERIA_FIELDS[criterion] if f not in fields]
    assert missing == []


def test_identifiers_are_flagged(study):
    ids = {f.name for f in study.iter_fields() if f.identifier}
    assert {"first_name", "last_name", "dob", "email", "phone"} <= ids
    assert "record_id" not in ids


def test_licensed_instruments_have_neutral_labels(study):
    for i in range(1, 11):
        assert study.field(f"madrs_{i}").label == f"MADRS item {i}"
        assert study.field(f"madrs_{i}").choice_codes == tuple(str(n) for n in range(7))
    for q in ("cssrs_q1", "cssrs_q2", "cssrs_q3", "cssrs_q4", "cssrs_q5"):
        assert study.field(q).label.startswith("C-SSRS screener item")
    for name, f in study.fields.items():
        if name.startswith("atrq_"):
            assert "MGH" not in f.label


def test_cssrs_skip_logic(study):
    for q in ("cssrs_q3", "cssrs_q4", "cssrs_q5"):
        assert study.field(q).show_if == "[cssrs_q2] = '1'"
    assert study.field("cssrs_q6_3m").show_if == "[cssrs_q6_lifetime] = '1'"


def _calc(study, name: str, rows: list[dict]) -> list:
    frame = pl.DataFrame(rows, schema={k: pl.String for r in rows for k in r})
    result = evaluate(parse(study.field(name).calculation), frame, fields=study.field_specs(), missing_columns="blank")
    return result.values.to_list()


@pytest.mark.parametrize(("form", "items", "top"), [("phq9", 9, 3), ("gad7", 7, 3), ("madrs", 10, 6)])
def test_scores_are_blank_when_an_item_is_missing(study, form, items, top):
    full = {"record_id": "1"} | {f"{form}_{i}": str(top) for i in range(1, items + 1)}
    partial = dict(full, record_id="2") | {f"{form}_2": None}
    assert study.field(f"{form}_total").type is FieldType.CALC
    assert _calc(study, f"{form}_total", [full, partial]) == [items * top, None]


def test_atrq_flags_blank_until_decidable(study):
    rows = [
        {"record_id": "1", "atrq_dose": "100", "atrq_min_dose": "50", "atrq_duration": "8", "atrq_improvement": "20"},
        {"record_id": "2", "atrq_dose": "25", "atrq_min_dose": "50", "atrq_duration": "8", "atrq_improvement": "60"},
        {"record_id": "3", "atrq_dose": None, "atrq_min_dose": "50", "atrq_duration": "8", "atrq_improvement": None},
    ]
    assert _calc(study, "atrq_adequate", rows) == [1, 0, None]
    assert _calc(study, "atrq_failed", rows) == [1, 0, None]


def test_bmi(study):
    rows = [
        {"record_id": "1", "vs_weight_kg": "81.0", "vs_height_cm": "180.0"},
        {"record_id": "2", "vs_weight_kg": "80", "vs_height_cm": None},
    ]
    assert _calc(study, "vs_bmi", rows) == [25.0, None]
