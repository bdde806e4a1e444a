"""Screening semantics on the KAP-TRD rules: results, dispositions, reasons, missing fields, reference dates."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pytest

from trialkit.definitions.rules import Criterion, CriterionKind
from trialkit.errors import UsageError
from trialkit.screening.engine import compile_rules, screen, select_candidates
from trialkit.screening.explain import candidates, summarise

from .conftest import AS_OF, TRIALS


def _one(screening, rid="0001"):
    return next(c for c in candidates(screening) if c.record_id == rid)


def _result(cand, cid):
    return next(o for o in cand.criteria if o.id == cid)


def test_baseline_candidate_is_eligible_at_every_boundary(run):
    cand = _one(run({"0001": ({}, None)}))
    assert cand.disposition == "eligible"
    assert cand.primary_reason is None and cand.reasons == () and cand.still_needed == ()
    results = {o.id: o.result for o in cand.criteria}
    assert results["I6"] == results["I7"] == results["E6"] == "not_applicable"
    assert all(results[f"I{i}"] == "met" for i in (1, 2, 3, 4, 5, 8))
    assert all(results[f"E{i}"] == "not_met" for i in range(1, 14) if i != 6)


@pytest.mark.parametrize(
    ("override", "criterion"),
    [
        ({"dob": "2008-10-27"}, "I1"),  # 18 tomorrow
        ({"dob": "1950-10-26"}, "I1"),  # 76 on the screening date
        ({"mini_mde_current": "0", "mini_psychotic_features": None}, "I2"),
        ({"episode_start_date": "2026-09-29"}, "I3"),  # 27 days
        ({"madrs_1": "1", "madrs_total": "19"}, "I5"),  # the total is computed from the items
        ({"madrs_date": "2026-10-11"}, "I5"),  # 15 days before screening
        ({"current_ad": "1", "current_ad_stable_date": "2026-09-29"}, "I6"),
        (
            {
                "sex": "1",
                "childbearing_potential": "1",
                "pregnant": "0",
                "breastfeeding": "0",
                "preg_test_result": "8",
                "preg_test_date": "2026-10-26",
            },
            "I7",
        ),
        ({"consent_date": "2026-10-27"}, "I8"),
        ({"mini_bipolar_2": "1"}, "E1"),
        ({"aud_severity": "2"}, "E2"),
        ({"ketamine_use_disorder": "1"}, "E3"),
        ({"prior_ketamine_treatment": "1", "prior_ketamine_nonresponse": "1"}, "E4"),
        ({"vs_dbp_2": "91"}, "E5"),
        ({"sex": "1", "breastfeeding": "1", "pregnant": "0"}, "E6"),
        ({"cssrs_q2": "1", "cssrs_q4": "0", "cssrs_q5": "1"}, "E7"),
        ({"vs_weight_kg": "101.5", "vs_bmi": "35.1"}, "E8"),  # BMI computed from weight and height
        ({"benzo_lorazepam_eq": "2.5"}, "E9"),
        ({"tms_current_episode": "1"}, "E10"),
        ({"hx_avm": "1"}, "E11"),
        ({"ketamine_hypersensitivity": "1"}, "E12"),
        ({"inv_unsafe": "1"}, "E13"),
    ],
)
def test_each_criterion_can_decide_ineligibility(run, override, criterion):
    cand = _one(run({"0001": (override, None)}))
    assert cand.disposition == "ineligible"
    assert cand.primary_reason == criterion
    assert cand.reasons == (criterion,)
    assert cand.still_needed == ()


def test_age_boundary_uses_calendar_age_on_the_reference_date(run):
    s = run({"a": ({"dob": "2008-10-26"}, None), "b": ({"dob": "1950-10-27"}, None)})
    assert {c.record_id: _result(c, "I1").result for c in candidates(s)} == {"a": "met", "b": "met"}


def test_primary_reason_is_first_in_protocol_order_and_all_reasons_kept(run):
    cand = _one(run({"0001": ({"vs_sbp_1": "170", **{f"madrs_{i}": "1" for i in range(1, 11)}, "hx_ich": "1"}, None)}))
    assert cand.primary_reason == "I5"
    assert cand.reasons == ("I5", "E5", "E11")


def test_missing_data_makes_pending_with_the_fields_to_collect(run):
    cand = _one(run({"0001": ({"madrs_total": None, "madrs_7": None, "vs_bmi": None, "vs_height_cm": None}, None)}))
    assert cand.disposition == "pending"
    assert cand.primary_reason is None
    i5 = _result(cand, "I5")
    assert i5.result == "unknown" and i5.missing == ("madrs_7",)
    assert _result(cand, "E8").missing == ("vs_height_cm",)
    assert cand.still_needed == ("madrs_7", "vs_height_cm")


def test_a_blank_calculated_field_with_its_inputs_there_is_computed_not_asked_for(run):
    cand = _one(run({"0001": ({"madrs_total": None, "vs_bmi": None}, None)}))
    assert cand.disposition == "eligible" and cand.still_needed == ()
    assert _result(cand, "I5").values["madrs_total"] == 20


def test_blank_calculated_fields_name_their_blank_inputs(run):
    cand = _one(run({"0001": ({"madrs_total": None, "madrs_3": None, "vs_bmi": None, "vs_weight_kg": None}, None)}))
    assert cand.disposition == "pending"
    assert _result(cand, "I5").missing == ("madrs_3",)
    assert _result(cand, "E8").missing == ("vs_weight_kg",)
    assert cand.still_needed == ("madrs_3", "vs_weight_kg")


def test_a_decided_failure_wins_over_unknowns(run):
    cand = _one(run({"0001": ({"madrs_total": None, "hx_aneurysm": "1"}, None)}))
    assert cand.disposition == "ineligible" and cand.primary_reason == "E11"
    assert cand.still_needed == ()  # nothing to collect for someone already excluded


def test_kleene_or_decides_despite_blanks(run):
    # one high reading is enough for E5 even with the other readings blank
    cand = _one(run({"0001": ({"vs_sbp_1": "171", "vs_dbp_1": None, "vs_sbp_2": None, "vs_dbp_2": None}, None)}))
    assert _result(cand, "E5").result == "met" and _result(cand, "E5").missing == ()
    # C-SSRS Q4/Q5 are hidden when Q2 is no: no need to collect them
    cand = _one(run({"0001": ({"cssrs_q2": "0", "cssrs_q4": None, "cssrs_q5": None}, None)}))
    assert _result(cand, "E7").result == "not_met"


def test_applicability_unknown_names_only_what_decides_applicability(run):
    cand = _one(
        run({"0001": ({"sex": "1", "childbearing_potential": None, "pregnant": "0", "breastfeeding": "0"}, None)})
    )
    i7 = _result(cand, "I7")
    assert i7.result == "unknown"
    assert i7.missing == ("childbearing_potential",)
    assert cand.disposition == "pending"


def test_applicable_criterion_names_its_own_fields(run):
    cand = _one(run({"0001": ({"current_ad": "1", "current_ad_stable_date": None}, None)}))
    i6 = _result(cand, "I6")
    assert i6.result == "unknown" and i6.missing == ("current_ad_stable_date",)


def test_still_needed_follows_branching_logic(run):
    s = run(
        {
            # 'MAOI in the past month?' blank: its date stays hidden until it is answered, so only the question
            "gate_blank": ({"maoi_past_month": None, "maoi_last_dose_date": None}, None),
            # the question answered yes: now the date is what is missing
            "gate_open": ({"maoi_past_month": "1", "maoi_last_dose_date": None}, None),
            # no benzodiazepine: the hidden dose is not asked for, only what can still decide E9
            "dose_hidden": ({"maoi_past_month": None, "benzo_current": "0", "benzo_lorazepam_eq": None}, None),
        }
    )
    got = {c.record_id: _result(c, "E9") for c in candidates(s)}
    assert got["gate_blank"].result == "unknown"
    assert got["gate_blank"].missing == ("maoi_past_month",)
    assert got["gate_open"].result == "unknown"
    assert got["gate_open"].missing == ("maoi_last_dose_date",)
    assert got["dose_hidden"].result == "unknown"
    assert got["dose_hidden"].missing == ("maoi_past_month",)
    # C-SSRS: q4 and q5 both open on q2 (one decider for two fields); q6 in the past 3 months on lifetime q6
    s = run({"q2_blank": ({"cssrs_q2": None, "cssrs_q6_lifetime": None}, None)})
    (e7,) = [_result(c, "E7") for c in candidates(s)]
    assert e7.result == "unknown"
    assert e7.missing == ("cssrs_q2", "cssrs_q6_lifetime")


def test_attested_criterion_needs_a_signature(run):
    s = run(
        {
            "unsigned_no": ({"inv_name": None, "inv_date": None}, None),
            "blank": ({"inv_unsafe": None}, None),
            "signed_yes": ({"inv_unsafe": "1"}, None),
            "unsigned_yes": ({"inv_unsafe": "1", "inv_date": None}, None),
        }
    )
    got = {c.record_id: (c.disposition, _result(c, "E13").result, _result(c, "E13").missing) for c in candidates(s)}
    assert got["unsigned_no"] == ("pending", "unknown", ("inv_name", "inv_date"))
    assert got["blank"] == ("pending", "unknown", ("inv_unsafe",))
    assert got["signed_yes"] == ("ineligible", "met", ())
    assert got["unsigned_yes"] == ("pending", "unknown", ("inv_date",))


I4_COUNT = "count_distinct_instances(atrq, if(...), ...)"


def test_treatment_history_counts_distinct_failed_adequate_drugs(run):
    same_drug = [TRIALS[0], {**TRIALS[0], "atrq_dose": "150"}]
    too_short = [TRIALS[0], {**TRIALS[1], "atrq_duration": "5.9"}]
    low_dose = [TRIALS[0], {**TRIALS[1], "atrq_dose": "75"}]
    responded = [TRIALS[0], {**TRIALS[1], "atrq_improvement": "50"}]
    old_episode = [TRIALS[0], {**TRIALS[1], "atrq_current_episode": "0"}]
    outcome_blank = [TRIALS[0], {k: v for k, v in TRIALS[1].items() if k != "atrq_improvement"}]
    three = [
        TRIALS[0],
        {**TRIALS[1], "atrq_improvement": None},
        {**TRIALS[1], "atrq_drug": "bupropion", "atrq_min_dose": "300", "atrq_dose": "300"},
    ]
    other = {**TRIALS[1], "atrq_drug": "other", "atrq_drug_other": "Agomelatine"}
    two_others = [other, {**other, "atrq_drug_other": "Tianeptine"}]
    one_other_twice = [other, {**other, "atrq_drug_other": " agomelatine "}]
    other_unnamed = [TRIALS[0], {**other, "atrq_drug_other": None}]
    s = run(
        {
            "same": ({}, same_drug),
            "short": ({}, too_short),
            "dose": ({}, low_dose),
            "resp": ({}, responded),
            "old": ({}, old_episode),
            "blank": ({}, outcome_blank),
            "none": ({}, []),
            "three": ({}, [{k: v for k, v in t.items() if v is not None} for t in three]),
            "others": ({}, two_others),
            "other_twice": ({}, one_other_twice),
            "unnamed": ({}, [{k: v for k, v in t.items() if v is not None} for t in other_unnamed]),
        }
    )
    got = {c.record_id: _result(c, "I4") for c in candidates(s)}
    for rid in ("same", "short", "dose", "resp", "old"):
        assert got[rid].result == "not_met", rid
    assert got["blank"].result == "unknown"
    assert got["blank"].missing == ("atrq.atrq_improvement",)
    assert got["none"].result == "unknown"  # no treatment history recorded yet: not 'no failed trials'
    assert "atrq" in got["none"].missing
    assert got["three"].result == "met"  # two definite failures decide despite the blank outcome
    assert got["same"].values[I4_COUNT] == 1
    # 'other' drugs are told apart by the name written down: two different ones are two failed trials
    assert got["others"].result == "met"
    assert got["other_twice"].result == "not_met"
    assert got["other_twice"].values[I4_COUNT] == 1
    # an 'other' drug without its name could be a second drug: unknown, and its name is what is missing; the
    # name field is hidden (branching logic) on the rows of named drugs, so the blank cells there are not asked for
    assert got["unnamed"].result == "unknown"
    assert got["unnamed"].missing == ("atrq.atrq_drug_other",)
    assert got["blank"].missing == ("atrq.atrq_improvement",)
    assert (
        got["three"].values["atrq instances counted"]
        == "#1 sertraline: yes; #2 venlafaxine: unknown (atrq_improvement blank); #3 bupropion: yes"
    )
    # each trial that did not count says why, in the rule's terms
    assert got["short"].values["atrq instances counted"] == (
        "#1 sertraline: yes; #2 venlafaxine: no (atrq_duration 5.9 < 6)"
    )
    assert got["dose"].values["atrq instances counted"].endswith("(atrq_dose 75 < 150)")
    assert got["resp"].values["atrq instances counted"].endswith("(atrq_improvement 50 >= 50)")
    assert got["old"].values["atrq instances counted"].endswith("(atrq_current_episode 0 <> 1)")
    assert got["none"].values["atrq instances counted"] is None
    assert got["others"].values["atrq instances counted"] == "#1 agomelatine: yes; #2 tianeptine: yes"


def test_windows_are_measured_from_the_screening_date_else_the_as_of_date(run):
    # MADRS 14 days before screening: met, however late the run
    late = run({"0001": ({}, None)}, as_of=dt.date(2027, 6, 1))
    assert _result(_one(late), "I5").result == "met"
    # no screening date: the as-of date stands in (MADRS then 21 days old)
    s = run({"0001": ({"screening_date": None}, None)}, as_of=dt.date(2026, 11, 2))
    assert _result(_one(s), "I5").result == "not_met"
    s = run({"0001": ({"screening_date": None}, None)}, as_of=dt.date(2026, 10, 20))
    assert _result(_one(s), "I5").result == "met"


def test_results_carry_stamp_and_as_of(run, rules):
    s = run({"0001": ({}, None)})
    assert s.stamp() == {"ruleset": rules.stamp(), "as_of": AS_OF.isoformat()}
    assert len(rules.stamp()["sha256"]) == 64


def test_batch_equals_one_candidate_at_a_time(run, rules, study):
    from trialkit.records import read_intake

    from .conftest import ROOT

    intake = read_intake(ROOT / "examples" / "kap_trd_intake.csv", study)
    batch = screen(rules, intake, as_of=AS_OF)
    ids = batch.frame["record_id"].to_list()[::23]
    for rid in ids:
        one = intake.records.filter(pl.col("record_id") == rid)
        inst = {k: v.filter(pl.col("record_id") == rid) for k, v in intake.instances.items()}
        single = screen(rules, one, as_of=AS_OF, instances=inst)
        assert single.frame.height == 1
        assert single.frame.equals(batch.frame.filter(pl.col("record_id") == rid)), rid


def test_pandas_input_and_missing_columns(rules, study):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"record_id": ["x"], "mini_mdd": ["1"]})
    s = screen(rules, frame, as_of=AS_OF)
    cand = _one(s, "x")
    assert cand.disposition == "pending"
    assert "dob" in cand.still_needed  # absent columns count as missing, not as errors


def test_checkbox_codes_and_event_refs_read_the_columns_the_logic_engine_reads(rules):
    # REDCap exports option 'A' of checkbox 'flags' as flags___a: a rule on [flags(A)] must read that column,
    # not a made-up flags___A that is blank for everyone (which left every candidate pending).
    crit = (
        Criterion("X1", CriterionKind.INCLUSION, "flag A ticked", logic="[flags(A)] = '1'"),
        Criterion("X2", CriterionKind.EXCLUSION, "flag at baseline", logic="[baseline_arm_1][flag] = '1'"),
    )
    ruleset = dataclasses.replace(rules.ruleset, criteria=crit, reference_date=None)
    compiled = compile_rules(ruleset, None)
    frame = pl.DataFrame(
        {"record_id": ["1", "2", "3"], "flags___a": ["1", "0", "1"], "baseline_arm_1:flag": ["0", "0", "1"]}
    )
    s = screen(compiled, frame, as_of=AS_OF)
    got = {c.record_id: (c.disposition, c.primary_reason, c.criteria[0].values) for c in candidates(s)}
    assert got == {
        "1": ("eligible", None, {"flags___a": "1"}),
        "2": ("ineligible", "X1", {"flags___a": "0"}),
        "3": ("ineligible", "X2", {"flags___a": "1"}),
    }


def test_rule_sets_with_more_criteria_than_one_integer_has_bits(rules):
    # Deciding criteria are bits of integers: a 130-criterion rule set (oncology protocols run that long) used to
    # overflow at the 64th criterion.
    crit = tuple(
        Criterion(f"X{i}", CriterionKind.INCLUSION if i < 60 else CriterionKind.EXCLUSION, "t", logic=f"[f{i}] = '1'")
        for i in range(130)
    )
    compiled = compile_rules(dataclasses.replace(rules.ruleset, criteria=crit, reference_date=None), None)
    data = {"record_id": ["a", "b", "c", "d"], **{f"f{i}": ["1" if i < 60 else "0"] * 4 for i in range(130)}}
    data["f66"], data["f128"], data["f61"] = ["0", "1", None, "0"], ["0", "1", "0", "1"], ["0", "0", "0", "1"]
    s = screen(compiled, pl.DataFrame(data), as_of=AS_OF)
    got = {c.record_id: (c.disposition, c.primary_reason, c.reasons) for c in candidates(s)}
    assert got == {
        "a": ("eligible", None, ()),
        "b": ("ineligible", "X66", ("X66", "X128")),
        "c": ("pending", None, ()),
        "d": ("ineligible", "X61", ("X61", "X128")),
    }


def test_bad_inputs_are_usage_errors(rules):
    with pytest.raises(UsageError):
        screen(rules, pl.DataFrame({"id": ["1"]}), as_of=AS_OF)
    with pytest.raises(UsageError):
        screen(rules, pl.DataFrame({"record_id": ["1"]}), as_of="2026-11-02")


def test_summary_counts_and_missing_ranking(run):
    s = run(
        {
            "a": ({"madrs_total": None, "madrs_1": None}, None),
            "b": ({"madrs_total": None, "madrs_1": None, "vs_bmi": None, "vs_weight_kg": None}, None),
            "c": ({"vs_bmi": None, "vs_weight_kg": None, "hx_ich": "1"}, None),  # ineligible: its gaps do not count
            "d": ({}, None),
        }
    )
    sm = summarise(s)
    assert sm.by_disposition == {"eligible": 1, "ineligible": 1, "pending": 2}
    assert sm.by_primary_reason == {"E11": 1}
    assert sm.by_result["I5"]["unknown"] == 2
    ranking = [(m.field, m.pending, m.sole) for m in sm.missing]
    assert ranking == [("madrs_1", 2, 1), ("vs_weight_kg", 1, 0)]
    assert sm.missing_forms == (("madrs", 2), ("vital_signs", 1))


def test_select_candidates_narrows_every_part(run):
    s = run({"a": ({}, None), "b": ({"hx_ich": "1"}, None)})
    sub = select_candidates(s, ["b"])
    assert [c.record_id for c in candidates(sub)] == ["b"]
    assert sub.data.height == 1 and all(v["record_id"].to_list() == ["b"] * v.height for v in sub.instances.values())


def test_pregnancy_exclusion_applies_to_anyone_of_childbearing_potential(run):
    s = run(
        {
            "female": ({"sex": "1", "childbearing_potential": "0", "pregnant": "1"}, None),
            "intersex_cbp": ({"sex": "3", "childbearing_potential": "1", "pregnant": "1"}, None),
            "male": ({"sex": "2", "childbearing_potential": "0", "pregnant": None, "breastfeeding": None}, None),
        }
    )
    got = {c.record_id: _result(c, "E6").result for c in candidates(s)}
    assert got == {"female": "met", "intersex_cbp": "met", "male": "not_applicable"}


def test_a_large_batch_gives_the_results_of_a_small_one(rules, study):
    # Frames over logic.engine.SMALL_ROWS take other query paths (masks built on every row, optimiser on): the
    # same candidates must get the same results, masks and reasons whichever path screens them.
    from trialkit.logic.engine import SMALL_ROWS
    from trialkit.records import read_intake

    from .conftest import ROOT

    intake = read_intake(ROOT / "examples" / "kap_trd_intake.csv", study)
    small = screen(rules, intake.records, as_of=AS_OF, instances=intake.instances)
    copies = SMALL_ROWS // intake.records.height + 1

    def tiled(frame: pl.DataFrame) -> pl.DataFrame:
        rid = pl.col("record_id").cast(pl.String)
        return pl.concat([frame.with_columns(rid + f"~{k}") for k in range(copies)])

    records = tiled(intake.records)
    assert records.height > SMALL_ROWS
    large = screen(rules, records, as_of=AS_OF, instances={k: tiled(v) for k, v in intake.instances.items()})
    for k in (0, copies - 1):
        part = large.frame.filter(pl.col("record_id").str.ends_with(f"~{k}"))
        part = part.with_columns(pl.col("record_id").str.replace(r"~\d+$", ""))
        assert part.equals(small.frame)


def test_a_large_batch_names_the_same_missing_fields_as_one_candidate_alone(rules, study):
    # Frames over SMALL_ROWS build each criterion's missing-field mask on the rows where it is unknown only: an
    # applies_if still open, fields behind branching logic, calc inputs and instance gaps must read as alone.
    from trialkit.logic.engine import SMALL_ROWS
    from trialkit.records import IntakeData

    from .conftest import ELIGIBLE, flat_rows

    blank = {
        "applies_open": {"current_ad": None},
        "applies_open_e6": {"sex": None, "childbearing_potential": None, "preg_test_result": None},
        "gate_open": {"maoi_past_month": None, "maoi_last_dose_date": None},
        "gate_shut": {"cssrs_q2": "0", "cssrs_q4": None, "cssrs_q6_lifetime": None},
        "calc_inputs": {"madrs_3": None, "madrs_total": None, "vs_weight_kg": None, "vs_bmi": None},
        "reference": {"screening_date": None, "dob": None},
    }
    trials = {"no_trials": [], "blank_improvement": [{**TRIALS[0], "atrq_improvement": None}, TRIALS[1]]}
    cands = {rid: ({**ELIGIBLE, **over}, TRIALS) for rid, over in blank.items()}
    cands |= {rid: (ELIGIBLE, t) for rid, t in trials.items()}
    cands = {rid: ({k: v for k, v in f.items() if v is not None}, t) for rid, (f, t) in cands.items()}
    intake = IntakeData.from_frame(flat_rows(cands), study).for_screening(as_of=AS_OF, columns=rules.read_columns())
    records, atrq = intake.records, intake.instances["atrq"]
    alone = {rid: screen(rules, records.filter(pl.col("record_id") == rid), as_of=AS_OF,
                         instances={"atrq": atrq.filter(pl.col("record_id") == rid)}).frame for rid in cands}
    assert all(f.select(pl.col("^missing:.*$").sum()).sum_horizontal().item() > 0 for f in alone.values())
    copies = SMALL_ROWS // records.height + 1
    rid = pl.col("record_id")
    many = pl.concat([records.with_columns(rid + f"~{k}") for k in range(copies)])
    inst = pl.concat([atrq.with_columns(rid + f"~{k}") for k in range(copies)])
    large = screen(rules, many, as_of=AS_OF, instances={"atrq": inst}).frame
    assert large.height > SMALL_ROWS
    # instances grouped by record (counted by runs of rows) or shuffled (by a group_by): the same frame
    shuffled = inst.sample(fraction=1.0, shuffle=True, seed=7)
    assert screen(rules, many, as_of=AS_OF, instances={"atrq": shuffled}).frame.equals(large)
    for k in (0, copies // 2, copies - 1):
        for name, frame in alone.items():
            row = large.filter(rid == f"{name}~{k}").with_columns(rid.str.replace(r"~\d+$", ""))
            assert row.equals(frame), (name, k)


@pytest.mark.parametrize(
    ("over", "needed"),
    [
        # not of childbearing potential: the pregnancy test is hidden on the form (and decides nothing)
        ({"sex": "1", "childbearing_potential": "0"}, ("pregnant", "breastfeeding")),
        # childbearing potential blank: the test opens only on that answer, which is asked for instead
        ({"sex": "1", "childbearing_potential": None, "pregnant": "0", "breastfeeding": "0"},
         ("childbearing_potential",)),
    ],
)
def test_branching_logic_naming_the_screened_event_hides_and_waits(run, over, needed):
    # the pregnancy test's branching logic reads [screening_arm_1][childbearing_potential]: on the screening row
    # that is the row's own answer. It was left unevaluated, so the hidden test result was asked for.
    blank_test = {"preg_test_result": None, "preg_test_date": None}
    cand = next(candidates(run({"0001": ({**blank_test, **over}, None)})))
    assert cand.disposition == "pending"
    assert cand.still_needed == needed
