"""Intake files to a frame of text: every cell a string (or null for blank), never an inferred number.

REDCap's flat export is text, and identifiers such as `00123` only survive if nothing guesses a type. Typed
sources (Parquet, JSON numbers, pandas frames) are turned back into REDCap's raw text form (`stringify`), so
one typed conversion (trialkit.records.convert) serves every format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import DataError, Location

ROW = "_row"  # 1-based data row number (the CSV line is ROW + 1 because of the header)

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}

_DUPLICATED = re.compile(r"^(.*)_duplicated_\d+$")
_SAFE_INT = 2**53  # floats above this are not exact integers any more


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            f"unknown data file type {path.suffix or '(none)'!r}; expected one of {known}",
            location=Location(file=str(path)),
        )
    return fmt


def read_text_frame(path: str | Path, *, sheet: str | int | None = None) -> tuple[pl.DataFrame, str]:
    """Read `path` as text cells. Returns the frame (with ROW) and the detected format name.

    Raises DataError for a missing, unreadable or non-tabular file.
    """
    path = Path(path)
    fmt = detect_format(path)
    if not path.is_file():
        raise DataError("file not found", location=Location(file=str(path)))
    try:
        if fmt in ("csv", "tsv"):
            frame = _read_csv(path, "\t" if fmt == "tsv" else ",")
        elif fmt == "xlsx":
            frame = _read_excel(path, sheet)
        elif fmt == "json":
            frame = stringify(_read_json(path))
        elif fmt == "ndjson":
            frame = stringify(pl.read_ndjson(path, infer_schema_length=None))
        else:
            frame = stringify(pl.read_parquet(path))
    except DataError as exc:
        if exc.location is None:
            raise DataError(exc.message, location=Location(file=str(path))) from exc
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError, UnicodeError) as exc:
        raise DataError(f"cannot read as {fmt}: {_short(exc)}", location=Location(file=str(path))) from exc
    except Exception as exc:  # fastexcel/pyarrow raise their own classes for corrupt files
        raise DataError(
            f"cannot read as {fmt}: {type(exc).__name__}: {_short(exc)}", location=Location(file=str(path))
        ) from exc
    return normalise(frame), fmt


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _read_csv(path: Path, separator: str) -> pl.DataFrame:
    try:
        return pl.read_csv(
            path, separator=separator, infer_schema=False, encoding="utf8", raise_if_empty=True, null_values=[""]
        )
    except pl.exceptions.ComputeError as exc:
        if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
            raise DataError("file is not UTF-8 text (save it as 'CSV UTF-8')") from exc
        raise
    except pl.exceptions.NoDataError as exc:
        raise DataError("file is empty (no header row)") from exc


def _read_excel(path: Path, sheet: str | int | None) -> pl.DataFrame:
    kwargs: dict[str, Any] = {"infer_schema_length": 0, "engine": "calamine"}
    if isinstance(sheet, int):
        kwargs["sheet_id"] = sheet
    elif sheet:
        kwargs["sheet_name"] = sheet
    frame = pl.read_excel(path, **kwargs)
    if not isinstance(frame, pl.DataFrame):  # several sheets requested
        raise DataError("choose one sheet")
    return frame


def _read_json(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_json(path, infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"not a JSON list of flat records (REDCap's flat export): {_short(exc)}") from exc
    return frame


def stringify(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as REDCap raw text. Integral floats lose their `.0` (a pandas int column with gaps is
    float; `1.0` would not be a valid choice code), booleans become 1/0, dates ISO."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype == pl.String:
            exprs.append(col)
        elif dtype.is_float():
            exact = col.is_finite() & (col == col.round(0)) & (col.abs() < _SAFE_INT)
            exprs.append(
                pl.when(exact)
                .then(col.cast(pl.Int64, strict=False).cast(pl.String))
                .otherwise(col.cast(pl.String))
                .alias(name)
            )
        elif (
            dtype.is_integer() or dtype.is_decimal() or dtype in (pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum)
        ):
            exprs.append(col.cast(pl.String))
        elif dtype == pl.Boolean:
            exprs.append(pl.when(col).then(pl.lit("1")).when(~col).then(pl.lit("0")).alias(name))
        elif dtype == pl.Date:
            exprs.append(col.dt.strftime("%Y-%m-%d"))
        elif isinstance(dtype, pl.Datetime):
            with_seconds = (col.dt.second() != 0) | (col.dt.nanosecond() != 0)
            exprs.append(
                pl.when(with_seconds)
                .then(col.dt.strftime("%Y-%m-%d %H:%M:%S"))
                .otherwise(col.dt.strftime("%Y-%m-%d %H:%M"))
                .alias(name)
            )
        elif dtype == pl.Time:
            exprs.append(
                pl.when(col.dt.second() != 0)
                .then(col.dt.strftime("%H:%M:%S"))
                .otherwise(col.dt.strftime("%H:%M"))
                .alias(name)
            )
        else:
            raise DataError(f"column {name!r} holds nested or binary values ({dtype}); expected flat records")
    return frame.select(exprs) if exprs else frame


def normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Trim column names, blank cells -> null, refuse duplicate headers, add ROW."""
    names = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    seen: set[str] = set()
    for name in names:
        dup = _DUPLICATED.match(name)
        if name in seen or (dup and dup.group(1) in names):
            raise DataError(f"duplicate column {dup.group(1) if dup else name!r}")
        seen.add(name)
    if ROW in seen:
        raise DataError(f"column name {ROW!r} is reserved")
    frame = frame.rename(dict(zip(frame.columns, names, strict=True)))
    if any(dtype != pl.String for dtype in frame.schema.values()):
        frame = stringify(frame)
    # Cells are kept verbatim (a padded " 34" is reported by validation, never silently changed); only empty
    # strings become null. Columns are rewritten only when they hold one: a 1M-row file has ~150M cells and a
    # rewritten string column is a full copy (16 bytes per cell in polars' string views).
    if frame.width and frame.height:
        flags = frame.select([(pl.col(c).str.len_bytes() == 0).any().alias(c) for c in frame.columns]).row(0)
        fix = [c for c, flagged in zip(frame.columns, flags, strict=True) if flagged]
        if fix:
            frame = frame.with_columns(
                [pl.when(pl.col(c).str.len_bytes() == 0).then(None).otherwise(pl.col(c)).alias(c) for c in fix]
            )
    return frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
