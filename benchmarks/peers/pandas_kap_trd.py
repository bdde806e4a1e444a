"""Five KAP-TRD criteria (I1, I4, I5, E6, E9) written by hand in vectorised pandas: the peer of trialkit's screening.

What a careful analyst would write without trialkit: pandas' nullable dtypes ("string", "Float64", "boolean") give
three-valued logic for free (NA & False is False, NA | True is True), a date window is a timedelta, and the
distinct failed antidepressant trials are a drop_duplicates over (record, drug) then a count per record. The
criteria follow eligibility_rules/kap_trd.yaml exactly, and the benchmark checks, before timing anything, that the
per-candidate results equal trialkit's on the same data.

Result codes are trialkit's (trialkit.screening.outcomes.Result): 0 met, 1 not met, 2 unknown, 3 not applicable.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

CRITERIA = ("I1", "I4", "I5", "E6", "E9")
MET, NOT_MET, UNKNOWN, NOT_APPLICABLE = 0, 1, 2, 3

_CODES = [
    "sex", "childbearing_potential", "pregnant", "breastfeeding", "preg_test_result", "maoi_past_month",
    "benzo_current",
]  # fmt: skip
_DATES = ["screening_date", "dob", "madrs_date", "maoi_last_dose_date"]
_NUMBERS = ["madrs_total", "benzo_lorazepam_eq"]


def prepare(records, atrq) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Polars frames (as the benchmark reads them) to pandas with nullable dtypes. Not part of the timed work:
    trialkit is timed from frames in memory too."""
    rec = records.select(["record_id", *_CODES, *_DATES, *_NUMBERS]).to_pandas()
    for c in ["record_id", *_CODES]:
        rec[c] = rec[c].astype("string")
    for c in _NUMBERS:
        rec[c] = rec[c].astype("Float64")
    for c in _DATES:
        rec[c] = pd.to_datetime(rec[c])
    cols = ["record_id", "atrq_drug", "atrq_current_episode", "atrq_dose", "atrq_min_dose", "atrq_duration",
            "atrq_improvement"]  # fmt: skip
    inst = atrq.select([c for c in cols if c in atrq.columns]).to_pandas()
    for c in ("record_id", "atrq_drug", "atrq_current_episode"):
        inst[c] = inst[c].astype("string")
    for c in ("atrq_dose", "atrq_min_dose", "atrq_duration", "atrq_improvement"):
        inst[c] = inst[c].astype("Float64")
    inst["atrq_drug_other"] = (
        pd.array([pd.NA] * len(inst), dtype="string")
        if "atrq_drug_other" not in inst
        else (atrq["atrq_drug_other"].to_pandas().astype("string"))
    )
    return rec, inst


def _code(result: pd.Series) -> np.ndarray:
    """A criterion's truth (boolean with NA) as result codes."""
    out = np.where(result.fillna(False).to_numpy(bool), MET, NOT_MET)
    return np.where(result.isna().to_numpy(), UNKNOWN, out).astype(np.uint8)


def _applies(code: np.ndarray, applies: pd.Series) -> np.ndarray:
    a = applies.to_numpy(dtype=object, na_value=None)
    out = np.where(a == False, NOT_APPLICABLE, code)  # noqa: E712 (elementwise over an object array)
    return np.where(applies.isna().to_numpy(), UNKNOWN, out).astype(np.uint8)


def _days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return (later - earlier).dt.days.astype("Float64")


def screen(rec: pd.DataFrame, inst: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Result code per candidate and criterion, one row per candidate in input order."""
    today = rec["screening_date"].fillna(pd.Timestamp(as_of))
    out = {"record_id": rec["record_id"]}

    # I1: calendar age 18 to 75 on the screening date (the birthday of 29 February is reached on 1 March)
    dob = rec["dob"]
    key_today = today.dt.month * 32 + today.dt.day
    key_dob = dob.dt.month * 32 + dob.dt.day
    age = (today.dt.year - dob.dt.year - (key_today < key_dob).astype(int)).astype("Float64")
    age = age.mask(dob.isna())
    out["I1"] = _code((age >= 18) & (age <= 75))

    # I4: at least 2 distinct failed adequate antidepressant trials in the current episode
    cond = (
        (inst["atrq_current_episode"] == "1")
        & (inst["atrq_dose"] >= inst["atrq_min_dose"])
        & (inst["atrq_duration"] >= 6)
        & (inst["atrq_improvement"] < 50)
    )
    drug = inst["atrq_drug"].mask(inst["atrq_drug"] == "")
    other = inst["atrq_drug_other"].str.strip().str.lower()
    text = drug.where(drug != "other", other)  # NA where the drug is NA (unknown which branch)
    text = text.mask(drug.isna())
    yes = cond.fillna(False).to_numpy(bool)
    maybe = cond.fillna(True).to_numpy(bool)
    known = text.notna().to_numpy()
    pairs = pd.DataFrame({"record_id": inst["record_id"], "text": text})
    lo = pairs[yes & known].drop_duplicates().groupby("record_id", sort=False).size()
    hi = pairs[maybe & known].drop_duplicates().groupby("record_id", sort=False).size()
    gaps = pairs[maybe & ~known].groupby("record_id", sort=False).size()
    has = rec["record_id"].isin(inst["record_id"].dropna().unique()).to_numpy()
    lo = rec["record_id"].map(lo).fillna(0).to_numpy(np.int64)
    hi = rec["record_id"].map(hi).fillna(0).to_numpy(np.int64) + rec["record_id"].map(gaps).fillna(0).to_numpy(np.int64)
    i4 = np.where(lo >= 2, MET, np.where(hi < 2, NOT_MET, UNKNOWN))
    out["I4"] = np.where(has, i4, UNKNOWN).astype(np.uint8)

    # I5: MADRS >= 20, assessed 0 to 14 days before the screening date
    d = _days(today, rec["madrs_date"])
    out["I5"] = _code((rec["madrs_total"] >= 20) & (d >= 0) & (d <= 14))

    # E6: pregnant or breastfeeding, for women and anyone of childbearing potential
    cbp = rec["childbearing_potential"] == "1"
    applies = (rec["sex"] == "1") | cbp
    e6 = (rec["pregnant"] == "1") | (rec["breastfeeding"] == "1") | (cbp & (rec["preg_test_result"] == "1"))
    out["E6"] = _applies(_code(e6), applies)

    # E9: MAOI within 14 days, or benzodiazepine above 2 mg lorazepam-equivalent
    maoi = (rec["maoi_past_month"] == "1") & (_days(today, rec["maoi_last_dose_date"]) <= 14)
    benzo = (rec["benzo_current"] == "1") & (rec["benzo_lorazepam_eq"] > 2)
    out["E9"] = _code(maoi | benzo)
    return pd.DataFrame(out)
