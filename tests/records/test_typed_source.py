"""A Parquet file's date and number columns typed straight from their type (read_intake(keep_types=True)) give
exactly what the round trip through REDCap's text gives: the same typed values, the same unusable cells and the
same problems, whatever the value (edge floats, out-of-range years, times that are not midnight)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trialkit.definitions.loader import load_study
from trialkit.records import read_intake
from trialkit.records.convert import (
    keeps_type,
    study_columns,
    typed_expr,
    typed_from_source,
    unchanged_from_source,
)
from trialkit.records.intake import _midnight_dates
from trialkit.records.readers import normalise, stringify

INSTRUMENT = """\
instrument: vitals
fields:
  - {name: record_id, type: text, label: Record ID}
  - {name: n_int, type: text, label: Whole, validation: integer, min: "0", max: "300"}
  - {name: n_num, type: text, label: Number, validation: number, min: "-5.5"}
  - {name: n_1dp, type: text, label: One decimal, validation: number_1dp}
  - {name: n_comma, type: text, label: Comma, validation: number_comma_decimal}
  - {name: d, type: text, label: Date, validation: date_ymd, min: "2000-01-01"}
  - {name: d_mdy, type: text, label: Date MDY, validation: date_mdy}
  - {name: ts, type: text, label: Date-time, validation: datetime_ymd}
  - {name: ts_s, type: text, label: Date-time s, validation: datetime_seconds_ymd}
  - {name: total, type: calc, label: Total, calculation: "[n_int] + 1"}
"""

FLOATS = [0.0, -0.0, 1.0, 2.5, 175.25, 0.1 + 0.2, 1e-7, 1.5e300, 2.0**53, 2.0**53 + 2, -(2.0**60), 300.0, 301.0,
          float("nan"), float("inf"), float("-inf"), None]
INTS = [0, -5, 7, 300, 301, 2**62, None]
DATES = [dt.date(2024, 1, 5), dt.date(1, 1, 1), dt.date(1999, 12, 31), dt.date(9999, 12, 31), None]
TIMES = [
    dt.datetime(2024, 1, 5),
    dt.datetime(2024, 1, 5, 13, 45),
    dt.datetime(2024, 1, 5, 13, 45, 30),
    dt.datetime(2024, 1, 5, 0, 0, 0, 500_000),
    dt.datetime(2024, 1, 5, 0, 0, 30),
    dt.datetime(1, 1, 1),
    None,
]
SOURCES: list[tuple[pl.DataType, list]] = [
    (pl.Float64(), FLOATS),
    (pl.Float32(), FLOATS),
    (pl.Int64(), INTS),
    (pl.Int32(), [v for v in INTS if v is None or abs(v) < 2**31]),
    (pl.UInt64(), [v for v in INTS if v is None or v >= 0] + [2**64 - 1]),
    (pl.Boolean(), [True, False, None]),
    (pl.Date(), DATES),
    (pl.Datetime("us"), TIMES),
    (pl.Datetime("ns"), [t for t in TIMES if t is None or t.year > 1700]),  # nanoseconds reach 1677-2262
    (pl.Datetime("ms"), TIMES),
    (pl.Datetime("us", "Europe/Paris"), TIMES),
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("typed_source")
    (root / "instruments").mkdir()
    (root / "instruments" / "vitals.yaml").write_text(textwrap.dedent(INSTRUMENT), encoding="utf-8")
    (root / "study.yaml").write_text("study: typed\ninstruments: [vitals]\n", encoding="utf-8")
    return load_study(root)


def accepted_pairs(study):
    """Every (column, source type, edge values) that keeps_type accepts."""
    for col in study_columns(study):
        if col.kind in ("integer", "number", "date", "datetime"):
            yield from ((col, dtype, values) for dtype, values in SOURCES if keeps_type(col, dtype))


def test_typed_values_equal_the_text_round_trip(study):
    """Every (field, source type) pair keeps_type accepts, over edge values: the same typed column."""
    tried = 0
    for col, dtype, values in accepted_pairs(study):
        tried += 1
        source = pl.DataFrame({col.name: pl.Series(values, dtype=dtype)})
        direct = source.select(typed_from_source(col, dtype))
        # a key column keeps the all-blank row a row (normalise drops rows with no cell at all)
        keyed = source.with_columns(pl.lit("k").alias("key"))
        text = _midnight_dates(normalise(stringify(keyed)).drop("_row", "key"), study)
        via_text = text.select(typed_expr(col))
        assert_frame_equal(direct, via_text, check_exact=True)
    assert tried >= 12  # integers, numbers (not comma), dates and minute date-times from their usual types


def test_a_column_used_as_read_is_what_typing_gives(study):
    """unchanged_from_source says yes only where typed_from_source gives the column itself: over the edge values
    (NaN, infinities, year 1) and over the plain ones alike."""
    said_yes = said_no = 0
    for col, dtype, values in accepted_pairs(study):
        plain = [v for v in values if v is None or (v == v and v not in (float("inf"), float("-inf")))]
        for cells in (values, plain, [None]):
            check = unchanged_from_source(col, dtype)
            source = pl.DataFrame({col.name: pl.Series(cells, dtype=dtype)})
            if check is None or not source.select(check).item():
                said_no += 1
                continue
            said_yes += 1
            assert_frame_equal(source.select(typed_from_source(col, dtype)), source, check_exact=True)
            assert source.schema[col.name] == col.dtype
    assert said_yes >= 6 and said_no >= 6


def test_only_pairs_with_an_exact_equivalent_keep_their_type(study):
    by_name = {c.name: c for c in study_columns(study)}
    assert keeps_type(by_name["n_int"], pl.Float64())
    assert keeps_type(by_name["d"], pl.Datetime("ns"))
    assert not keeps_type(by_name["n_int"], pl.Float32())  # its text is the float32's shortest form
    assert not keeps_type(by_name["n_comma"], pl.Float64())  # REDCap's text would need a comma
    assert not keeps_type(by_name["ts_s"], pl.Datetime("us"))  # the text drops zero seconds
    assert not keeps_type(by_name["ts"], pl.Date())
    assert not keeps_type(by_name["d"], pl.Datetime("us", "Europe/Paris"))
    assert not keeps_type(by_name["n_int"], pl.Float64(), missing_codes=("-99",))


def _write(tmp_path: Path) -> Path:
    n = len(FLOATS)
    frame = pl.DataFrame({
        "record_id": [f"R{i:03d}" for i in range(n)],
        "n_int": pl.Series(FLOATS, dtype=pl.Float64),
        "n_num": pl.Series(FLOATS, dtype=pl.Float64),
        "n_1dp": pl.Series(FLOATS, dtype=pl.Float64),
        "n_comma": pl.Series(FLOATS, dtype=pl.Float64),
        "d": pl.Series((TIMES * 3)[:n], dtype=pl.Datetime("us")),
        "d_mdy": pl.Series((DATES * 4)[:n], dtype=pl.Date),
        "ts": pl.Series((TIMES * 3)[:n], dtype=pl.Datetime("ms")),
        "ts_s": pl.Series((TIMES * 3)[:n], dtype=pl.Datetime("us")),
        "total": pl.Series([float(i) for i in range(n)], dtype=pl.Float64),
    })
    path = tmp_path / "typed.parquet"
    frame.write_parquet(path)
    return path


def test_screening_reads_the_same_values_and_problems(study, tmp_path):
    """The class: whatever the typed file holds, typed straight or through text, screening reads the same
    records and lists the same unusable cells (file row, field, check, problem)."""
    path = _write(tmp_path)
    as_of = dt.date(2026, 11, 2)
    direct = read_intake(path, study, keep_types=True)
    via_text = read_intake(path, study)
    assert direct.raw.schema["n_int"] == pl.Float64 and via_text.raw.schema["n_int"] == pl.String
    assert_frame_equal(direct.typed, via_text.typed)
    a = direct.for_screening(as_of=as_of)
    b = via_text.for_screening(as_of=as_of)
    assert_frame_equal(a.records, b.records)
    assert_frame_equal(a.problems, b.problems)
    assert a.problems.height > 5  # 2.5 in a whole-number field, 301 over its maximum, a date at 13:45...
    assert set(a.problems.get_column("check")) >= {"type", "range"}


def test_a_clean_column_skips_only_checks_that_cannot_fail(tmp_path):
    """blank_unusable does not evaluate type and choice checks of a column whose every written cell was read;
    a choice label that is also a missing-data code is still flagged as a label, and a column with one bad code
    is still checked."""
    root = tmp_path / "study"
    (root / "instruments").mkdir(parents=True)
    (root / "instruments" / "f.yaml").write_text(textwrap.dedent("""\
        instrument: f
        fields:
          - {name: record_id, type: text, label: Record ID}
          - {name: smoker, type: radio, label: Smoker, choices: {"1": "Yes", "0": "NA"}}
          - {name: drinks, type: radio, label: Drinks, choices: {"1": "Yes", "0": "No"}}
        """), encoding="utf-8")
    (root / "study.yaml").write_text("study: s\ninstruments: [f]\nmissing_codes: {NA: Not asked}\n", encoding="utf-8")
    study = load_study(root)
    frame = pl.DataFrame({"record_id": ["1", "2", "3"], "smoker": ["1", "NA", "0"], "drinks": ["1", "0", "No"]})
    intake = __import__("trialkit.records", fromlist=["IntakeData"]).IntakeData.from_frame(frame, study)
    problems = intake.for_screening(as_of=dt.date(2026, 11, 2)).problems
    got = sorted(zip(problems.get_column("record").to_list(), problems.get_column("field").to_list(), strict=True))
    assert got == [("2", "smoker"), ("3", "drinks")]
