"""Seeded generator of synthetic KAP-TRD intake data in REDCap's flat export shape.

    python examples/generate_intake.py [--n 300] [--seed 20261102] [--out examples/kap_trd_intake.csv]

Every person is made up: names, dates and scores come from a seeded random generator, so the same arguments
always give the same file. The mix is chosen so that screening shows all three dispositions and most criteria
as reasons: each candidate draws a protocol failure (FAILURES: about half do) and a data gap still to collect
(GAPS: about two in five; MADRS not done, vitals missing, an unsigned investigator review, a treatment-history
trial whose outcome is not recorded yet, ...). A failure decides whatever is missing, so the default file screens
as 87 eligible, 162 ineligible and 51 pending. Dates are relative to AS_OF, the screening reference date the demo
uses (`trialkit demo` screens the file as of that date).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from collections.abc import Iterable
from pathlib import Path

AS_OF = dt.date(2026, 11, 2)
DEFAULT_N = 300
DEFAULT_SEED = 20261102
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "kap_trd_intake.csv"

# drug code -> (class code, minimum adequate dose mg/day, a typical dose range)
DRUGS = {
    "sertraline": ("1", 50, (50, 200)),
    "fluoxetine": ("1", 20, (20, 60)),
    "paroxetine": ("1", 20, (20, 50)),
    "citalopram": ("1", 20, (20, 40)),
    "escitalopram": ("1", 10, (10, 20)),
    "venlafaxine": ("2", 150, (75, 300)),
    "duloxetine": ("2", 60, (60, 120)),
    "desvenlafaxine": ("2", 50, (50, 100)),
    "nortriptyline": ("3", 75, (50, 150)),
    "amitriptyline": ("3", 150, (75, 200)),
    "bupropion": ("5", 300, (150, 450)),
    "mirtazapine": ("6", 30, (15, 45)),
    "vortioxetine": ("8", 10, (10, 20)),
}
FIRST = [
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Riley",
    "Jamie",
    "Robin",
    "Avery",
    "Quinn",
    "Drew",
    "Rowan",
    "Sasha",
    "Noor",
    "Ines",
    "Mateo",
    "Yuki",
    "Kofi",
    "Lena",
    "Omar",
    "Priya",
    "Tomas",
    "Mei",
]
LAST = [
    "Ashdown",
    "Brill",
    "Carrow",
    "Dunmore",
    "Ellery",
    "Fairlie",
    "Garnet",
    "Holloway",
    "Ivers",
    "Jessop",
    "Kestrel",
    "Lorne",
    "Marlow",
    "Northey",
    "Oakes",
    "Penrose",
    "Quill",
    "Rook",
    "Sorrel",
    "Thorne",
]

# Scenario weights: which protocol failure (if any) a candidate gets, and which gaps.
FAILURES = {
    None: 48,
    "I1": 4,
    "I2": 3,
    "I3": 3,
    "I4": 8,
    "I5": 7,
    "I6": 3,
    "I7": 1,
    "I8": 2,
    "E1": 4,
    "E2": 3,
    "E3": 1,
    "E4": 2,
    "E5": 4,
    "E6": 1,
    "E7": 3,
    "E8": 4,
    "E9": 3,
    "E10": 2,
    "E11": 1,
    "E12": 1,
    "E13": 2,
}
GAPS = {
    None: 62,
    "madrs": 8,
    "vitals": 6,
    "atrq_outcome": 6,
    "inv_unsigned": 7,
    "preg_test": 4,
    "episode_start": 3,
    "consent": 3,
    "cssrs": 3,
    "conmeds": 3,
}


def _d(day: dt.date | None) -> str:
    return "" if day is None else day.isoformat()


def _pick(rng: random.Random, weights: dict) -> object:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def _years_before(day: dt.date, years: float, rng: random.Random) -> dt.date:
    return day - dt.timedelta(days=int(years * 365.25) + rng.randint(0, 300))


def _rounddown(x: float, nd: int) -> float:
    f = 10**nd
    return int(x * f) / f


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _madrs_items(rng: random.Random, total: int) -> list[int]:
    items = [0] * 10
    for _ in range(total):
        choices = [i for i in range(10) if items[i] < 6]
        items[rng.choice(choices)] += 1
    return items


def candidate(i: int, rng: random.Random, as_of: dt.date = AS_OF) -> tuple[dict[str, str], list[dict[str, str]]]:
    """One candidate: the screening-event row and its treatment-history (atrq) instance rows."""
    fail = _pick(rng, FAILURES)
    gap = _pick(rng, GAPS)
    if fail is not None and rng.random() < 0.15:  # some screen failures also have gaps
        gap = _pick(rng, {k: v for k, v in GAPS.items() if k})
    r: dict[str, str] = {"record_id": f"{i:04d}", "redcap_event_name": "screening_arm_1"}
    scr = as_of - dt.timedelta(days=rng.randint(0, 21))
    r["screening_date"] = _d(scr)

    # consent
    if gap == "consent":
        r["consent_signed"] = ""
    else:
        r["consent_signed"] = "1"
        consent = scr - dt.timedelta(days=rng.randint(0, 3))
        if fail == "I8":
            consent = as_of + dt.timedelta(days=rng.randint(1, 5))  # dated after the reference date
        r.update(consent_date=_d(consent), consent_version="1.0", consent_obtained_by=f"CRC{rng.randint(1, 4)}")
    r["consent_complete"] = "2" if r["consent_signed"] else "0"

    # demographics
    age = rng.uniform(22, 70)
    if fail == "I1":
        age = rng.choice([rng.uniform(76, 84), rng.uniform(16.2, 17.9)])
    dob = as_of - dt.timedelta(days=int(age * 365.25))
    sex = rng.choices(["1", "2", "3"], weights=[58, 40, 2])[0]
    cbp = "1" if sex == "1" and age < 50 and rng.random() < 0.85 else "0"
    if fail in ("I7", "E6") and sex != "1":
        sex, cbp = "1", "1"
        dob = as_of - dt.timedelta(days=int(rng.uniform(22, 42) * 365.25))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    r.update(
        first_name=first,
        last_name=last,
        dob=_d(dob),
        email=f"{first.lower()}.{last.lower()}{i}@example.org",
        phone=f"(615) 555-{rng.randint(100, 199):04d}",
        sex=sex,
        childbearing_potential=cbp,
        ethnicity=rng.choice(["1", "2", "2", "2", "9"]),
        education_years=str(rng.randint(9, 20)),
    )
    races = {rng.choice(["1", "2", "3", "4", "5", "5", "5", "9"])}
    for code in ("1", "2", "3", "4", "5", "9"):
        r[f"race___{code}"] = "1" if code in races else "0"
    r["age_screening"] = str(int(_rounddown((scr - dob).days / 365.2425, 0)))
    r["demographics_complete"] = "2"

    # psychiatric history (MINI)
    r.update(
        mini_date=_d(scr),
        mini_mdd="1",
        mini_mde_current="1",
        mini_psychotic_features="0",
        mini_bipolar_1="0",
        mini_bipolar_2="0",
        mini_schizophrenia="0",
        mini_schizoaffective="0",
        mini_other_psychotic="0",
    )
    if fail == "I2":
        r["mini_mde_current"] = "0"
        r["mini_psychotic_features"] = ""
    if fail == "E1":
        r[rng.choice(["mini_bipolar_1", "mini_bipolar_2", "mini_psychotic_features", "mini_schizoaffective"])] = "1"
    weeks = rng.randint(10, 160)
    if fail == "I3":
        weeks = rng.randint(1, 3)
    episode = scr - dt.timedelta(weeks=weeks, days=rng.randint(0, 6))
    if fail == "I2":
        episode = None
    if gap == "episode_start":
        episode = None
    r["episode_start_date"] = _d(episode)
    r["episode_duration_weeks"] = "" if episode is None else str(int((scr - episode).days / 7))
    r["aud_severity"] = rng.choice(["0", "0", "0", "1"])
    r["sud_severity"] = rng.choice(["0", "0", "0", "0", "1"])
    if fail == "E2":
        r[rng.choice(["aud_severity", "sud_severity"])] = rng.choice(["2", "3"])
    r.update(
        ketamine_recreational_12m="0",
        ketamine_use_disorder="0",
        prior_ketamine_treatment="0",
        ect_current_episode="0",
        tms_current_episode="0",
        vns_current_episode="0",
    )
    if fail == "E3":
        r[rng.choice(["ketamine_recreational_12m", "ketamine_use_disorder"])] = "1"
    if rng.random() < 0.1 or fail == "E4":
        r["prior_ketamine_treatment"] = "1"
        r["prior_ketamine_nonresponse"] = "1" if fail == "E4" else "0"
    if fail == "E10":
        r[rng.choice(["ect_current_episode", "tms_current_episode", "vns_current_episode"])] = "1"
    r["psychiatric_history_complete"] = "2"

    # medical history
    r.update(
        hx_aneurysm="0",
        hx_avm="0",
        hx_ich="0",
        hx_hypertension=rng.choice(["0", "0", "1"]),
        hx_cardiac="0",
        ketamine_hypersensitivity="0",
    )
    if fail == "E11":
        r[rng.choice(["hx_aneurysm", "hx_avm", "hx_ich"])] = "1"
    if fail == "E12":
        r["ketamine_hypersensitivity"] = "1"
    r["medical_history_complete"] = "2"

    # concomitant medications
    if gap == "conmeds":
        r["concomitant_meds_complete"] = "0"
    else:
        on_ad = rng.random() < 0.7 or fail == "I6"
        r["current_ad"] = "1" if on_ad else "0"
        if on_ad:
            r["current_ad_name"] = rng.choice(list(DRUGS))
            stable = scr - dt.timedelta(weeks=rng.randint(5, 40))
            if fail == "I6":
                stable = as_of - dt.timedelta(days=rng.randint(3, 20))
            r["current_ad_stable_date"] = _d(stable)
        r["maoi_past_month"] = "0"
        r["benzo_current"] = "1" if rng.random() < 0.25 or fail == "E9" else "0"
        if r["benzo_current"] == "1":
            r["benzo_name"] = rng.choice(["lorazepam", "clonazepam", "diazepam"])
            r["benzo_lorazepam_eq"] = _fmt(rng.choice([0.5, 1.0, 1.5, 2.0]))
        if fail == "E9":
            if rng.random() < 0.5:
                r["benzo_lorazepam_eq"] = _fmt(rng.choice([3.0, 4.0, 6.0]))
            else:
                r["maoi_past_month"] = "1"
                r["maoi_last_dose_date"] = _d(as_of - dt.timedelta(days=rng.randint(2, 12)))
        r["concomitant_meds_complete"] = "2"

    # vital signs
    if gap != "vitals":
        sbp1, dbp1 = rng.randint(108, 150), rng.randint(64, 88)
        sbp2, dbp2 = sbp1 + rng.randint(-8, 6), dbp1 + rng.randint(-5, 4)
        if fail == "E5":
            if rng.random() < 0.5:
                sbp2 = rng.randint(162, 178)
            else:
                dbp1 = rng.randint(92, 102)
        height = round(rng.uniform(152, 192), 1)
        bmi_target = rng.uniform(19.5, 33.5) if fail != "E8" else rng.uniform(35.6, 42)
        weight = round(bmi_target * (height / 100) ** 2, 1)
        r.update(
            vs_date=_d(scr),
            vs_sbp_1=str(sbp1),
            vs_dbp_1=str(dbp1),
            vs_sbp_2=str(sbp2),
            vs_dbp_2=str(min(dbp2, 90)),
            vs_hr=str(rng.randint(56, 96)),
            vs_height_cm=f"{height:.1f}",
            vs_weight_kg=f"{weight:.1f}",
        )
        r["vs_bmi"] = _fmt(round(weight / ((height / 100) * (height / 100)) + 1e-9, 1))
        r["vital_signs_complete"] = "2"
    else:
        r["vital_signs_complete"] = "0"

    # pregnancy
    if sex == "1":
        r["pregnant"], r["breastfeeding"] = "0", "0"
        if fail == "E6":
            r["breastfeeding"] = "1"
        if cbp == "1" and gap != "preg_test":
            r["preg_test_date"] = _d(scr)
            r["preg_test_result"] = "1" if fail == "I7" else "0"
        r["pregnancy_test_complete"] = "2" if cbp == "0" or gap != "preg_test" else "1"

    # PHQ-9, GAD-7
    phq = [rng.choice([1, 2, 2, 3, 3]) for _ in range(9)]
    r["phq9_date"] = _d(scr)
    for k, v in enumerate(phq, 1):
        r[f"phq9_{k}"] = str(v)
    r["phq9_difficulty"] = str(rng.randint(1, 3))
    total = sum(phq)
    r["phq9_total"] = str(total)
    r["phq9_severity"] = str(1 if total <= 4 else 2 if total <= 9 else 3 if total <= 14 else 4 if total <= 19 else 5)
    if phq[8] > 0:
        r["phq9_safety_followup"] = "1"
    r["phq9_complete"] = "2"
    gad = [rng.randint(0, 3) for _ in range(7)]
    r["gad7_date"] = _d(scr)
    for k, v in enumerate(gad, 1):
        r[f"gad7_{k}"] = str(v)
    r["gad7_total"] = str(sum(gad))
    r["gad7_complete"] = "2"

    # MADRS
    if gap != "madrs":
        total = rng.randint(22, 44) if fail != "I5" else rng.randint(12, 19)
        madrs_date = scr - dt.timedelta(days=rng.randint(0, 6))
        if fail == "I5" and rng.random() < 0.35:
            total = rng.randint(24, 36)
            madrs_date = as_of - dt.timedelta(days=rng.randint(20, 40))  # too old
        r["madrs_date"] = _d(madrs_date)
        r["madrs_rater"] = f"R{rng.randint(1, 3)}"
        for k, v in enumerate(_madrs_items(rng, total), 1):
            r[f"madrs_{k}"] = str(v)
        r["madrs_total"] = str(total)
        r["madrs_complete"] = "2"
    else:
        r["madrs_complete"] = "0"

    # C-SSRS screener
    if gap != "cssrs":
        r.update(cssrs_date=_d(scr), cssrs_q1=rng.choice(["0", "1", "1"]), cssrs_q2=rng.choice(["0", "0", "0", "1"]))
        if r["cssrs_q2"] == "1":
            r.update(cssrs_q3=rng.choice(["0", "1"]), cssrs_q4="0", cssrs_q5="0")
        r["cssrs_q6_lifetime"] = rng.choice(["0", "0", "0", "1"])
        if r["cssrs_q6_lifetime"] == "1":
            r["cssrs_q6_3m"] = "0"
        if fail == "E7":
            if rng.random() < 0.5:
                r.update(cssrs_q2="1", cssrs_q3="1", cssrs_q4="1", cssrs_q5=rng.choice(["0", "1"]))
            else:
                r.update(cssrs_q6_lifetime="1", cssrs_q6_3m="1")
        r["cssrs_complete"] = "2"
    else:
        r["cssrs_complete"] = "0"

    # investigator review (E13: attested)
    r["inv_unsafe"] = "1" if fail == "E13" else "0"
    if fail == "E13":
        r["inv_unsafe_details"] = "Unstable cardiac condition under investigation."
    r["inv_name"] = f"Investigator {rng.randint(1, 3)}"
    r["inv_date"] = _d(scr)
    if gap == "inv_unsigned":
        r["inv_name"], r["inv_date"] = "", ""
        if rng.random() < 0.5:
            r["inv_unsafe"] = ""
    r["investigator_review_complete"] = "2" if r["inv_date"] else "1"

    instances = _treatment_history(rng, r, scr, episode, fail, gap)
    return r, instances


def _treatment_history(rng, r, scr, episode, fail, gap) -> list[dict[str, str]]:
    n_failed = rng.randint(2, 4)
    extra = rng.randint(0, 2)
    if fail == "I4":
        n_failed = 1
    drugs = rng.sample(list(DRUGS), n_failed + extra)
    out = []
    start_anchor = episode or (scr - dt.timedelta(weeks=80))
    cursor = start_anchor + dt.timedelta(days=rng.randint(0, 20))
    for k, drug in enumerate(drugs):
        cls, min_dose, (lo, hi) = DRUGS[drug]
        adequate_failed = k < n_failed
        weeks = rng.randint(6, 14) if adequate_failed else rng.randint(2, 12)
        dose = rng.randrange(min_dose, hi + 1, 5) if adequate_failed else rng.randrange(lo, hi + 1, 5)
        improvement = rng.randint(0, 45) if adequate_failed else rng.randint(10, 80)
        if not adequate_failed and rng.random() < 0.5:
            weeks = rng.randint(2, 5)  # too short to count
        in_episode = "1"
        if fail == "I4" and k == n_failed and rng.random() < 0.5:
            in_episode = "0"  # an older trial from a previous episode
        start = cursor
        stop = start + dt.timedelta(weeks=weeks)
        cursor = stop + dt.timedelta(days=rng.randint(3, 30))
        ongoing = "0"
        row = {
            "record_id": r["record_id"],
            "redcap_event_name": "screening_arm_1",
            "redcap_repeat_instrument": "atrq",
            "redcap_repeat_instance": str(k + 1),
            "atrq_drug": drug,
            "atrq_class": cls,
            "atrq_dose": str(dose),
            "atrq_min_dose": str(min_dose),
            "atrq_start_date": _d(start),
            "atrq_ongoing": ongoing,
            "atrq_stop_date": _d(stop),
            "atrq_current_episode": in_episode,
            "atrq_improvement": str(improvement),
        }
        if gap == "atrq_outcome" and k == 1:
            row["atrq_improvement"] = ""  # outcome of the second trial not recorded yet
        duration = _rounddown((stop - start).days / 7, 1)
        row["atrq_duration"] = _fmt(duration)
        row["atrq_adequate"] = "1" if dose >= min_dose and duration >= 6 else "0"
        row["atrq_failed"] = "" if row["atrq_improvement"] == "" else ("1" if improvement < 50 else "0")
        row["atrq_complete"] = "2" if row["atrq_improvement"] else "1"
        out.append(row)
    return out


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, as_of: dt.date = AS_OF) -> list[dict[str, str]]:
    """All export rows: per candidate the screening row, then its atrq instances (REDCap's export order)."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for i in range(1, n + 1):
        main, instances = candidate(i, rng, as_of)
        rows.append(main)
        rows.extend(instances)
    return rows


def export_columns(study_dir: Path | None = None) -> list[str]:
    """REDCap's export header: record id, the event/repeat columns, then every field in dictionary order."""
    from trialkit.definitions import load_study

    study = load_study(study_dir or HERE.parent)
    names = study.export_field_names()
    return [names[0], "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance", *names[1:]]


def write_csv(rows: Iterable[dict[str, str]], path: Path, columns: list[str]) -> None:
    rows = list(rows)
    unknown = {k for row in rows for k in row} - set(columns)
    if unknown:
        raise SystemExit(f"generator wrote columns the study does not have: {sorted(unknown)}")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=DEFAULT_N)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = generate(args.n, args.seed)
    write_csv(rows, args.out, export_columns())
    print(f"wrote {args.n} candidates ({len(rows)} rows) to {args.out}; screen them as of {AS_OF.isoformat()}")


if __name__ == "__main__":
    main()
