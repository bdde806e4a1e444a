"""trialkit/cli/options.py: the shared option types take exactly the spelling the help shows."""

from __future__ import annotations

import datetime as dt

import click
import pytest

from trialkit.cli.options import DATE, DATETIME


@pytest.mark.parametrize("text", ["20261102", "2026W451", "2026-W45-1", "2026-306", " 2026-11-02", "2026-11-02\n"])
def test_date_refuses_other_iso_spellings(text):
    # Python's date.fromisoformat also reads ISO week dates and the basic format: a slip would screen on a date
    # nobody wrote (2026W451 is 2026-11-02)
    with pytest.raises(click.BadParameter) as info:
        DATE.convert(text, None, None)
    assert "YYYY-MM-DD" in info.value.message and text.strip() not in info.value.message


@pytest.mark.parametrize(
    "text", ["2026-W45-1", "20261102", "2026-11-02T1000", "2026-11-02 10:00+01:00", "2026-1-2 10:00"]
)
def test_datetime_refuses_other_iso_spellings(text):
    with pytest.raises(click.BadParameter):
        DATETIME.convert(text, None, None)


def test_the_documented_spellings_still_parse():
    assert DATE.convert("2026-11-02", None, None) == dt.date(2026, 11, 2)
    assert DATETIME.convert("2026-11-02", None, None) == dt.date(2026, 11, 2)
    assert DATETIME.convert("2026-11-02 10:05", None, None) == dt.datetime(2026, 11, 2, 10, 5)
    assert DATETIME.convert("2026-11-02T10:05:07", None, None) == dt.datetime(2026, 11, 2, 10, 5, 7)
