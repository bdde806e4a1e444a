"""IntakeData.with_calculations(): calculated fields computed from their inputs where these give a value."""

from __future__ import annotations

import datetime as dt

import intake_data as shared
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialkit.records import read_intake
from trialkit.records.calculations import calc_fields


def test_blank_calc_filled_and_a_contradicted_one_replaced_with_a_note(tmp_path, mini_study, clean_rows):
    clean_rows[0]["bmi"] = ""  # 70.5 kg, 170 cm -> 24.4
    clean_rows[3]["bmi"] = "30.0"  # its inputs give 24.7: a typing error, replaced and counted
    intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), mini_study)
    filled = intake.with_calculations()
    assert intake.records.get_column("bmi").to_list() == [None, 30.0]
    assert filled.records.get_column("bmi").to_list() == pytest.approx([24.4, 24.7])
    assert any(n.startswith("1 stored value(s) of bmi disagree") for n in filled.notes)
    assert filled.raw.equals(intake.raw)


def test_a_stored_calc_stays_when_its_inputs_are_incomplete(tmp_path, mini_study, clean_rows):
    clean_rows[3]["bmi"] = "30.0"
    clean_rows[3]["weight"] = ""  # no weight: nothing to recompute from
    intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), mini_study).with_calculations()
    assert intake.records.get_column("bmi").to_list()[1] == 30.0
    assert not any("disagree" in n for n in intake.notes)


def test_kap_totals_instances_and_dependency_order(tmp_path, kap_study):
    madrs = {f"madrs_{i}": "3" for i in range(1, 11)}
    phq = {f"phq9_{i}": "2" for i in range(1, 10)}
    rows = [
        {"record_id": "1", "redcap_event_name": "screening_arm_1", "screening_date": "2025-03-01", **madrs, **phq},
        {
            "record_id": "1",
            "redcap_event_name": "screening_arm_1",
            "redcap_repeat_instrument": "atrq",
            "redcap_repeat_instance": "1",
            "atrq_start_date": "2025-01-04",
            "atrq_ongoing": "1",
        },
        {"record_id": "2", "redcap_event_name": "screening_arm_1", **madrs, **phq, "phq9_9": ""},
    ]
    intake = read_intake(shared.write_csv(tmp_path / "k.csv", rows), kap_study).with_calculations()
    rec = intake.records
    assert rec.get_column("madrs_total").to_list() == [30.0, 30.0]
    # phq9_total uses '+': one blank item leaves it blank, as REDCap computes it
    assert rec.get_column("phq9_total").to_list() == [18.0, None]
    # phq9_severity reads phq9_total, so it is computed after it (moderately severe = 4)
    assert rec.get_column("phq9_severity").to_list()[0] == 4.0
    # an instance calc reads the record's screening_date from its non-repeating row: 8 weeks
    assert intake.instances["atrq"].get_column("atrq_duration").to_list() == [8.0]


def test_calc_order_puts_dependencies_first(kap_study):
    order = [f.name for f in calc_fields(kap_study)]
    assert order.index("phq9_total") < order.index("phq9_severity")
    assert order.index("atrq_duration") < order.index("atrq_adequate")


def test_expression_needing_today_without_as_of_is_noted_not_fatal(tmp_path, mini_study, clean_rows):
    from dataclasses import replace

    enrol = mini_study.instrument("enrol")
    bmi = replace(enrol.field("bmi"), calculation="datediff([dob], 'today', 'y')")
    study = replace(
        mini_study,
        instruments=(
            replace(enrol, fields=tuple(bmi if f.name == "bmi" else f for f in enrol.fields)),
            *mini_study.instruments[1:],
        ),
    )
    clean_rows[0]["bmi"] = ""
    intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), study)
    with_date = intake.with_calculations(as_of=dt.date(2000, 5, 2))
    assert round(with_date.records.get_column("bmi").to_list()[0], 1) == 10.0


@pytest.mark.parametrize("expression, expected", [
    # every input blank on every row (height not in the file), and the calc still gives a value
    ("if([height] = '', 7, 1)", [7.0, 7.0]),
    # one input live (weight), the other blank everywhere: the value follows the live one
    ("if([height] = '' and [weight] > 70.6, 7, '')", [24.4, 7.0]),
    # blank inputs giving nothing: the stored values stay
    ("round([weight] / (([height] / 100) ^ 2), 1)", [24.4, 30.0]),
])
def test_calcs_over_inputs_blank_everywhere_are_computed_as_on_any_row(
    tmp_path, clean_rows, expression, expected
):
    # A calc reading columns blank on every row is worked out on a few rows instead of all: same results.
    import shutil

    from trialkit.definitions.loader import load_study

    study_dir = tmp_path / "study"
    shutil.copytree(shared.MINI_DIR, study_dir)
    form = study_dir / "instruments" / "enrol.yaml"
    text = form.read_text(encoding="utf-8")
    form.write_text(text.replace('"round([weight] / (([height] / 100) ^ 2), 1)"', f'"{expression}"'), "utf-8")
    study = load_study(study_dir)
    clean_rows[3]["bmi"] = "30.0"
    for row in clean_rows:
        row.pop("height", None)
    intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), study).with_calculations()
    assert intake.records.get_column("bmi").to_list() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "2", "10"]), st.sampled_from(["a", "b"]),
                          st.one_of(st.none(), st.integers(1, 4))), max_size=10),
       st.booleans())
def test_repeated_keys_are_told_whatever_the_order(rows, with_event):
    """merge_per_key's test for repeated keys (a proof by runs of instances, then hashes, then the keys) answers
    what comparing the keys gives, for any order of rows."""
    from trialkit.records.calculations import _repeats

    frame = pl.DataFrame(rows, schema={"record_id": pl.String, "event": pl.String, "instance": pl.Int64},
                         orient="row")
    keys = ["record_id", "event", "instance"] if with_event else ["record_id", "instance"]
    assert _repeats(frame, keys) == frame.select(pl.struct(keys).is_duplicated().any()).item()
