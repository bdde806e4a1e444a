"""Reading a flat export one row kind at a time: the non-repeating rows with the non-repeating forms' columns, then
each repeating form's rows with its own columns, stacked (docs/screening-speed.md, "Reading a Parquet file").

In a flat export most cells are the blanks of the other row kinds (a candidate's row has no treatment-history
fields, each treatment row none of the candidate's). Read this way they are never decoded, and the stacked frame
holds them as empty blocks that cost no memory. Each format's reader (records.parquet, records.delimited) makes
sure every value of a column is on its kind's rows; whenever reading by form could differ from the ordinary read,
it declines (None) and the ordinary read reads the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import polars as pl

from trialkit.definitions.model import Study
from trialkit.records.calculations import nonrepeating_forms
from trialkit.records.convert import META_COLUMNS, REPEAT_INSTRUMENT, study_columns
from trialkit.records.readers import DUPLICATED_NAME, ROW, SOURCE_ROW, refuse_labels_export


def read_parts(
    scan: pl.LazyFrame,
    names: Sequence[str],
    study: Study,
    columns: Collection[str],
    filled: Callable[[list[str]], dict[str, int] | None],
    *,
    prepare: Callable[[pl.DataFrame], pl.DataFrame],
    dtype_of: Callable[[str], pl.DataType],
) -> pl.DataFrame | None:
    """The file `scan` reads (its columns `names`, as the ordinary read names them) one row kind at a time, the
    rows of each kind in file order and ROW their number in the file; None where that could differ from the
    ordinary read. `filled(wanted)`: how many written cells each column has in the whole file (None: not known).
    `prepare`: what the ordinary read does to a frame once read (readers.normalise); `dtype_of`: the type a column
    no row fills has in the ordinary read."""
    layout = form_parts(study, names, columns)
    if layout is None:
        return None
    wanted, keys, parts = layout
    repeating = set(parts) - {None}
    kinds = scan.select(pl.col(REPEAT_INSTRUMENT).unique()).collect().to_series().to_list()
    if any(k is not None and k not in repeating for k in kinds):
        return None  # '', ' atrq', an unknown instrument: the ordinary read numbers and reports those rows
    counts = filled(wanted)
    if counts is None:
        return None
    frames = []
    scan = scan.with_row_index(SOURCE_ROW, offset=1)
    for form, cols in parts.items():
        if form is not None and form not in kinds:
            if any(counts[n] for n in cols):
                return None  # values of a form no row is filed under: the ordinary read lists them misplaced
            continue
        which = pl.col(REPEAT_INSTRUMENT).is_null() if form is None else pl.col(REPEAT_INSTRUMENT) == form
        part = scan.filter(which).select(SOURCE_ROW, *keys, *cols).collect()
        for n in cols:  # every value of the column is on these rows, or some sit where the form does not belong
            if part.height - part.get_column(n).null_count() != counts[n]:
                return None
        # one chunk per column: stacked parts then share their block boundaries, and later selects and filters
        # keep the other kinds' blank blocks empty (misaligned chunks would be rewritten whole, gigabytes)
        frame = prepare(part)
        del part
        frames.append(one_block(frame))
    return stacked(frames, wanted, dtype_of)


def form_parts(
    study: Study, names: Sequence[str], columns: Collection[str]
) -> tuple[list[str], list[str], dict[str | None, list[str]]] | None:
    """The columns of `names` the caller reads (`wanted`), the key columns among them, and each row kind's own
    columns (None: the non-repeating forms'); None when the ordinary read could read the file differently: names it
    trims, refuses or renames, no record id or instrument column, a column of no form of the study, a form that
    repeats on some events only. A labels export is refused here, before anything is read, as the ordinary read
    refuses it."""
    rid = study.record_id_field
    if (any(str(n) != str(n).strip().lstrip("\ufeff") or n == ROW or DUPLICATED_NAME.match(str(n)) for n in names)
            or len(set(names)) != len(names) or rid not in names or REPEAT_INSTRUMENT not in names):
        return None
    refuse_labels_export(names)
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
    return wanted, keys, parts


def stacked(frames: list[pl.DataFrame], wanted: list[str], dtype_of: Callable[[str], pl.DataType]) -> pl.DataFrame:
    """The parts (each prepared, one block per column) one above the other, with the columns of a form no row is
    filed under blank throughout, as the ordinary read has them."""
    frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    absent = [n for n in wanted if n not in frame.columns]
    frame = frame.hstack([
        pl.Series(n, [None], dtype=dtype_of(n)).new_from_index(0, frame.height) for n in absent
    ]) if absent else frame
    return frame.select(ROW, *wanted)


def one_block(frame: pl.DataFrame) -> pl.DataFrame:
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
