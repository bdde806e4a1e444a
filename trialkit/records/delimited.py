"""Reading a CSV/TSV intake file for screening one row kind at a time (trialkit.records.by_form).

REDCap's own export is a CSV: a million candidates with their treatment-history rows are 4.5 million lines, and
read whole as text every cell of every column is a 16-byte string view, the other kinds' blanks included (7.6 GB
for the benchmark's file). Here the file is parsed a block at a time and each block's rows are split by kind,
each kind keeping its own columns only. A CSV has no statistics, so each block checks that every value of a
column is on its kind's rows; anything the ordinary read would see differently (a value where its form does not
belong, rows without a record id, an instrument the study lacks, names it trims, a file its checks refuse) makes
this decline, and trialkit.records.readers reads the file as before.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterator
from pathlib import Path

import polars as pl

from trialkit.definitions.model import Study
from trialkit.records.by_form import form_parts, one_block, stacked
from trialkit.records.convert import REPEAT_INSTRUMENT
from trialkit.records.limits import check_delimited
from trialkit.records.readers import SOURCE_ROW, detect_format, header_line, normalise


def read_csv_by_form(path: Path, study: Study, columns: Collection[str] | None) -> pl.DataFrame | None:
    """A CSV or TSV file read one row kind at a time (see the module), or None for the ordinary read."""
    if columns is None or not path.is_file():
        return None
    try:
        fmt = detect_format(path)
        if fmt not in ("csv", "tsv"):
            return None
        return _by_form(path, study, columns, "\t" if fmt == "tsv" else ",")
    except Exception:  # anything unexpected: the ordinary read reads or explains it
        return None


def _by_form(path: Path, study: Study, columns: Collection[str], separator: str) -> pl.DataFrame | None:
    check_delimited(path, separator)  # a ragged row or a huge cell: the ordinary read says where
    header = list(pl.scan_csv(path, separator=separator, infer_schema=False, n_rows=0).collect_schema())
    rid = study.record_id_field
    if separator not in header_line(path):
        return None  # one column: the ordinary read tells which other separator the file has
    layout = form_parts(study, header, columns)
    if layout is None:
        return None
    wanted, keys, parts = layout
    repeating = set(parts) - {None}
    pieces: dict[str | None, list[pl.DataFrame]] = {form: [] for form in parts}
    read = 0
    for batch in blocks(path, separator, header, BLOCK_BYTES, None):
        batch = batch.with_row_index(SOURCE_ROW, offset=read + 1)
        read += batch.height
        kind = batch.get_column(REPEAT_INSTRUMENT)
        if batch.get_column(rid).null_count() or not set(kind.drop_nulls().unique().to_list()) <= repeating:
            return None  # rows without a record id, an instrument the study lacks: the ordinary read judges them
        for form, cols in parts.items():
            piece = batch.filter(kind.is_null() if form is None else kind == form).select(SOURCE_ROW, *keys, *cols)
            # every value of the column in this block is on these rows, or some sit where the form does not belong
            if any(piece.get_column(n).count() != batch.get_column(n).count() for n in cols):
                return None
            if piece.height or form is None:  # the non-repeating part is there even without rows, as by scan
                pieces[form].append(piece)
        del batch
    if read == 0:
        return None  # a header only: the ordinary read says so in its words
    frames = [one_block(normalise(pl.concat(pieces.pop(form), how="vertical"))) for form in parts if pieces[form]]
    return stacked(frames, wanted, lambda n: pl.String)


#: bytes of the file parsed at a time: a block of a 160-column export is ~60,000 rows
BLOCK_BYTES = 32 << 20


def blocks(
    path: Path, separator: str, header: list[str], size: int, columns: list[int] | None
) -> Iterator[pl.DataFrame]:
    """The data rows of a delimited file as text frames, reading about `size` bytes at a time. Blocks end at a
    line break outside quotes (an even number of quote characters before it: a doubled "" inside a quoted
    field keeps the parity), so a quoted line break never cuts a row. polars' own batched reader maps the
    whole file, whose pages then count as this process's memory."""
    options = {
        "separator": separator,
        "has_header": False,
        "new_columns": header,
        "infer_schema": False,
        "encoding": "utf8",
        "null_values": [""],
        "raise_if_empty": False,
        "columns": columns,
    }
    with path.open("rb") as handle:
        handle.readline()  # the header (check_delimited has seen that it holds no quoted line break)
        carry = b""
        odd = False  # the quote parity of `carry`
        while True:
            data = handle.read(size)
            if not data:
                break
            text = carry + data
            quotes_odd = odd ^ (data.count(b'"') % 2 == 1)
            cut = text.rfind(b"\n")
            tail_odd = False
            while cut >= 0:
                tail_odd = text.count(b'"', cut) % 2 == 1
                if quotes_odd == tail_odd:  # the quotes before the break are even
                    break
                cut = text.rfind(b"\n", 0, cut)
            if cut < 0:
                carry, odd = text, quotes_odd
                continue
            body, carry, odd = text[: cut + 1], text[cut + 1 :], tail_odd
            yield _read_block(body, options)
        if carry.strip(b"\r\n"):
            yield _read_block(carry, options)


def _read_block(body: bytes, options: dict) -> pl.DataFrame:
    frame = pl.read_csv(io.BytesIO(body), **options)
    return frame.select(pl.all().cast(pl.String)) if frame.width else frame
