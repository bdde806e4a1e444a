"""Reading a Parquet intake file for screening: typed columns kept in their type, one row kind at a time.

docs/screening-speed.md says what each shortcut saves and why it gives the ordinary read's result; when it
could not, these functions decline (None, or no column kept) and trialkit.records.readers reads the file.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import polars as pl

from trialkit.definitions.model import Study
from trialkit.records.calculations import nonrepeating_forms
from trialkit.records.convert import META_COLUMNS, REPEAT_INSTANCE, REPEAT_INSTRUMENT, keeps_type, study_columns
from trialkit.records.readers import ROW, SOURCE_ROW, normalise, refuse_labels_export, stringify


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
    rid = study.record_id_field
    if any(str(n) != str(n).strip().lstrip("\ufeff") or n == ROW for n in names) or len(set(names)) != len(names):
        return None
    if rid not in schema or REPEAT_INSTRUMENT not in schema or schema[REPEAT_INSTRUMENT] != pl.String:
        return None
    refuse_labels_export(names)  # a labels export is refused before anything is read, as the ordinary read does
    wanted = [n for n in names if n in set(columns)]
    keys = [n for n in wanted if n == rid or n in META_COLUMNS]
    form_of = {c.name: c.form for c in study_columns(study)}
    plain = nonrepeating_forms(study)
    repeating = {form for _, form in study.repeating_pairs}
    if plain & repeating or any(n not in form_of for n in wanted if n not in keys):
        return None
    parts: dict[str | None, list[str]] = {None: []}
    for form in repeating:
        parts[form] = []
    for n in wanted:
        if n not in keys:
            form = form_of[n]
            parts[None if form in plain else form].append(n)
    kinds = pl.scan_parquet(path).select(pl.col(REPEAT_INSTRUMENT).unique()).collect().to_series().to_list()
    if any(k is not None and k not in repeating for k in kinds):
        return None  # '', ' atrq', an unknown instrument: the ordinary read numbers and reports those rows
    meta = pq.ParquetFile(path).metadata
    nulls = dict.fromkeys(wanted, 0)
    index = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for n in wanted:
            if n not in index:
                return None
            stats = group.column(index[n]).statistics
            if stats is None or not stats.has_null_count:
                return None
            nulls[n] += stats.null_count
    frames = []
    scan = pl.scan_parquet(path).with_row_index(SOURCE_ROW, offset=1)
    for form, cols in parts.items():
        if form is not None and form not in kinds:
            if any(nulls[n] != meta.num_rows for n in cols):
                return None  # values of a form no row is filed under: the ordinary read lists them misplaced
            continue
        which = pl.col(REPEAT_INSTRUMENT).is_null() if form is None else pl.col(REPEAT_INSTRUMENT) == form
        part = scan.filter(which).select(SOURCE_ROW, *keys, *cols).collect()
        for n in cols:  # every value of the column is on these rows, or some sit where the form does not belong
            if part.height - part.get_column(n).null_count() != meta.num_rows - nulls[n]:
                return None
        # one chunk per column: stacked parts then share their block boundaries, and later selects and filters
        # keep the other kinds' blank blocks empty (misaligned chunks would be rewritten whole, gigabytes)
        frame = normalise(stringify(part, keep), keep)
        del part
        frames.append(_one_block(frame))
    frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    # columns of a form no row is filed under are blank throughout, as the ordinary read has them
    absent = [n for n in wanted if n not in frame.columns]
    frame = frame.hstack([
        pl.Series(n, [None], dtype=schema[n] if n in keep else pl.String).new_from_index(0, frame.height)
        for n in absent
    ]) if absent else frame
    return frame.select(ROW, *wanted)


def _one_block(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with each column in one block, copied a few columns at a time: polars copies those in parallel, and
    the reader's blocks of a column are freed as soon as it is copied (copying the frame whole would hold both
    copies of every column at once)."""
    names = list(frame.columns)
    done: list[pl.Series] = []
    for at in range(0, len(names), _COPIED_TOGETHER):
        batch = pl.DataFrame([frame.drop_in_place(name) for name in names[at:at + _COPIED_TOGETHER]])
        done += batch.rechunk().get_columns()
        del batch
    return pl.DataFrame(done)


_COPIED_TOGETHER = 8


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
