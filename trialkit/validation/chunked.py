"""Validation by chunks of whole records, so a large file is never held as one all-text frame.

Every check of trialkit.validation.core looks at one row, or at the rows of one record (duplicate rows,
instance numbering, rows that disagree, calculations reading the record's own values); none compares two
records. So validating groups of whole records one after another gives the findings of one pass, provided:

- a record's rows are never split over two chunks, wherever they sit in the file: a first, narrow pass reads
  only the record id column and gives every row the index of its record's last row; a row waits in a buffer
  until that row has been read;
- what concerns the whole file is given once: unknown columns and logic problems are the same in every
  chunk, and the interpretation notes of trialkit.records (renumbered instances, rows that disagree) are
  merged back into the capped lists one pass gives (first ten named, the rest counted);
- the findings are sorted as one pass sorts them (row, then column order).

CSV/TSV files are read in batches, the next chunk while this one is validated (peak memory: two chunks plus
the buffer). Other formats are read whole, then validated by chunks, which still saves the typed tables and
helper columns of the whole file.
"""

from __future__ import annotations

import datetime as _dt
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl

from trialkit.definitions.model import Study
from trialkit.errors import DataError, Location
from trialkit.records import FORMATS, ROW, IntakeData, read_intake
from trialkit.records.delimited import blocks
from trialkit.records.intake import build
from trialkit.records.limits import check_delimited
from trialkit.records.readers import normalise, read_text_frame
from trialkit.records.spreadsheet import zero_padded_width
from trialkit.validation.core import validate
from trialkit.validation.findings import COLUMNS, Findings, empty_frame, file_finding

#: cells per chunk: with typed and helper columns, the check masks and the next chunk read ahead, ~1.15 GB peak
#: for a 1M x 162 export (61,700 rows a chunk). Fixed costs per chunk (building the checks, compiling the
#: logic) are small next to the data's, so smaller chunks would cost little CPU; larger ones, memory.
CHUNK_CELLS = 10_000_000


def chunk_rows_for(width: int) -> int:
    return max(1_000, CHUNK_CELLS // max(width, 1))


_RENAMED = re.compile(r"_duplicated_\d+$")  # how polars renames a repeated header
_RELEASE = "__release"  # 0-based index of the last input row of the row's record


# ---- public entry points -----------------------------------------------------------------------------------
def validate_file(
    path: str | Path,
    study: Study,
    *,
    event: str | None = None,
    sheet: str | int | None = None,
    as_of: _dt.date | None = None,
    chunk_rows: int | None = None,
) -> Findings:
    """Validate an intake file chunk by chunk; same findings as `validate(read_intake(path, study))`.
    `chunk_rows`: rows per chunk (default: CHUNK_CELLS cells). Raises DataError as read_intake does when the
    file cannot be read as intake data."""
    path = Path(path)
    as_of = as_of or _dt.date.today()
    findings = _validate_file(path, study, event=event, sheet=sheet, as_of=as_of, chunk_rows=chunk_rows)
    if findings.rows_checked == 0:
        # "no problems" would pass a file that holds no one (an export cut to its header): an unreadable-data
        # outcome, as screen and push say of the same file (docs/cli.md, exit 1)
        raise DataError("no data rows (a header only): nothing to validate", location=Location(file=str(path)))
    return findings


def _validate_file(
    path: Path, study: Study, *, event: str | None, sheet: str | int | None, as_of: _dt.date, chunk_rows: int | None
) -> Findings:
    # anything but a delimited file (a workbook, a folder of pulled tables...) goes to read_intake, which knows it
    fmt = FORMATS.get(path.suffix.lower()) if path.is_file() else None
    if fmt in ("csv", "tsv"):
        read = _delimited_batches(path, "\t" if fmt == "tsv" else ",", study, chunk_rows)
        if read is not None:
            batches, width = read
            return validate_chunks(
                _read_ahead(batches), study, event=event, source=str(path), fmt=fmt, as_of=as_of, id_width=width
            )
    # other formats, or a delimited file the batched reader refuses: read_intake reads it (or explains why not)
    intake = read_intake(path, study, event=event, sheet=sheet)
    return validate_intake(intake, as_of=as_of, chunk_rows=chunk_rows)


def validate_intake(intake: IntakeData, *, as_of: _dt.date | None = None, chunk_rows: int | None = None) -> Findings:
    """`validate(intake)` by chunks of whole records of `intake.raw`."""
    as_of = as_of or _dt.date.today()
    chunk_rows = chunk_rows or chunk_rows_for(intake.raw.width)
    rid = intake.study.record_id_field
    raw = intake.raw
    if raw.height == 0:
        return validate(intake, as_of=as_of)
    release = _release(raw.select(pl.col(rid)), rid)
    return validate_chunks(
        _record_chunks([raw], release, chunk_rows),
        intake.study,
        event=intake.event,
        source=intake.source,
        fmt=intake.format,
        as_of=as_of,
        id_width=raw.select(zero_padded_width(pl.col(rid))).item(),
    )


def validate_chunks(
    chunks: Iterable[pl.DataFrame],
    study: Study,
    *,
    event: str | None,
    source: str | None,
    fmt: str | None,
    as_of: _dt.date,
    id_width: int | None = None,
) -> Findings:
    """Validate normalised text frames (with ROW numbered over the whole input), each holding whole records,
    and merge their findings as one pass gives them. `id_width`: the whole input's zero-padded id width
    (spreadsheet.zero_padded_width; None: none is padded)."""
    row_level: list[pl.DataFrame] = []
    file_level: list[pl.DataFrame] = []
    notes: list[tuple[str, ...]] = []
    order: dict[str, int] | None = None
    rows = 0
    for chunk in chunks:
        intake = build(chunk, study, event=event, source=source, fmt=fmt)
        # the file's widest zero-padded id, not the chunk's: where the file is cut must not change a finding
        found = validate(intake, as_of=as_of, id_width=id_width).frame
        rows += chunk.height
        notes.append(intake.notes)
        order = order or {name: i for i, name in enumerate(chunk.columns)}
        row_level.append(found.filter(pl.col("row").is_not_null()))
        file_level.append(found.filter(pl.col("row").is_null() & (pl.col("check") != "shape")))
    if order is None:  # no chunk at all: an empty input
        return Findings(frame=empty_frame(), source=source, rows_checked=0, as_of=as_of)
    shape = pl.DataFrame(
        [file_finding("shape", note) for note in merge_notes(notes, _repeating_forms(study))], schema=COLUMNS
    )
    # logic problems and unknown columns do not depend on the rows: each chunk repeats them
    once = pl.concat(file_level, how="vertical").unique(maintain_order=True)
    logic = once.filter(pl.col("check") == "logic")
    others = once.filter(pl.col("check") != "logic")
    frame = (
        pl.concat([shape, logic, *row_level, others], how="vertical")
        .with_columns(pl.col("field").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_o"))
        .sort(["row", "_o"], nulls_last=False, maintain_order=True)
        .drop("_o")
    )
    return Findings(frame=frame, source=source, rows_checked=rows, as_of=as_of)


def _repeating_forms(study: Study) -> list[str]:
    return list(dict.fromkeys(form for _, form in study.repeating_pairs))


def _read_ahead(chunks: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """`chunks`, the next one read in a thread while this one is validated: polars parses the file without the
    GIL, and the Python-side steps of a chunk would otherwise leave a core idle. At most one chunk is read
    ahead (memory: two chunks, not one). Errors reach the caller as they are, in order."""
    handoff: queue.Queue = queue.Queue()
    room = threading.Semaphore(1)  # released when the caller takes a chunk: then the next one is read
    stop = threading.Event()

    def read() -> None:
        try:
            pending = iter(chunks)
            while True:
                while not room.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                chunk = next(pending, None)
                handoff.put((chunk, None))
                if chunk is None:
                    return
        except BaseException as exc:  # handed to the caller, raised there
            handoff.put((None, exc))

    reader = threading.Thread(target=read, name="trialkit-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            chunk, error = handoff.get()
            room.release()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()  # the caller may have stopped early (an error): let the reader end
        reader.join()


# ---- whole records per chunk -------------------------------------------------------------------------------
def _record_key(rid: str) -> pl.Expr:
    """The record a row belongs to, as trialkit.records.intake.build reads it (trimmed; blank is none)."""
    key = pl.col(rid).str.strip_chars()
    return pl.when(key == "").then(None).otherwise(key)


def _release(ids: pl.DataFrame, rid: str) -> pl.Series:
    """Per input row (0-based, in file order), the index of the last row of its record. Rows without a record
    id count as one record: build() numbers their unnumbered instances together."""
    # the index is a column first: inside over() an int_range would count the rows of each record
    index = pl.col(_RELEASE)
    return (
        ids.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(_RELEASE))
        .select(index.max().over(_record_key(rid).fill_null("\x00")))
        .get_column(_RELEASE)
    )


def _record_chunks(batches: Iterable[pl.DataFrame], release: pl.Series, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Regroup normalised frames (ROW numbered over the input, 1-based) into chunks of about `chunk_rows`
    rows in which every record is whole: rows are held back until every record begun before them has ended
    (a file sorted by record, as REDCap exports, holds back at most one record)."""
    waiting: list[pl.DataFrame] = []
    waiting_rows = 0
    for batch in batches:
        if batch.height:
            waiting.append(batch)
            waiting_rows += batch.height
        if waiting_rows < chunk_rows:
            continue
        pending = pl.concat(waiting, how="vertical")
        index = pending.get_column(ROW) - 1
        # cut after a row where every record begun so far has ended: records stay whole and chunks keep the
        # file's order of records (the notes of trialkit.records name records in that order)
        closed = (release.gather(index).cum_max() <= index).arg_true()
        cut = int(closed[-1]) + 1 if closed.len() else 0
        ready, rest = pending.head(cut), pending.slice(cut)
        waiting, waiting_rows = ([rest] if rest.height else []), rest.height
        if ready.height:
            yield ready
    if waiting:
        yield pl.concat(waiting, how="vertical")


def _delimited_batches(
    path: Path, separator: str, study: Study, chunk_rows: int | None
) -> tuple[Iterator[pl.DataFrame], int | None] | None:
    """Chunks of whole records of a CSV/TSV file and the width of its zero-padded record ids, or None when the
    batched reader cannot take the file (the caller then reads it whole, which explains what is wrong with it)."""
    try:
        check_delimited(path, separator)
        header = list(pl.scan_csv(path, separator=separator, infer_schema=False, n_rows=0).collect_schema())
        chunk_rows = chunk_rows or chunk_rows_for(len(header))
        block = max(1, chunk_rows) * 64  # bytes per read; a 160-column export row is ~500 bytes
        names = [str(c).strip().lstrip("\ufeff") for c in header]
        rid = study.record_id_field
        if rid not in names or len(set(names)) != len(names) or ROW in names or any(map(_RENAMED.search, names)):
            return None
        # the same reader as the batches below, so row i here is row i there
        parts = list(blocks(path, separator, header, block, [names.index(rid)]))
    except (DataError, pl.exceptions.PolarsError, OSError):
        return None
    if not parts:  # a header and no data row: the whole-file path says so in its words
        return None
    ids = pl.concat(parts, how="vertical")
    ids.columns = [rid]
    if ids.height == 0:
        return None
    release = _release(ids, rid)
    width = ids.select(zero_padded_width(pl.col(rid))).item()
    del ids

    def batches() -> Iterator[pl.DataFrame]:
        offset = 0
        try:
            for batch in blocks(path, separator, header, block, None):
                height = batch.height
                frame = normalise(batch).with_columns(pl.col(ROW) + offset)
                offset += height
                yield frame
        except pl.exceptions.PolarsError:
            # the parser's own message quotes cells: the whole-file reader locates the problem without them
            read_text_frame(path)
            raise DataError("malformed file: cannot be read as a table", location=Location(file=str(path))) from None
        except DataError as exc:
            if exc.location is not None:
                raise
            raise DataError(exc.message, location=Location(file=str(path))) from None  # every message names its file
        if offset != release.len():
            raise DataError("the file changed while it was being read", location=Location(file=str(path)))

    return _record_chunks(batches(), release, chunk_rows), width


# ---- notes of the whole file ------------------------------------------------------------------------------
# trialkit.records.intake caps two lists of notes at ten named entries and a count of the rest. Per chunk the
# lists are capped separately; these patterns put them back together. Order within a kind is file order
# (chunks come in file order), kinds come in the order build() gives them.
_NUMBERED = re.compile(r"^record .*: \d+ .* row\(s\) without a usable ")
_NUMBERED_MORE = re.compile(r"^\.\.\. and (\d+) more record\(s\) with unnumbered repeating rows$")
_CONFLICT = re.compile(r"^record( \((?P<form>[^ ]+) instance\))? .*: rows disagree on ")
_CONFLICT_MORE = re.compile(r"^\.\.\. and (\d+) more with rows that disagree$")
_NOTES_LIMIT = 10


def merge_notes(per_chunk: list[tuple[str, ...]], forms: list[str]) -> list[str]:
    """The notes one pass over all chunks' rows gives, from each chunk's notes; `forms`: the repeating forms in
    the order build() lists their conflicts."""
    general: list[str] = []
    numbered: list[str] = []
    numbered_total = 0
    conflicts: dict[str, list[str]] = {}  # kind ('' for records, else the form) -> notes, file order
    conflict_total = 0
    for notes in per_chunk:
        for note in notes:
            if m := _NUMBERED_MORE.match(note):
                numbered_total += int(m.group(1))
            elif _NUMBERED.match(note):
                numbered.append(note)
                numbered_total += 1
            elif m := _CONFLICT_MORE.match(note):
                conflict_total += int(m.group(1))
            elif m := _CONFLICT.match(note):
                conflicts.setdefault(m.group("form") or "", []).append(note)
                conflict_total += 1
            elif note not in general:
                general.append(note)
    out = general + numbered[:_NOTES_LIMIT]
    if numbered_total > _NOTES_LIMIT:
        out.append(f"... and {numbered_total - _NOTES_LIMIT} more record(s) with unnumbered repeating rows")
    # build() lists record conflicts first, then each repeating form's
    rank = {form: i for i, form in enumerate(["", *forms])}
    kinds = sorted(conflicts, key=lambda k: rank.get(k, len(rank)))
    named = [note for kind in kinds for note in conflicts[kind]]
    out += named[:_NOTES_LIMIT]
    if conflict_total > _NOTES_LIMIT:
        out.append(f"... and {conflict_total - _NOTES_LIMIT} more with rows that disagree")
    return out
