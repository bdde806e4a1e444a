from __future__ import annotations

import polars as pl
import pytest

from trialkit.logic import FieldSpec


@pytest.fixture
def kap_fields() -> dict[str, FieldSpec]:
    specs = [
        FieldSpec("record_id", "text", form="demographics"),
        FieldSpec("dob", "text", "date_ymd", form="demographics"),
        FieldSpec("sex", "radio", choices=("1", "2"), form="demographics"),
        FieldSpec("madrs_total", "calc", form="madrs"),
        FieldSpec("madrs_date", "text", "date_ymd", form="madrs"),
        FieldSpec("conmeds", "checkbox", choices=("1", "2", "3"), form="concomitant_meds"),
        FieldSpec(
            "atrq_drug", "dropdown", choices=("sertraline", "escitalopram", "bupropion"), form="atrq", repeating=True
        ),
        FieldSpec("atrq_dose", "text", "number", form="atrq", repeating=True),
        FieldSpec("atrq_min_dose", "text", "number", form="atrq", repeating=True),
        FieldSpec("atrq_duration", "calc", form="atrq", repeating=True),
        FieldSpec("atrq_current_episode", "yesno", form="atrq", repeating=True),
        FieldSpec("atrq_improvement", "text", "integer", form="atrq", repeating=True),
    ]
    return {s.name: s for s in specs}


@pytest.fixture
def atrq() -> pl.DataFrame:
    # record 1: two failed adequate trials of different drugs -> I4 true
    # record 2: two failed adequate trials of the SAME drug -> distinct count 1 -> false
    # record 3: one failed adequate trial + one with improvement missing -> unknown in kleene
    # record 4: no trials at all -> 0
    # record 5: inadequate dose -> not counted; plus one trial in a previous episode
    rows = [
        ("1", 1, "sertraline", "150", "50", "8", "1", "20"),
        ("1", 2, "escitalopram", "20", "10", "10", "1", "30"),
        ("2", 1, "sertraline", "100", "50", "8", "1", "10"),
        ("2", 2, "sertraline", "200", "50", "12", "1", "0"),
        ("3", 1, "bupropion", "300", "150", "8", "1", "10"),
        ("3", 2, "escitalopram", "20", "10", "8", "1", ""),
        ("5", 1, "sertraline", "25", "50", "8", "1", "10"),
        ("5", 2, "escitalopram", "20", "10", "8", "0", "10"),
    ]
    cols = [
        "record_id",
        "redcap_repeat_instance",
        "atrq_drug",
        "atrq_dose",
        "atrq_min_dose",
        "atrq_duration",
        "atrq_current_episode",
        "atrq_improvement",
    ]
    return pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])
