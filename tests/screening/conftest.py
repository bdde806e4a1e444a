"""Fixtures for screening tests: the KAP study, its compiled rules, and a builder of candidates in REDCap's flat
export shape (text cells, one screening row plus one row per treatment-history instance)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from trialkit.definitions import load_study
from trialkit.definitions.rules import load_ruleset
from trialkit.records import IntakeData
from trialkit.screening.engine import compile_rules, screen

ROOT = Path(__file__).resolve().parents[2]
KAP_RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"
AS_OF = dt.date(2026, 11, 2)
SCREENING = "2026-10-26"

# A candidate who meets every criterion on 2026-10-26 (male: I7 and E6 do not apply; on no antidepressant: I6 n/a).
ELIGIBLE = {
    "screening_date": SCREENING,
    "consent_signed": "1",
    "consent_date": "2026-10-24",
    "consent_version": "1.0",
    "first_name": "Pat",
    "last_name": "Example",
    "email": "pat@example.org",
    "dob": "1980-05-17",
    "sex": "2",
    "childbearing_potential": "0",
    "mini_mdd": "1",
    "mini_mde_current": "1",
    "mini_psychotic_features": "0",
    "mini_bipolar_1": "0",
    "mini_bipolar_2": "0",
    "mini_schizophrenia": "0",
    "mini_schizoaffective": "0",
    "mini_other_psychotic": "0",
    "episode_start_date": "2025-12-01",
    "aud_severity": "0",
    "sud_severity": "1",
    "ketamine_recreational_12m": "0",
    "ketamine_use_disorder": "0",
    "prior_ketamine_treatment": "0",
    "ect_current_episode": "0",
    "tms_current_episode": "0",
    "vns_current_episode": "0",
    "hx_aneurysm": "0",
    "hx_avm": "0",
    "hx_ich": "0",
    "ketamine_hypersensitivity": "0",
    "current_ad": "0",
    "maoi_past_month": "0",
    "benzo_current": "1",
    "benzo_lorazepam_eq": "2",
    "vs_sbp_1": "138",
    "vs_dbp_1": "84",
    "vs_sbp_2": "160",
    "vs_dbp_2": "90",
    "vs_height_cm": "170.0",
    "vs_weight_kg": "101.2",
    "vs_bmi": "35",
    "madrs_date": "2026-10-12",
    **{f"madrs_{i}": "2" for i in range(1, 11)},
    "madrs_total": "20",
    "cssrs_q2": "0",
    "cssrs_q6_lifetime": "0",
    "inv_unsafe": "0",
    "inv_name": "Investigator 1",
    "inv_date": SCREENING,
}

TRIALS = [
    {
        "atrq_drug": "sertraline",
        "atrq_dose": "100",
        "atrq_min_dose": "50",
        "atrq_duration": "8",
        "atrq_current_episode": "1",
        "atrq_improvement": "20",
    },
    {
        "atrq_drug": "venlafaxine",
        "atrq_dose": "150",
        "atrq_min_dose": "150",
        "atrq_duration": "6",
        "atrq_current_episode": "1",
        "atrq_improvement": "49",
    },
]


def flat_rows(candidates: dict[str, tuple[dict, list[dict]]]) -> pl.DataFrame:
    """REDCap flat export rows (all text) for {record_id: (screening fields, atrq instances)}."""
    rows = []
    for rid, (fields, trials) in candidates.items():
        rows.append({"record_id": rid, "redcap_event_name": "screening_arm_1", **fields})
        for i, t in enumerate(trials, 1):
            rows.append(
                {
                    "record_id": rid,
                    "redcap_event_name": "screening_arm_1",
                    "redcap_repeat_instrument": "atrq",
                    "redcap_repeat_instance": str(i),
                    **t,
                }
            )
    cols: dict[str, None] = {
        "record_id": None,
        "redcap_event_name": None,
        "redcap_repeat_instrument": None,
        "redcap_repeat_instance": None,
    }
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], schema={c: pl.String for c in cols})


@pytest.fixture(scope="session")
def study():
    return load_study(ROOT)


@pytest.fixture(scope="session")
def rules(study):
    return compile_rules(load_ruleset(KAP_RULES, study), study)


@pytest.fixture
def run(study, rules):
    """Screen candidates given as {record_id: (overrides of ELIGIBLE, trials or None)}; None values blank a field."""

    def _run(cands: dict[str, tuple[dict, list[dict] | None]], as_of: dt.date = AS_OF):
        built = {}
        for rid, (over, trials) in cands.items():
            fields = {**ELIGIBLE, **over}
            fields = {k: v for k, v in fields.items() if v is not None}
            built[rid] = (fields, TRIALS if trials is None else trials)
        intake = IntakeData.from_frame(flat_rows(built), study)
        return screen(rules, intake, as_of=as_of)

    return _run
