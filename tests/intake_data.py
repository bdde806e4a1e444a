"""Shared intake test data: the mini study's directory and clean rows in REDCap's raw flat-export shape.

Imported by the conftest of tests/records, tests/validation and the validate CLI tests (by file path, since
tests/ is not a package)."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

MINI_DIR = Path(__file__).parent / "records" / "data" / "mini"

_META = {"redcap_repeat_instrument": "", "redcap_repeat_instance": ""}

# Two records of the mini study; every value is valid, every calc agrees, hidden fields are blank.
CLEAN_ROWS = [
    {
        "record_id": "001",
        **_META,
        "screen_date": "2025-01-10",
        "dob": "1990-05-02",
        "email": "ann@example.org",
        "sex": "1",
        "pregnant": "0",
        "race___1": "1",
        "race___2": "0",
        "race____99": "0",
        "symptoms___a": "1",
        "symptoms___b": "0",
        "age": "34",
        "height": "170",
        "weight": "70.5",
        "bmi": "24.4",
        "mood": "50",
        "visit_time": "2025-01-10 09:30",
        "enrol_complete": "2",
    },
    {
        "record_id": "001",
        "redcap_repeat_instrument": "history",
        "redcap_repeat_instance": "1",
        "drug": "sertraline",
        "dose": "100",
        "start": "2024-01-01",
        "lactating": "0",
        "history_complete": "2",
    },
    {
        "record_id": "001",
        "redcap_repeat_instrument": "history",
        "redcap_repeat_instance": "2",
        "drug": "other",
        "drug_other": "bupropion",
        "dose": "150",
        "start": "2024-06-01",
        "lactating": "0",
        "history_complete": "2",
    },
    {
        "record_id": "002",
        **_META,
        "screen_date": "2025-01-11",
        "dob": "1965-12-31",
        "email": "bo@example.org",
        "sex": "2",
        "race___1": "0",
        "race___2": "1",
        "race____99": "0",
        "symptoms___a": "0",
        "symptoms___b": "1",
        "age": "59",
        "height": "180",
        "weight": "80.0",
        "bmi": "24.7",
        "mood": "10",
        "enrol_complete": "2",
    },
    {
        "record_id": "002",
        "redcap_repeat_instrument": "history",
        "redcap_repeat_instance": "1",
        "drug": "sertraline",
        "dose": "50.5",
        "start": "2023-03-15",
        "history_complete": "1",
    },
]


def rows_frame(rows: list[dict], study_columns: list[str] | None = None) -> pl.DataFrame:
    """REDCap-style text frame: every column of any row, '' for cells a row does not have."""
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    if study_columns:
        cols = [c for c in cols if c in study_columns or c.startswith("redcap_")] + [
            c for c in cols if c not in study_columns and not c.startswith("redcap_")
        ]
    return pl.DataFrame([{c: row.get(c, "") for c in cols} for row in rows], schema={c: pl.String for c in cols})


def write_csv(path: Path, rows: list[dict]) -> Path:
    rows_frame(rows).write_csv(path)
    return path


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kap_trd_intake.csv"


def first_candidates(folder: Path, n: int) -> Path:
    """`folder`/small.csv: the first `n` candidates of the example data set (record ids 0001..n, all their rows)."""
    path = folder / "small.csv"
    with open(EXAMPLE, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keep = {f"{i:04d}" for i in range(1, n + 1)}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(r for r in rows if r["record_id"] in keep)
    return path
