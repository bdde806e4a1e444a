from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from trialkit.definitions import validation_types as vt
from trialkit.definitions.validation_types import VALIDATION_TYPES

# name -> (valid raw values, invalid raw values)
SAMPLES = {
    "date_ymd": (["2024-02-29", "1999-12-31"], ["2023-02-30", "29-02-2024", "2024-2-1", "2024-02-29 10:00", ""]),
    "date_dmy": (["2024-02-29"], ["29-02-2024"]),  # raw form is ISO whatever the display order
    "date_mdy": (["2024-02-29"], ["02-29-2024"]),
    "datetime_ymd": (["2024-02-29 13:05"], ["2024-02-29 13:05:09", "2024-02-29T13:05", "2024-02-29 24:00"]),
    "datetime_dmy": (["2024-02-29 00:00"], ["29-02-2024 00:00"]),
    "datetime_mdy": (["2024-02-29 23:59"], ["2024-02-29"]),
    "datetime_seconds_ymd": (["2024-02-29 13:05:09"], ["2024-02-29 13:05"]),
    "datetime_seconds_dmy": (["2024-02-29 13:05:09"], ["2024-02-29 13:05:60"]),
    "datetime_seconds_mdy": (["2024-02-29 13:05:09"], ["13:05:09"]),
    "time": (["00:00", "23:59"], ["24:00", "7:30", "07:30:00"]),
    "time_hh_mm_ss": (["23:59:59"], ["23:59"]),
    "time_mm_ss": (["59:59", "00:01"], ["60:00", "1:00"]),
    "integer": (["0", "-12", "+7", "007"], ["1.0", "1e3", "", "one", "1 "]),
    "number": (["1", "-6.28", ".5", "3.14e-2", "+2"], ["1.", "1,5", "e3", "--1", "1.2.3"]),
    "number_comma_decimal": (["1,5", "-2", ",5"], ["1.5"]),
    "number_1dp": (["1.5", "-0.1"], ["1", "1.55", "1,5"]),
    "number_2dp": (["1.50"], ["1.5"]),
    "number_3dp": (["1.500"], ["1.50"]),
    "number_4dp": (["1.5000"], ["1.500"]),
    "number_1dp_comma_decimal": (["1,5"], ["1.5"]),
    "number_2dp_comma_decimal": (["1,50"], ["1,5"]),
    "number_3dp_comma_decimal": (["-1,500"], ["1,50"]),
    "number_4dp_comma_decimal": (["1,5000"], ["1.5000"]),
    "email": (["john.doe@vanderbilt.edu", "a+b@x.co"], ["john", "a@b", "a b@x.com"]),
    "phone": (["615-322-2222", "(615) 322-2222", "6153222222"], ["123-456-7890", "615-322-222"]),
    "phone_australia": (["02 9999 9999", "0299999999"], ["12 3456 7890"]),
    "zipcode": (["37232", "37232-1234"], ["3723", "37232-12"]),
    "postalcode_australia": (["2000"], ["200"]),
    "postalcode_canada": (["K1A 0B1", "k1a0b1"], ["K1A 0B"]),
    "postalcode_french": (["75001", "2A004"], ["99001"]),
    "postalcode_germany": (["10115"], ["1011"]),
    "ssn": (["123-45-6789"], ["123456789"]),
    "alpha_only": (["Abc"], ["Abc1", "a b"]),
    "mrn_10d": (["0123456789"], ["123456789"]),
    "mrn_generic": (["AB-12_3"], ["AB 12"]),
    "vmrn": (["1234"], ["123"]),
    "url": (["https://example.org/x?y=1"], ["example.org"]),
}


def test_every_type_has_samples():
    assert set(SAMPLES) == set(VALIDATION_TYPES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_python_check_accepts_and_refuses(name):
    t = VALIDATION_TYPES[name]
    good, bad = SAMPLES[name]
    assert [t.is_valid(s) for s in good] == [True] * len(good)
    assert [t.is_valid(s) for s in bad] == [False] * len(bad)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_polars_pattern_agrees_with_python(name):
    t = VALIDATION_TYPES[name]
    values = SAMPLES[name][0] + SAMPLES[name][1]
    got = pl.Series(values, dtype=pl.String).str.contains(t.anchored).to_list()
    assert got == [t.matches(v) for v in values]


def test_parse_gives_typed_values():
    assert VALIDATION_TYPES["date_dmy"].parse("2024-02-29") == dt.date(2024, 2, 29)
    assert VALIDATION_TYPES["datetime_seconds_ymd"].parse("2024-02-29 13:05:09") == dt.datetime(2024, 2, 29, 13, 5, 9)
    assert VALIDATION_TYPES["time"].parse("07:30") == dt.time(7, 30)
    assert VALIDATION_TYPES["integer"].parse("-12") == -12
    assert VALIDATION_TYPES["number_1dp_comma_decimal"].parse("1,5") == 1.5
    assert VALIDATION_TYPES["email"].parse("a@b.co") == "a@b.co"
    with pytest.raises(ValueError):
        VALIDATION_TYPES["date_ymd"].parse("2023-02-30")


def test_polars_strptime_format_reads_valid_dates():
    t = VALIDATION_TYPES["datetime_ymd"]
    s = pl.Series(["2024-02-29 13:05", "2023-02-30 10:00"]).str.strptime(pl.Datetime, t.strptime, strict=False)
    assert s.to_list() == [dt.datetime(2024, 2, 29, 13, 5), None]


def test_aliases_and_kinds():
    assert vt.get("int") is VALIDATION_TYPES["integer"]
    assert vt.get("date").name == "date_ymd"
    assert vt.kind_of("number_2dp") == "number" and vt.kind_of("") == "text" and vt.kind_of("nope") == "text"
    assert {t.kind for t in VALIDATION_TYPES.values()} == set(vt.KINDS)


@pytest.mark.parametrize(
    ("name", "value", "fmt", "raw"),
    [
        ("date_dmy", "31/12/2024", "DMY", "2024-12-31"),
        ("date_ymd", "12-31-2024", "MDY", "2024-12-31"),
        ("date_ymd", "2024/1/5", "YMD", "2024-01-05"),
        ("datetime_mdy", "1/5/2024 13:05", "MDY", "2024-01-05 13:05"),
        ("integer", "12", "DMY", "12"),
    ],
)
def test_to_raw_reads_the_api_date_formats(name, value, fmt, raw):
    assert vt.to_raw(VALIDATION_TYPES[name], value, fmt) == raw


@pytest.mark.parametrize(("value", "fmt"), [("31/12/2024", "MDY"), ("2024-02-30", "YMD"), ("x", "DMY"), ("1", "XYZ")])
def test_to_raw_refuses_invalid(value, fmt):
    with pytest.raises(ValueError):
        vt.to_raw(VALIDATION_TYPES["date_ymd"], value, fmt)
