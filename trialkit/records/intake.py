"""Intake data as the rest of trialkit sees it: typed records, per-event rows and repeating-instrument tables.

Shapes (REDCap's flat export, section 2.1 of the REDCap notes): one input row per (record, event, repeat
instrument, repeat instance). Non-repeating rows become one row per record (per record-event when
longitudinal); each repeating instrument becomes its own table keyed by record (+ event) and instance.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.definitions.model import Study
from trialkit.definitions.shown import shown_name
from trialkit.errors import DataError, Location, UsageError
from trialkit.records.calculations import merge_per_key, nonrepeating_forms
from trialkit.records.convert import (
    EVENT,
    META_COLUMNS,
    REPEAT_INSTANCE,
    REPEAT_INSTRUMENT,
    Column,
    null_column,
    study_columns,
    typed_expr,
    typed_from_source,
    unchanged_from_source,
)
from trialkit.records.delimited import read_csv_by_form
from trialkit.records.kinds import kind_blocks, rows_of_kind
from trialkit.records.parquet import read_by_form, typed_columns
from trialkit.records.readers import ROW, detect_format, normalise, read_text_frame, text_expr


@dataclass(frozen=True, eq=False)
class IntakeData:
    """Typed intake data of one study.

    - `records`: one row per record (every record id seen in the input, first-appearance order) with the record
      id as text and every non-repeating field typed; for a longitudinal study the rows of `event`.
      Fields absent from the input are all-null columns of their dtype.
    - `record_events`: every non-repeating row, one per (record, event) (classic project: same as `records`).
    - `instances`: per repeating instrument, its rows keyed by record id, [`redcap_event_name`] and
      `redcap_repeat_instance` (Int64), with that form's fields typed and `<form>_complete`.
    - `raw`: the input as read, every cell text (blank -> null; key columns trimmed) plus `_row` (1-based row);
      read with `keep_types` (screening), a Parquet file's date and number columns (and an integer
      `redcap_repeat_instance`) stay in their type (convert.keeps_type: only where that gives exactly what their
      text would).
    - `typed`: the same rows as `raw`, typed, with the REDCap key columns; what validation checks.
    - `notes`: how the input was interpreted where it was not the exact REDCap shape.
    """

    study: Study
    raw: pl.DataFrame
    typed: pl.DataFrame
    records: pl.DataFrame
    record_events: pl.DataFrame
    instances: Mapping[str, pl.DataFrame]
    event: str | None = None
    source: str | None = None
    format: str | None = None
    notes: tuple[str, ...] = field(default=())
    #: cells that hold a value screening must not read (see trialkit.records.usable); set by `for_screening`
    problems: pl.DataFrame | None = None
    screened_as_of: _dt.date | None = None
    #: cells whose rows disagree, left blank: (record, event, repeating instrument, instance, column)
    disputed: tuple[tuple[str, str | None, str | None, int | None, str], ...] = ()

    @property
    def record_id(self) -> str:
        return self.study.record_id_field

    @property
    def longitudinal(self) -> bool:
        return self.study.longitudinal

    def for_event(self, event: str) -> pl.DataFrame:
        """One row per record for `event` (all records, nulls where the record has no row for that event)."""
        if not self.study.longitudinal:
            return self.records
        _check_event(self.study, event)
        return _records_for_event(self.typed, self.record_events, self.record_id, event)

    def with_calculations(self, *, as_of: _dt.date | None = None, only: Collection[str] | None = None) -> IntakeData:
        """A copy where every calculated field holds the value its expression gives (REDCap mode, in dependency
        order, each row with its own form's data; an instance within its instance) wherever its inputs give one;
        elsewhere the stored value stays. Stored values that disagree are counted in `notes` (validation lists
        them). `as_of` is 'today' for expressions using it. `raw` is unchanged; calculations that cannot be
        evaluated stay as stored and are listed in `notes`."""
        from trialkit.records.calculations import fill_calculations

        typed, problems = fill_calculations(self, as_of=as_of, only=only)
        if typed is self.typed:  # no calc gave a value anywhere: the tables stand as they are
            return replace(self, notes=(*self.notes, *problems))
        records, record_events, instances, _ = _assemble(typed, self.study, self.event)
        return replace(
            self,
            typed=typed,
            records=records,
            record_events=record_events,
            instances=instances,
            notes=(*self.notes, *problems),
        )

    def for_screening(self, *, as_of: _dt.date, columns: Collection[str] | None = None) -> IntakeData:
        """The copy screening reads: every cell that fails its field's checks blanked and listed in `problems`,
        then calculated fields computed (a calc fed by a blanked cell is blanked and listed too). `columns`:
        the fields the caller reads (None: all). Idempotent for the same `as_of`."""
        from trialkit.records.usable import blank_tainted_calcs, blank_unusable, checked_columns

        if self.screened_as_of == as_of and self.problems is not None:
            return self
        wanted = None if columns is None else {c.field_name for c in checked_columns(self.study, self.typed.columns,
                                                                                    columns)}
        typed, problems = blank_unusable(self.typed, self.raw, self.study, as_of=as_of, columns=columns)
        cleaned = self
        if problems.height:
            records, record_events, instances, _ = _assemble(typed, self.study, self.event)
            cleaned = replace(self, typed=typed, records=records, record_events=record_events, instances=instances)
        cleaned = cleaned.with_calculations(as_of=as_of, only=wanted)
        typed, problems = blank_tainted_calcs(cleaned.typed, problems, self.study, only=wanted)
        if typed is not cleaned.typed:
            records, record_events, instances, _ = _assemble(typed, self.study, self.event)
            cleaned = replace(cleaned, typed=typed, records=records, record_events=record_events, instances=instances)
        if self.disputed:  # a value given twice, differently, is to settle, not to collect again
            problems = pl.concat([problems, _disputed_problems(self.disputed, self.event)], how="vertical")
        return replace(cleaned, problems=problems, screened_as_of=as_of)

    def as_text(self, study: Study | None = None) -> IntakeData:
        """The same rows, numbered as read, with every cell as REDCap's text, typed by `study` (default: this
        one): what validation judges. A `keep_types` read's typed columns are written out as `readers.stringify`
        writes them, a date-time at midnight in a date field read as the date (as `read_intake` does)."""
        study = study or self.study
        typed = {n: t for n, t in self.raw.schema.items() if n != ROW and t != pl.String}
        if not typed and study is self.study:
            return self
        raw = self.raw.with_columns(text_expr(pl.col(n), t).alias(n) for n, t in typed.items())
        plain = {n for n, t in typed.items() if t == pl.Date or t.is_numeric() or t == pl.Boolean}
        raw = _midnight_dates(raw, study, plain | {n for n in raw.columns if n not in typed})
        if not raw.get_column(ROW).is_sorted():  # read by form: rows grouped by kind, put back in file order
            raw = raw.sort(ROW)
        return build(raw, study, event=self.event, source=self.source, fmt=self.format)

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        study: Study,
        *,
        event: str | None = None,
        source: str | None = None,
    ) -> IntakeData:
        """Build from a polars or pandas frame, in REDCap raw text or already typed (dates, numbers...)."""
        if not isinstance(frame, pl.DataFrame):
            try:
                frame = pl.from_pandas(frame) if hasattr(frame, "to_numpy") else pl.DataFrame(frame)
            except Exception as exc:  # pandas/pyarrow conversion errors vary by version; their text may quote cells
                kind = type(frame).__name__
                raise DataError(f"cannot use this {kind} as intake data ({type(exc).__name__})") from None
        if ROW in frame.columns:
            frame = frame.drop(ROW)
        return build(normalise(frame), study, event=event, source=source)


def read_intake(
    path: str | Path,
    study: Study,
    *,
    event: str | None = None,
    sheet: str | int | None = None,
    records: Collection[str] | None = None,
    columns: Collection[str] | None = None,
    keep_types: bool = False,
) -> IntakeData:
    """Read an intake file (CSV/TSV, Excel, JSON, NDJSON, Parquet; REDCap flat export shape or one row per
    record) and type it by the study's fields. Raises DataError when the file is unreadable or not tabular
    intake data for this study (no record id column). `records`: keep only these record ids (before any
    typing, so one candidate out of a large file costs little more than reading it). `columns`: the only
    columns a caller reads (with the record id and REDCap's key columns); a Parquet file's other columns are
    not loaded (they read as absent), other formats read every column. `keep_types`: a Parquet file's date and
    number columns are typed straight from their type (convert.keeps_type), not through text; `raw` then holds
    them in that type (what screening reads; validation wants every cell's text)."""
    rid = study.record_id_field
    if columns is not None:
        columns = {*columns, rid, *META_COLUMNS}
    rows_of = (rid, list(records)) if records is not None else None
    keep = typed_columns(Path(path), study) if keep_types else set()
    parts = read_by_form(Path(path), study, columns, keep) if keep_types and records is None else None
    if parts is not None:
        raw, fmt = parts, "parquet"
    elif records is None and str(path) != "-" and (parts := read_csv_by_form(Path(path), study, columns)) is not None:
        raw, fmt = parts, detect_format(Path(path))
    else:
        raw, fmt = read_text_frame(path, sheet=sheet, columns=columns, rows_of=rows_of, keep=keep)
    if records is not None and rid in raw.columns:
        raw = raw.filter(pl.col(rid).str.strip_chars().is_in(list(records)))
    if fmt in ("xlsx", "parquet"):  # typed sources: a date may only exist as a date-time at midnight there
        raw = _midnight_dates(raw, study, _plain_typed(Path(path)) if fmt == "parquet" else ())
    return build(raw, study, event=event, source=str(path), fmt=fmt)


def _plain_typed(path: Path) -> set[str]:
    """A Parquet file's date, number and boolean columns: their text (readers.stringify) is never a date-time."""
    if not path.is_file():
        return set()
    schema = pl.read_parquet_schema(path)
    return {str(n).strip() for n, t in schema.items() if t == pl.Date or t.is_numeric() or t == pl.Boolean}


def _check_event(study: Study, event: str) -> None:
    names = [e.name for e in study.events]
    if event not in names:
        raise UsageError(f"unknown event {event!r}; the study's events are: {', '.join(names)}")


def _midnight_dates(raw: pl.DataFrame, study: Study, plain: Collection[str] = ()) -> pl.DataFrame:
    """Excel stores dates as date-times: a date cell reads as `2024-01-05 00:00:00` (a Parquet date-time column
    as `2024-01-05 00:00`). Give date and minute datetime fields REDCap's raw form back; anything else is left
    for validation to judge. `plain`: columns whose text cannot be a date-time (left alone, unscanned)."""
    fixes = []
    for col in study_columns(study):
        if col.name not in raw.columns or col.name in plain or raw.schema[col.name] != pl.String:
            continue
        seconds = col.validation is not None and col.validation.name.startswith("datetime_seconds")
        if col.kind == "date":
            fixes.append(pl.col(col.name).str.replace(r"^(\d{4}-\d{2}-\d{2}) 00:00(?::00)?$", "$1"))
        elif col.kind == "datetime" and not seconds:
            fixes.append(pl.col(col.name).str.replace(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}):00$", "$1"))
        elif col.kind == "time" and col.validation is not None and col.validation.name == "time":
            fixes.append(pl.col(col.name).str.replace(r"^(?:1899-12-3[01] )?(\d{2}:\d{2}):00$", "$1"))
    return raw.with_columns(fixes) if fixes else raw


def default_event(study: Study) -> str | None:
    events = study.events
    return events[0].name if events else None


def _repeating_forms(study: Study) -> list[str]:
    seen: list[str] = []
    for _, form in study.repeating_pairs:
        if form not in seen:
            seen.append(form)
    return seen


def build(
    raw: pl.DataFrame,
    study: Study,
    *,
    event: str | None = None,
    source: str | None = None,
    fmt: str | None = None,
) -> IntakeData:
    """Type a normalised text frame (see readers.normalise) into IntakeData."""
    rid = study.record_id_field
    loc = Location(file=source) if source else None
    if rid not in raw.columns:
        names = [c for c in raw.columns if c != ROW]
        header = "".join(names)
        if any(sep in header for sep in (";", "\t", "|")) and any(rid in c for c in names):
            hint = "; the columns seem to be separated by another character than a comma: save it as CSV"
        elif "\x00" in header or "\ufffd" in header:
            hint = "; the text seems to be in another encoding (UTF-16?): save it as UTF-8"
        else:
            # a header may be anything the file held (a token file read as data): only name-like cells are shown
            listed = [n for n in names[:8] if shown_name(n).startswith("'")]
            shown = ", ".join(listed) + (", ..." if len(names) > len(listed) else "")
            hint = f" (columns: {shown})" if listed else f" ({len(names)} columns, none named like a field)"
        raise DataError(
            f"no {rid!r} column (the study's record id field); this is not intake data for study "
            f"{study.name!r}{hint}",
            location=loc,
        )
    # REDCap's key columns are trimmed (" 001" and "001" are one record); other cells stay as written.
    keys_present = [
        c for c in (rid, EVENT, REPEAT_INSTRUMENT, REPEAT_INSTANCE) if c in raw.columns and raw.schema[c] == pl.String
    ]
    if raw.height:  # rewritten only where some cell has spaces to trim (millions of ids are a copy each)
        # looked at once per run of equal cells (a record's rows, an event's rows): half the ids, one event name
        padded = raw.select(
            _run_starts(pl.col(c).drop_nulls()).str.contains(r"^\s|\s$").any() for c in keys_present
        ).row(0)
        keys_present = [c for c, flag in zip(keys_present, padded, strict=True) if flag]
    stripped = [pl.col(c).str.strip_chars() for c in keys_present]
    raw = raw.with_columns(
        [pl.when(e == "").then(None).otherwise(e).alias(c) for e, c in zip(stripped, keys_present, strict=True)]
    )
    notes: list[str] = []
    if study.longitudinal:
        event = event or default_event(study)
        assert event is not None
        _check_event(study, event)
    else:
        event = None

    key_exprs: list[pl.Expr] = [pl.col(ROW), pl.col(rid).alias(rid)]
    if study.longitudinal:
        if EVENT in raw.columns:
            key_exprs.append(pl.col(EVENT))
        else:
            notes.append(f"no {EVENT} column: every row is read as event {event!r}")
            key_exprs.append(pl.lit(event, dtype=pl.String).alias(EVENT))
    key_exprs.append(
        pl.col(REPEAT_INSTRUMENT)
        if REPEAT_INSTRUMENT in raw.columns
        else pl.lit(None, dtype=pl.String).alias(REPEAT_INSTRUMENT)
    )
    key_exprs.append(
        pl.col(REPEAT_INSTANCE).cast(pl.Int64, strict=False)
        if REPEAT_INSTANCE in raw.columns
        else pl.lit(None, dtype=pl.Int64).alias(REPEAT_INSTANCE)
    )
    columns = study_columns(study)
    present = set(raw.columns)
    missing = tuple(m.code for m in study.missing_codes)
    schema = raw.schema
    as_read = _valid_coded(raw, [c for c in columns if c.name in present and c.name != rid], missing)
    as_read |= _unchanged_typed(raw, [c for c in columns if c.name in present and c.name != rid])
    value_exprs = [
        null_column(c) if c.name not in present
        else pl.col(c.name) if c.name in as_read
        else typed_expr(c, missing_codes=missing) if schema[c.name] == pl.String
        else typed_from_source(c, schema[c.name])  # a typed source column read_intake kept in its type
        for c in columns if c.name != rid
    ]
    typed = raw.select(key_exprs + value_exprs)
    typed, numbered = _number_instances(typed, study)
    notes += numbered

    records, record_events, instances, conflicts = _assemble(typed, study, event)
    notes += _conflict_notes(conflicts)
    return IntakeData(
        disputed=_disputed(conflicts, study.longitudinal),
        study=study,
        raw=raw,
        typed=typed,
        records=records,
        record_events=record_events,
        instances=instances,
        event=event,
        source=source,
        format=fmt,
        notes=tuple(notes),
    )


def _run_starts(col: pl.Expr) -> pl.Expr:
    """The first cell of each run of equal cells."""
    return col.filter((col != col.shift(1)).fill_null(True))


def _valid_coded(raw: pl.DataFrame, columns: list[Column], missing: tuple[str, ...]) -> set[str]:
    """Coded text columns whose every cell is blank or one of its codes: their typed column is the raw one as it
    is (typed_expr would copy it cell by cell to the same values; a million rows of forty choice fields is
    gigabytes)."""
    coded = [c for c in columns if c.codes is not None and raw.schema[c.name] == pl.String]
    if not coded or raw.height == 0:
        return set()
    flags = raw.select(_all_among(pl.col(c.name), [*c.codes, *missing]).alias(c.name) for c in coded).row(0)
    return {c.name for c, ok in zip(coded, flags, strict=True) if ok}


def _all_among(col: pl.Expr, values: list[str]) -> pl.Expr:
    """Whether every non-blank cell of `col` is one of `values`. A few values are compared one by one: comparing a
    short string's view is cheaper than hashing it (a yes/no field over a million rows: half the time)."""
    cells = col.drop_nulls()  # a column read by form is mostly a block of the other row kinds' blanks
    if len(values) > 8 or not values:
        return cells.is_in(values).all()
    return pl.any_horizontal(*(cells == v for v in values)).all()


def _unchanged_typed(raw: pl.DataFrame, columns: list[Column]) -> set[str]:
    """Typed source columns (read_intake's `keep_types`) that typing would give back unchanged
    (convert.unchanged_from_source): used as read."""
    checks = {
        c.name: check for c in columns if raw.schema[c.name] != pl.String
        and (check := unchanged_from_source(c, raw.schema[c.name])) is not None
    }
    if not checks or raw.height == 0:
        return set()
    flags = raw.select(check.alias(name) for name, check in checks.items()).row(0)
    return {name for name, ok in zip(checks, flags, strict=True) if ok}


_NOTES_LIMIT = 10  # conflicts and renumbered instances named one by one; beyond that, counted


def _number_instances(typed: pl.DataFrame, study: Study) -> tuple[pl.DataFrame, list[str]]:
    """Rows of a repeating instrument with no usable instance number (blank, 'new', 0, not a whole number) are
    numbered in file order after the record's highest number, as REDCap numbers 'new' instances: merged into
    one, two trials would count as one."""
    rid = study.record_id_field
    bad = pl.col(REPEAT_INSTRUMENT).is_not_null() & (
        pl.col(REPEAT_INSTANCE).is_null() | (pl.col(REPEAT_INSTANCE) < 1)
    )
    if not typed.select(bad.any()).item():
        return typed, []
    group = [rid, EVENT, REPEAT_INSTRUMENT] if study.longitudinal else [rid, REPEAT_INSTRUMENT]
    highest = pl.when(~bad).then(pl.col(REPEAT_INSTANCE)).max().over(group).fill_null(0)
    rank = bad.cast(pl.Int64).cum_sum().over(group)
    counts = typed.filter(bad & pl.col(rid).is_not_null()).group_by(rid, REPEAT_INSTRUMENT, maintain_order=True).len()
    typed = typed.with_columns(
        pl.when(bad).then(highest + rank).otherwise(pl.col(REPEAT_INSTANCE)).alias(REPEAT_INSTANCE)
    )
    notes = [
        f"record {r}: {n} {form} row(s) without a usable {REPEAT_INSTANCE} were numbered in file order"
        for r, form, n in counts.head(_NOTES_LIMIT).iter_rows()
    ]
    if counts.height > _NOTES_LIMIT:
        notes.append(f"... and {counts.height - _NOTES_LIMIT} more record(s) with unnumbered repeating rows")
    return typed, notes


def _disputed(conflicts: list[tuple[str, tuple, list[str]]], longitudinal: bool) -> tuple[tuple, ...]:
    """(record, event, instrument, instance, column) of every cell `_assemble` left blank because rows disagree."""
    out = []
    for where, key, columns in conflicts:
        form = None if where == "record" else where.removeprefix("record (").removesuffix(" instance)")
        record, event = key[0], key[1] if longitudinal else None
        instance = key[-1] if form is not None else None
        out += [(str(record), event, form, instance, column) for column in columns]
    return tuple(out)


def _disputed_problems(disputed: tuple[tuple, ...], event: str | None) -> pl.DataFrame:
    from trialkit.records.usable import PROBLEM_SCHEMA

    rows = [(None, record, ev, form, instance, column, "conflict",
             "rows disagree (trialkit validate lists them): keep one value")
            for record, ev, form, instance, column in disputed if ev is None or event is None or ev == event]
    return pl.DataFrame(rows, schema=PROBLEM_SCHEMA, orient="row")


def _conflict_notes(conflicts: list[tuple[str, tuple, list[str]]]) -> list[str]:
    """Which records had rows that disagree, and on which fields (never the values: they may identify)."""
    notes = []
    for where, key, columns in conflicts[:_NOTES_LIMIT]:
        place = " ".join(str(k) for k in key if k is not None)
        notes.append(
            f"{where} {place}: rows disagree on {', '.join(columns)}; those values are treated as missing "
            "(trialkit validate lists the rows)"
        )
    if len(conflicts) > _NOTES_LIMIT:
        notes.append(f"... and {len(conflicts) - _NOTES_LIMIT} more with rows that disagree")
    return notes


def _assemble(
    typed: pl.DataFrame, study: Study, event: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, pl.DataFrame], list[tuple[str, tuple, list[str]]]]:
    """records, record_events and instance tables from the typed rows, and the repeated rows that disagreed."""
    rid = study.record_id_field
    columns = study_columns(study)
    keys = [rid, EVENT] if study.longitudinal else [rid]
    nonrep_forms = nonrepeating_forms(study)
    nonrep_cols = [c.name for c in columns if c.form in nonrep_forms and c.name != rid]
    blocks = kind_blocks(typed)
    narrow = typed.select([*keys, *[c for c in nonrep_cols if c not in keys], REPEAT_INSTRUMENT])
    rows = rows_of_kind(narrow, rid, None, blocks).drop(REPEAT_INSTRUMENT)
    record_events, differ = merge_per_key(rows, keys)
    conflicts = [("record", key, cols) for key, cols in differ]

    if study.longitudinal:
        assert event is not None
        records = _records_for_event(typed, record_events, rid, event, blocks)
    else:
        records = _with_all_records(typed, record_events, rid, blocks)
        record_events = records

    instances = {}
    for form in _repeating_forms(study):
        instances[form], differ = _instances(typed, study, form, columns, blocks)
        conflicts += [(f"record ({form} instance)", key, cols) for key, cols in differ]
    return records, record_events, instances, conflicts


def _with_all_records(
    typed: pl.DataFrame, rows: pl.DataFrame, rid: str, blocks: dict[str | None, tuple[int, int]] | None = None
) -> pl.DataFrame:
    """`rows` (one per record id) with a blank row added for every record of `typed` that has none, then in
    first-appearance order. `blocks`: kind_blocks(typed), given when `rows` holds every record id of typed's
    non-repeating rows."""
    ids = typed.get_column(rid).drop_nulls()
    if ids.len() == 0:
        return rows
    if blocks is not None and _own_rows_first(typed, rid, blocks):
        return rows
    # The usual file keeps each record's rows together: its number of runs of equal ids bounds the distinct ids
    # from above, `rows` (a subset) from below; equal, every record has its row (no pass over distinct ids).
    starts = ids.filter((ids != ids.shift(1)).fill_null(True))  # one id per run: a record's rows kept together
    if starts.len() == rows.height:
        return rows
    # grouped by row kind (records.parquet.read_by_form): a record's id opens a run in each kind; all known is enough
    if starts.is_in(rows.get_column(rid).implode()).all():
        return rows
    # first appearance in the file: typed may hold its rows grouped by row kind (records.parquet.read_by_form)
    ids = typed.select(rid, ROW).filter(pl.col(rid).is_not_null()).sort(ROW).select(rid).unique(maintain_order=True)
    if ids.height == rows.height:
        return rows
    return ids.join(rows, on=rid, how="left", maintain_order="left")


def _own_rows_first(typed: pl.DataFrame, rid: str, blocks: dict[str | None, tuple[int, int]]) -> bool:
    """Whether every record id of `typed`'s repeating rows is on a non-repeating row, proved as REDCap's export
    order allows: each run of a record's repeating rows follows, in the file (ROW), a non-repeating row of the
    same record. Grouped by kind, as a Parquet file is read (records.parquet), the other proof (runs of ids)
    cannot be used; this one looks at one id per run and a binary search of row numbers, never at distinct ids."""
    if None not in blocks:
        return False
    own = typed.slice(*blocks[None]).select(rid, ROW).filter(pl.col(rid).is_not_null())
    if own.height == 0 or not own.get_column(ROW).is_sorted():
        return False
    for kind, (at, length) in blocks.items():
        if kind is None:
            continue
        theirs = typed.slice(at, length).select(rid, ROW).filter(pl.col(rid).is_not_null())
        theirs = theirs.filter((pl.col(rid) != pl.col(rid).shift(1)).fill_null(True))  # one row per run
        if theirs.height == 0:
            continue
        after = own.get_column(ROW).search_sorted(theirs.get_column(ROW), side="right")
        if (after == 0).any():  # repeating rows above every non-repeating row
            return False
        if not (own.get_column(rid).gather(after - 1) == theirs.get_column(rid)).all():
            return False
    return True


def _records_for_event(
    typed: pl.DataFrame,
    record_events: pl.DataFrame,
    rid: str,
    event: str,
    blocks: dict[str | None, tuple[int, int]] | None = None,
) -> pl.DataFrame:
    events = record_events.get_column(EVENT)
    if events.null_count() == 0 and (events == event).all():
        rows = record_events.drop(EVENT)  # a one-event file (the usual screening export): no copy
        return _with_all_records(typed, rows, rid, blocks)
    rows = record_events.filter(pl.col(EVENT) == event).drop(EVENT)
    return _with_all_records(typed, rows, rid)


def _instances(
    typed: pl.DataFrame,
    study: Study,
    form: str,
    columns: tuple[Column, ...],
    blocks: dict[str | None, tuple[int, int]] | None,
) -> tuple[pl.DataFrame, list[tuple[tuple, list[str]]]]:
    rid = study.record_id_field
    keys = [rid, EVENT, REPEAT_INSTANCE] if study.longitudinal else [rid, REPEAT_INSTANCE]
    cols = [c.name for c in columns if c.form == form and c.name != rid]
    rows = rows_of_kind(typed.select([*keys, *cols, REPEAT_INSTRUMENT]), rid, form, blocks)
    return merge_per_key(rows.drop(REPEAT_INSTRUMENT), keys)
