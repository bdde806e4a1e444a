"""A flat export is screened exactly as the ordinary (flat) read of its CSV screens it, whether trialkit reads it
one row kind at a time (the candidates' rows, then each repeating form's rows: records.parquet.read_by_form for a
typed Parquet file, records.delimited.read_csv_by_form for the CSV itself) or, when the file holds something that
read would not see, flat."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trialkit.records import delimited as delimited_module
from trialkit.records import parquet as parquet_module
from trialkit.records.convert import study_columns
from trialkit.screening.reports import build_report
from trialkit.screening.run import load_rules, screen_file

AS_OF = dt.date(2026, 11, 2)


@pytest.fixture(scope="module")
def rules(kap_study, repo_root):
    return load_rules(repo_root / "eligibility_rules" / "kap_trd.yaml", kap_study)


@pytest.fixture(scope="module")
def text(repo_root) -> pl.DataFrame:
    return pl.read_csv(repo_root / "examples" / "kap_trd_intake.csv", infer_schema=False)


def typed(text: pl.DataFrame, study) -> pl.DataFrame:
    """The example export with its dates as dates and its numbers as numbers, as a database would write it."""
    kinds = {c.name: c.kind for c in study_columns(study)}
    casts = []
    for name in text.columns:
        if kinds.get(name) == "date":
            casts.append(pl.col(name).str.to_date("%Y-%m-%d", strict=False))
        elif kinds.get(name) in ("integer", "number"):
            casts.append(pl.col(name).cast(pl.Float64, strict=False))
    return text.with_columns(casts).with_columns(pl.col("redcap_repeat_instance").cast(pl.Int64, strict=False))


def results(path, rules, study):
    screening = screen_file(path, rules, study, as_of=AS_OF)
    report = build_report(screening, checklists=0, study=study)
    problems = screening.problems.sort("row") if screening.problems is not None else None
    return report.rows, problems


def _same(csv_path, parquet_path, rules, study):
    rows_csv, problems_csv = results(csv_path, rules, study)
    rows_pq, problems_pq = results(parquet_path, rules, study)
    assert_frame_equal(rows_pq, rows_csv)
    assert_frame_equal(problems_pq, problems_csv)
    return rows_pq, problems_pq


def _screen_both(tmp_path, text, rules, study, monkeypatch):
    """Screen `text` as CSV read flat (the reference), as the same CSV read by form where it can be, and as its
    typed Parquet twin (results required equal); also which reads by form were made, Parquet's then the CSV's
    (None: the file was read flat)."""
    csv_path = tmp_path / "intake.csv"
    text.write_csv(csv_path)
    parquet = tmp_path / "intake.parquet"
    typed(text, study).write_parquet(parquet)
    used, used_csv = [], []
    real, real_csv = parquet_module._by_form, delimited_module._by_form
    monkeypatch.setattr(delimited_module, "_by_form", lambda *a: None)
    rows_flat, problems_flat = results(csv_path, rules, study)
    monkeypatch.setattr(delimited_module, "_by_form", lambda *a: used_csv.append(real_csv(*a)) or used_csv[-1])
    monkeypatch.setattr(parquet_module, "_by_form", lambda *a: used.append(real(*a)) or used[-1])
    rows, problems = _same(csv_path, parquet, rules, study)
    assert_frame_equal(rows, rows_flat)
    assert_frame_equal(problems, problems_flat)
    return rows, problems, used + used_csv


def test_read_by_form_screens_as_the_csv(tmp_path, text, rules, kap_study, monkeypatch):
    rows, _, used = _screen_both(tmp_path, text, rules, kap_study, monkeypatch)
    assert len(used) == 2 and all(u is not None for u in used)  # both files were read by form
    assert set(rows.get_column("disposition")) == {"eligible", "ineligible", "pending"}


@pytest.mark.parametrize(
    "change", ["misplaced", "unknown_instrument", "record_without_its_row", "bad_values", "no_treatment_rows",
               "no_treatment_rows_but_a_value"]
)
def test_whatever_the_file_holds_the_results_equal_the_csv(tmp_path, text, rules, kap_study, change, monkeypatch):
    """Values where their form does not belong, rows of an instrument the study lacks, a record that has only
    treatment rows, values that fail their checks: the same results and problems as the CSV (read flat where
    reading by form would miss something)."""
    rid = pl.col("record_id")
    first_atrq = pl.int_range(pl.len()) == pl.col("redcap_repeat_instrument").eq("atrq").arg_true().first()
    if change == "misplaced":  # a candidate's field on a treatment row, a treatment field on a candidate's row
        text = text.with_columns(
            pl.when(first_atrq).then(pl.lit("1")).otherwise(pl.col("mini_mdd")).alias("mini_mdd"),
            pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("7")).otherwise(pl.col("atrq_duration")).alias(
                "atrq_duration"
            ),
        )
    elif change == "unknown_instrument":
        text = text.with_columns(
            pl.when(first_atrq).then(pl.lit("atrq_old")).otherwise(pl.col("redcap_repeat_instrument")).alias(
                "redcap_repeat_instrument"
            )
        )
    elif change == "record_without_its_row":
        lone = text.filter(pl.col("redcap_repeat_instrument") == "atrq").head(2).with_columns(pl.lit("9999").alias(
            "record_id"))
        text = pl.concat([lone.head(1), text, lone.tail(1)])
    elif change.startswith("no_treatment_rows"):  # no row is filed under atrq at all
        text = text.filter(pl.col("redcap_repeat_instrument").is_null())
        if change.endswith("a_value"):  # ... yet a candidate's row holds a treatment field
            text = text.with_columns(
                pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("60")).otherwise(pl.col("atrq_dose")).alias(
                    "atrq_dose"
                )
            )
    else:  # a blood pressure of 16, a dose of -5: unusable, the criteria reading them unknown
        text = text.with_columns(
            pl.when((rid == text.get_column("record_id")[0]) & pl.col("redcap_repeat_instrument").is_null())
            .then(pl.lit("16"))
            .otherwise(pl.col("vs_sbp_1"))
            .alias("vs_sbp_1"),
            pl.when(first_atrq).then(pl.lit("-5")).otherwise(pl.col("atrq_dose")).alias("atrq_dose"),
        )
    _, problems, used = _screen_both(tmp_path, text, rules, kap_study, monkeypatch)
    if change in ("misplaced", "unknown_instrument", "no_treatment_rows_but_a_value"):
        assert used == [None, None]  # read flat: reading by form would not see those rows or cells
    else:
        assert len(used) == 2 and all(u is not None for u in used)
    if change in ("misplaced", "bad_values"):
        assert problems.height >= 2
    if change == "no_treatment_rows_but_a_value":
        assert problems.get_column("field").to_list() == ["atrq_dose"]
