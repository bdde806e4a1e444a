"""A CSV/TSV file read one row kind at a time (records.delimited) gives exactly the ordinary read's intake data:
the same rows, numbers, typed values, records and instances; and where it could not, it declines and the
ordinary read reads (or refuses) the file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from intake_data import first_candidates
from polars.testing import assert_frame_equal

from trialkit.errors import DataError
from trialkit.records import delimited, read_intake
from trialkit.screening.run import load_rules, screen_columns

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wanted(kap_study):
    return screen_columns(load_rules(ROOT / "eligibility_rules" / "kap_trd.yaml", kap_study), kap_study)


def _both(path: Path, study, wanted, monkeypatch):
    """The intake read by form (and whether it was) and read flat."""
    calls = []
    real = delimited._by_form
    monkeypatch.setattr(delimited, "_by_form", lambda *a: calls.append(real(*a)) or calls[-1])
    fast = read_intake(path, study, columns=wanted)
    monkeypatch.setattr(delimited, "_by_form", lambda *a: None)
    flat = read_intake(path, study, columns=wanted)
    return fast, flat, calls[0] is not None


def _same(fast, flat):
    """The same rows and values in every column the caller reads (the others, like a Parquet file's, are not read
    by form; screening never reads them)."""
    read = [c for c in fast.raw.columns]
    assert_frame_equal(fast.raw.sort("_row"), flat.raw.select(read).sort("_row"))
    for got, expected in [(fast.records, flat.records), *[(fast.instances[f], t) for f, t in flat.instances.items()]]:
        cols = [c for c in expected.columns if c in read]
        assert_frame_equal(got.select(cols), expected.select(cols))
    assert fast.notes == flat.notes


@pytest.mark.parametrize("block", [1 << 12, 1 << 25])  # many small blocks, or one
def test_a_csv_read_by_form_is_the_ordinary_read(tmp_path, kap_study, wanted, monkeypatch, block):
    monkeypatch.setattr(delimited, "BLOCK_BYTES", block)
    path = first_candidates(tmp_path, 60)
    fast, flat, by_form = _both(path, kap_study, wanted, monkeypatch)
    assert by_form and fast.raw.get_column("_row").is_sorted() is False  # candidates' rows first
    _same(fast, flat)


@pytest.mark.parametrize("change", ["bom", "tsv", "quoted_line_break", "misplaced_late", "no_record_id",
                                    "unknown_instrument"])
def test_whatever_the_csv_holds_it_reads_as_the_ordinary_read(tmp_path, kap_study, wanted, monkeypatch, change):
    monkeypatch.setattr(delimited, "BLOCK_BYTES", 1 << 12)  # the change sits in a later block than the first
    text = pl.read_csv(first_candidates(tmp_path, 60), infer_schema=False)
    last_atrq = pl.int_range(pl.len()) == pl.col("redcap_repeat_instrument").eq("atrq").arg_true().last()
    path = tmp_path / "intake.csv"
    if change == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + text.write_csv().encode())
    elif change == "tsv":
        path = tmp_path / "intake.tsv"
        text.write_csv(path, separator="\t")
    elif change == "quoted_line_break":
        last_own = pl.int_range(pl.len()) == pl.col("redcap_repeat_instrument").is_null().arg_true().last()
        text.with_columns(pl.when(last_own).then(pl.lit("two\nlines, \"quoted\"")).otherwise(
            pl.col("inv_name")).alias("inv_name")).write_csv(path)
    elif change == "misplaced_late":  # a candidate's field on the file's last treatment row
        text.with_columns(pl.when(last_atrq).then(pl.lit("1")).otherwise(pl.col("mini_mdd")).alias("mini_mdd")
                          ).write_csv(path)
    elif change == "no_record_id":
        text.with_columns(pl.when(pl.int_range(pl.len()) == 50).then(None).otherwise(pl.col("record_id"))
                          .alias("record_id")).write_csv(path)
    else:
        text.with_columns(pl.when(last_atrq).then(pl.lit("atrq_old")).otherwise(pl.col("redcap_repeat_instrument"))
                          .alias("redcap_repeat_instrument")).write_csv(path)
    fast, flat, by_form = _both(path, kap_study, wanted, monkeypatch)
    assert by_form == (change in ("bom", "tsv", "quoted_line_break"))
    _same(fast, flat)


def test_a_file_the_ordinary_read_refuses_is_refused_with_its_words(tmp_path, kap_study, wanted):
    path = tmp_path / "ragged.csv"
    path.write_text("record_id,redcap_repeat_instrument,age\n1,,30\n2,,40,extra\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_intake(path, kap_study, columns=wanted)
    assert caught.value.location is not None and caught.value.location.line == 3
