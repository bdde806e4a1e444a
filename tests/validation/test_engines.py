"""The one-pass polars engine gives exactly pandera's failure table and findings, on mixed invalid data."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import intake_data as shared
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_chunked import varied_rows

from trialkit.records import read_intake
from trialkit.validation import validate
from trialkit.validation.engines import pandera_failures, polars_failures

AS_OF = dt.date(2026, 1, 1)


@pytest.mark.parametrize("seed", range(4))
def test_polars_engine_gives_pandera_findings(tmp_path, mini_study, seed):
    intake = read_intake(shared.write_csv(tmp_path / "intake.csv", varied_rows(seed)), mini_study)
    fast = validate(intake, as_of=AS_OF, engine="polars")
    slow = validate(intake, as_of=AS_OF, engine="pandera")
    checks = set(slow.frame.get_column("check"))
    assert checks >= {"type", "range", "choice", "format", "duplicate_row", "unknown_column", "record_id"}, checks
    assert_frame_equal(fast.frame, slow.frame)


def test_polars_engine_gives_pandera_findings_on_a_kap_row_mix(tmp_path, kap_study):
    """The real study: many forms, branching logic, calculations, checkboxes, a repeating form."""
    rows = [
        {"record_id": "1", "redcap_event_name": "screening_arm_1", "dob": "1980-02-30", "sex": "7", "email": "x"},
        {"record_id": "1", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "atrq",
         "redcap_repeat_instance": "1", "atrq_dose": "-5", "atrq_drug": "zoloft", "sex": "1"},
        {"record_id": "1", "redcap_event_name": "nowhere", "madrs_total": "99", "phq9_3": "4"},
        {"record_id": "", "redcap_event_name": "screening_arm_1", "vs_sbp_1": "300", "bogus": "1"},
    ]
    intake = read_intake(shared.write_csv(tmp_path / "kap.csv", rows), kap_study)
    fast = validate(intake, as_of=AS_OF, engine="polars")
    slow = validate(intake, as_of=AS_OF, engine="pandera")
    assert slow.frame.height > 10
    assert_frame_equal(fast.frame, slow.frame)


def _checks():
    return {
        "a": [("is_one", pl.col("a") == "1"), ("b_not_two", pl.col("b") != "2")],
        "b": [("is_one", pl.col("b") == "1")],
    }


def test_failure_tables_are_identical_row_for_row():
    frame = pl.DataFrame({"a": ["1", "x", None, "y"], "extra": ["q", "r", "s", "t"], "b": ["1", "2", None, "4"]})
    columns = ["a", "b", "absent"]
    fast = polars_failures(_checks(), columns, "s", frame)
    slow = pandera_failures(_checks(), columns, "s", frame)
    assert fast is not None and fast.height == 6
    assert_frame_equal(fast, slow)


def test_a_check_that_cannot_run_is_reported_as_pandera_reports_it():
    checks = {"a": [("ok", pl.col("a") == "1"), ("broken", pl.col("a").cast(pl.Int64, strict=True) > 0)]}
    frame = pl.DataFrame({"a": ["1", "x"]})
    fast = polars_failures(checks, ["a"], "s", frame)
    slow = pandera_failures(checks, ["a"], "s", frame)
    assert fast is not None and "broken" in fast.get_column("check").to_list()
    assert_frame_equal(fast, slow)


def test_validating_with_the_polars_engine_does_not_import_pandera(clean_csv):
    script = (
        "import sys, datetime as dt\n"
        "from trialkit.definitions.loader import load_study\n"
        "from trialkit.records import read_intake\n"
        "from trialkit.validation import validate\n"
        f"study = load_study({str(shared.MINI_DIR)!r})\n"
        f"found = validate(read_intake({str(clean_csv)!r}, study), as_of=dt.date(2026, 1, 1))\n"
        "print(found.clean, 'pandera' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "False"]
