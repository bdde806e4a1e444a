"""No invalid value decides: for any field the KAP-TRD rules read and any value that fails that field's checks
(not a code, unreadable, out of range, a labels-export word), screening gives exactly the results it gives with
the field blank (and the calculated fields it feeds blank), and the report moves the field from "still needed"
to "to correct". Bounded hypothesis search over fields, values and starting candidates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.definitions import load_study
from trialkit.definitions.rules import load_ruleset
from trialkit.records import IntakeData
from trialkit.records.cellchecks import range_bound
from trialkit.records.convert import study_columns
from trialkit.records.usable import checked_columns
from trialkit.screening.engine import compile_rules, screen
from trialkit.screening.explain import candidates

ROOT = Path(__file__).resolve().parents[2]
STUDY = load_study(ROOT)
RULES = compile_rules(load_ruleset(ROOT / "eligibility_rules" / "kap_trd.yaml", STUDY), STUDY)
AS_OF = dt.date(2026, 11, 2)

from tests.screening.conftest import ELIGIBLE, TRIALS, flat_rows  # noqa: E402

COLUMNS = {c.name: c for c in study_columns(STUDY)}
READ = [c for c in checked_columns(STUDY, COLUMNS, RULES.read_columns()) if c.kind != "complete"]
RECORD_FIELDS = [c for c in READ if c.form != "atrq"]
TRIAL_FIELDS = [c for c in READ if c.form == "atrq"]


def invalid_values(col) -> list[str]:
    """Values that fail this column's checks."""
    if col.codes is not None:
        return ["Yes", "no", "99", "1.0", " 1", "x"]
    if col.kind in ("date", "datetime"):
        return ["11/02/2026", "2026-02-30", "2026-10-12 00:00:00" if col.kind == "date" else "2026-10-12", "soon"]
    if col.kind == "time":
        return ["25:99", "noon"]
    if col.kind in ("integer", "number"):
        out = ["abc", "1e400", "12,5,3", "--4"]
        field = col.field
        lo = range_bound(field.min, col.kind, AS_OF) if field else None
        hi = range_bound(field.max, col.kind, AS_OF) if field else None
        if isinstance(lo, float):
            out.append(str(int(lo) - 7))
        if isinstance(hi, float):
            out.append(str(int(hi) + 1000))
        return out
    if col.validation is not None:
        return ["not valid!"]
    return []


# The reference date is the one field whose blank is not "unknown": the --as-of date stands in for a screening
# date not recorded yet, while one recorded but unreadable leaves 'today' unknown (tested on its own below).
CASES = [(c, v) for c in RECORD_FIELDS if c.name != RULES.reference_field for v in invalid_values(c)]
TRIAL_CASES = [(c, v) for c in TRIAL_FIELDS for v in invalid_values(c)]
STARTS = [
    {},  # eligible
    {"madrs_total": None, "madrs_4": None},  # pending
    {"hx_ich": "1"},  # ineligible by E11
    {"sex": "1", "childbearing_potential": "1", "preg_test_result": None},  # pending on I7
]


def _feeds(name: str) -> set[str]:
    """The calcs computed from `name`, through nested calcs."""
    from trialkit import logic

    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for f in STUDY.iter_fields():
            if str(f.type) == "calc" and f.name not in out and f.calculation.strip():
                refs = {r.split(":", 1)[-1] for r in logic.reference_columns(logic.parse(f.calculation))}
                if refs & ({name} | out):
                    out.add(f.name)
                    grew = True
    return out


def _screen(fields: dict, trials: list[dict]):
    intake = IntakeData.from_frame(flat_rows({"c": (fields, trials)}), STUDY)
    return next(candidates(screen(RULES, intake, as_of=AS_OF)))


def _compare(bad, blank, field: str) -> None:
    assert bad.disposition == blank.disposition, field
    assert [o.result for o in bad.criteria] == [o.result for o in blank.criteria], field
    assert bad.primary_reason == blank.primary_reason
    assert field not in bad.still_needed
    name = field.split("___", 1)[0]
    if any(n == name or n.endswith(f".{name}") for n in blank.still_needed):
        assert any(t.startswith(f"{name}") for t in bad.to_correct), (field, bad.to_correct)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), start=st.sampled_from(STARTS))
def test_an_invalid_record_value_decides_nothing(case, start):
    col, value = case
    base = {k: v for k, v in {**ELIGIBLE, **start}.items() if v is not None}
    bad = _screen({**base, col.name: value}, TRIALS)
    cleared = {k: v for k, v in base.items() if k != col.name and k not in _feeds(col.field_name)}
    blank = _screen(cleared, TRIALS)
    _compare(bad, blank, col.name)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(TRIAL_CASES), trial=st.sampled_from([0, 1]))
def test_an_invalid_treatment_history_value_decides_nothing(case, trial):
    col, value = case
    trials = [dict(t) for t in TRIALS]
    bad_trials = [dict(t) for t in trials]
    bad_trials[trial][col.name] = value
    blank_trials = [dict(t) for t in trials]
    blank_trials[trial].pop(col.name, None)
    for calc in _feeds(col.field_name):
        blank_trials[trial].pop(calc, None)
    bad = _screen(dict(ELIGIBLE), bad_trials)
    blank = _screen(dict(ELIGIBLE), blank_trials)
    _compare(bad, blank, col.name)


def test_an_invalid_screening_date_leaves_every_window_unknown():
    for value in invalid_values(COLUMNS[RULES.reference_field]):
        bad = _screen({**ELIGIBLE, RULES.reference_field: value}, TRIALS)
        assert bad.disposition == "pending"
        assert {o.id for o in bad.criteria if o.result == "unknown"} >= {"I1", "I3", "I5"}
        assert any(t.startswith(f"{RULES.reference_field}: ") for t in bad.to_correct)


def test_the_search_covers_every_field_the_rules_read():
    covered = {c.name for c, _ in CASES + TRIAL_CASES}
    assert len(covered) >= 40
    assert {"vs_sbp_1", "mini_mdd", "madrs_3", "atrq_dose", "atrq_drug"} <= covered


def test_flat_rows_shape_is_what_screening_reads():
    frame = flat_rows({"c": (ELIGIBLE, TRIALS)})
    assert isinstance(frame, pl.DataFrame) and frame.height == 1 + len(TRIALS)
