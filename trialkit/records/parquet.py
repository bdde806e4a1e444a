"""Reading a Parquet intake file for screening: typed columns kept in their type, one row kind at a time.

docs/screening-speed.md says what each shortcut saves and why it gives the ordinary read's result; when it
could not, these functions decline (None, or no column kept) and trialkit.records.readers reads the file.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import polars as pl

from trialkit.definitions.model import Study
from trialkit.records.by_form import read_parts
from trialkit.records.convert import REPEAT_INSTANCE, REPEAT_INSTRUMENT, keeps_type, study_columns
from trialkit.records.readers import normalise, stringify


def read_by_form(
    path: Path, study: Study, columns: Collection[str] | None, keep: Collection[str]
) -> pl.DataFrame | None:
    """A flat-export Parquet file read one row kind at a time: the non-repeating rows with the non-repeating
    forms' columns, each repeating form's rows with its own columns, stacked. In a flat export most cells are
    the blanks of the other row kinds (a candidate's row has no treatment-history fields, each treatment row
    none of the candidate's): they are never decoded, and the stacked frame holds them as empty blocks that
    cost no memory (a million candidates and 3.5 million treatment rows: 1.3 GB instead of 3.7 GB).

    The rows come grouped by kind (each kind in file order, ROW keeps their number in the file). None, for the
    ordinary read, whenever this could differ from it: a column some rows hold where its form does not belong
    (only the file's own null counts tell, so a file without them), a repeating instrument the study does not
    have, a form that repeats on some events and not on others, names that need trimming."""
    if not path.is_file() or path.suffix.lower() not in (".parquet", ".pq") or columns is None:
        return None
    try:
        return _by_form(path, study, columns, keep)
    except Exception:  # any surprise (a damaged file...): the ordinary read reads or explains it
        return None


def _by_form(path: Path, study: Study, columns: Collection[str], keep: Collection[str]) -> pl.DataFrame | None:
    import pyarrow.parquet as pq

    schema = pl.read_parquet_schema(path)
    names = list(schema)
    if schema.get(REPEAT_INSTRUMENT, pl.String) != pl.String:
        return None
    meta = pq.ParquetFile(path).metadata
    index = {meta.schema.column(i).name: i for i in range(meta.num_columns)}

    def filled(wanted: list[str]) -> dict[str, int] | None:
        """Each column's written cells, from the file's own statistics (None: a row group has none)."""
        nulls = dict.fromkeys(wanted, 0)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for n in wanted:
                stats = group.column(index[n]).statistics if n in index else None
                if stats is None or not stats.has_null_count:
                    return None
                nulls[n] += stats.null_count
        return {n: meta.num_rows - k for n, k in nulls.items()}

    return read_parts(
        pl.scan_parquet(path), names, study, columns, filled,
        prepare=lambda part: normalise(stringify(part, keep), keep),
        dtype_of=lambda n: schema[n] if n in keep else pl.String,
    )


def typed_columns(path: Path, study: Study) -> set[str]:
    """A Parquet file's columns that can be typed without a round trip through text (convert.keeps_type)."""
    if str(path) == "-" or not path.is_file() or path.suffix.lower() not in (".parquet", ".pq"):
        return set()
    try:
        schema = pl.read_parquet_schema(path)
    except Exception:  # the reader explains a damaged file
        return set()
    by_name = {c.name: c for c in study_columns(study) if c.name != study.record_id_field}
    missing = tuple(m.code for m in study.missing_codes)
    kept = set()
    for name, dtype in schema.items():
        column = by_name.get(str(name).strip().lstrip("\ufeff"))
        if column is not None and keeps_type(column, dtype, missing):
            kept.add(column.name)
        elif name == REPEAT_INSTANCE and dtype.is_integer():
            kept.add(name)  # typed as Int64 from its text anyway (millions of instance rows: no round trip)
    return kept
