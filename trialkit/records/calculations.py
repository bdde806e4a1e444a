"""Rows as REDCap logic sees them, and calculated fields filled from their expressions.

Shared by validation (branching logic, calc checks) and by `IntakeData.with_calculations()` (screening needs
madrs_total when the ten items are there but a spreadsheet has no total). Everything is one polars pass per
expression over all rows; trialkit.logic compiles the expressions (REDCap mode).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from trialkit.definitions.expressions import calc_references
from trialkit.definitions.model import Field, FieldType, Study
from trialkit.records.convert import EVENT, REPEAT_INSTRUMENT, study_columns
from trialkit.records.kinds import rows_of_kind

if TYPE_CHECKING:
    from trialkit.records.intake import IntakeData


def nonrepeating_forms(study: Study) -> set[str]:
    """Forms that have non-repeating data somewhere (classic: not repeating; longitudinal: on some event
    where they are not repeating, or on no event at all)."""
    forms = {inst.name for inst in study.instruments}
    if not study.longitudinal:
        return forms - set(study.repeating_instruments)
    out = set()
    for form in forms:
        events = [e for e in study.events if form in e.instruments]
        if not events or any(form not in e.repeating for e in events):
            out.add(form)
    return out


def form_scope(study: Study, form: str, *, instrument: str = REPEAT_INSTRUMENT, event: str = EVENT) -> pl.Expr:
    """True on rows where `form` belongs: its own instance rows if it repeats, else the non-repeating rows
    (of an event it is designated for, when longitudinal). `instrument`/`event` name the key columns."""
    ri = pl.col(instrument)
    if not study.longitudinal:
        return ((ri == form) if form in study.repeating_instruments else ri.is_null()).fill_null(False)
    plain = [e.name for e in study.events if form in e.instruments and form not in e.repeating]
    repeat = [e.name for e in study.events if form in e.repeating]
    expr = pl.lit(False)
    if plain:
        expr = expr | (ri.is_null() & pl.col(event).is_in(plain))
    if repeat:
        expr = expr | ((ri == form) & pl.col(event).is_in(repeat))
    return expr.fill_null(False)


def logic_frame(intake: IntakeData, needs: Iterable[str], typed: pl.DataFrame | None = None) -> pl.DataFrame:
    """Typed rows (same order as intake.typed) with the columns `needs` (logic.reference_columns) as REDCap
    logic sees them: instance rows also see the record's non-repeating values they refer to (a rule in a
    repeating form may test [sex]), and `[event][field]` references read `event:field` columns taken from that
    event's row of the same record."""
    from trialkit.logic import widen_events

    needs = set(needs)
    typed = intake.typed if typed is None else typed
    study = intake.study
    rid = study.record_id_field
    nonrep_forms = nonrepeating_forms(study)
    nonrep = {c.name for c in study_columns(study) if c.form in nonrep_forms}
    borrow = sorted((needs & nonrep) - {rid})
    # Only the columns the expressions read: joins below would copy every column they carry.
    keep = [rid, *([EVENT] if study.longitudinal else []), REPEAT_INSTRUMENT]
    keep += sorted(c for c in needs if c in typed.columns and c not in keep)
    frame = typed.select(keep)
    if borrow and typed.get_column(REPEAT_INSTRUMENT).null_count() < typed.height:
        keys = [rid, EVENT] if study.longitudinal else [rid]
        base = first_rows(typed, keys, borrow).rename({c: f"__base__{c}" for c in borrow})
        # Look up the instance rows' keys only and scatter the values back: joining `frame` itself would copy
        # every column it carries.
        at = frame.get_column(REPEAT_INSTRUMENT).is_not_null().arg_true()
        looked = frame.select(keys).gather(at).join(base, on=keys, how="left", maintain_order="left")
        filled = []
        for c in borrow:
            column = frame.get_column(c).clone()
            column.scatter(at, looked.get_column(f"__base__{c}").cast(column.dtype))
            filled.append(column)
        frame = frame.with_columns(filled)
    event_refs = sorted(c for c in needs if ":" in c)
    if event_refs and study.longitudinal:
        wanted = sorted({c.split(":", 1)[1] for c in event_refs} & set(typed.columns))
        # widen_events filters whole frames: hand it a narrow one
        long = first_rows(typed, [rid, EVENT], wanted)
        wide = widen_events(long, record_id=rid, columns=wanted)
        widened = [c for c in event_refs if c in wide.columns]
        if widened:
            looked = frame.select(rid).join(wide.select([rid, *widened]), on=rid, how="left", maintain_order="left")
            frame = frame.with_columns([looked.get_column(c) for c in widened])
    return frame


def first_rows(typed: pl.DataFrame, keys: list[str], columns: list[str]) -> pl.DataFrame:
    """`keys` + `columns` of the non-repeating rows, first row per key (duplicates are validation's business)."""
    narrow = typed.select([*keys, *[c for c in columns if c not in keys], REPEAT_INSTRUMENT])
    return first_per_key(rows_of_kind(narrow, keys[0], None).drop(REPEAT_INSTRUMENT), keys)


def _repeats(frame: pl.DataFrame, keys: list[str]) -> bool:
    """Whether some key repeats. Distinct hashes prove distinct keys (a third of the exact test's time on
    millions of instance rows); only when two hashes meet are the keys themselves compared."""
    if _distinct_by_runs(frame, keys):
        return False
    if frame.select(pl.struct(keys).hash().n_unique()).item() == frame.height:
        return False
    return bool(frame.select(pl.struct(keys).is_duplicated().any()).item())


def _distinct_by_runs(frame: pl.DataFrame, keys: list[str]) -> bool:
    """True when the keys are proved distinct the way REDCap exports instances: each record's (and event's)
    instances in one run of rows, numbered upwards. Then distinct hashes of the runs' own keys are enough: a
    million runs hashed instead of 3.5 million rows (a third of the time). False proves nothing."""
    *head, last = keys
    if not head or not frame.schema[last].is_integer() or frame.select(pl.any_horizontal(
            pl.col(k).is_null().any() for k in keys)).item():
        return False
    opens = pl.any_horizontal((pl.col(k) != pl.col(k).shift(1)).fill_null(True) for k in head)
    upwards, runs = frame.select(
        (opens | (pl.col(last) > pl.col(last).shift(1))).all().alias("up"), opens.sum().alias("runs")
    ).row(0)
    if not upwards:
        return False
    own = pl.struct(head).hash() if len(head) > 1 else pl.col(head[0]).hash()
    return frame.filter(opens).select(own.n_unique()).item() == runs


def merge_per_key(frame: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, list[tuple[tuple, list[str]]]]:
    """One row per key. Rows repeating a key are merged cell by cell: values that agree (or are blank in all but
    one row) are kept, and a cell where the rows disagree becomes blank, so no value is trusted over the other
    (validation lists the rows). Returns the frame, first-appearance order, and per merged key the columns that
    disagreed. Cheap when no key repeats."""
    if frame.height == 0 or not _repeats(frame, keys):
        return frame, []
    order = "__merge_order"
    indexed = frame.with_row_index(order)
    repeated = pl.struct(keys).is_duplicated()
    single = indexed.filter(~repeated)
    values = [c for c in frame.columns if c not in keys]
    merged = indexed.filter(repeated).group_by(keys, maintain_order=True).agg(
        pl.col(order).min(),
        *[pl.when(pl.col(c).drop_nulls().n_unique() <= 1).then(pl.col(c).drop_nulls().first()).alias(c)
          for c in values],
        *[(pl.col(c).drop_nulls().n_unique() > 1).alias(f"__differs:{c}") for c in values],
    )
    conflicts = []
    flags = [f"__differs:{c}" for c in values]
    for row in merged.select(*keys, *flags).iter_rows():
        differs = [c for c, flag in zip(values, row[len(keys):], strict=True) if flag]
        if differs:
            conflicts.append((row[: len(keys)], differs))
    out = pl.concat([single, merged.drop(flags).select(single.columns)], how="vertical_relaxed")
    return out.sort(order).drop(order), conflicts


def first_per_key(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Drop repeated keys (validation reports them), keeping the first row; cheap when there are none."""
    if frame.height == 0 or not frame.select(pl.struct(keys).is_duplicated().any()).item():
        return frame
    return frame.unique(subset=keys, keep="first", maintain_order=True)


def compile_redcap(
    node: Any, frame: pl.DataFrame, study: Study, *, as_of: _dt.date | None, specs: Mapping[str, Any]
) -> pl.Expr:
    """A branching-logic or calc tree as one polars expression over `frame` (a `logic_frame`), in REDCap mode:
    blanks as REDCap reads them, the study's missing-data codes, absent columns blank. `specs` is
    study.field_specs(), built once by the caller for all its expressions."""
    from trialkit import logic

    return logic.compile_expr(
        node,
        frame,
        mode="redcap",
        as_of=as_of,
        fields=specs,
        record_id=study.record_id_field,
        missing_codes=tuple(c.code for c in study.missing_codes),
        missing_columns="blank",
    ).value


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error, for a note or a finding (parser errors carry a caret line below)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


@functools.lru_cache(maxsize=4096)
def parsed(text: str) -> Any:
    """The syntax tree of an expression, parsed once per process: trees are immutable, and screening one
    candidate would otherwise parse every calculation of the study again."""
    from trialkit import logic

    return logic.parse(text)


def calc_fields(study: Study) -> list[Field]:
    """Calculated fields in dependency order (a calc read by another comes first; dictionary order otherwise)."""
    try:
        return list(_calc_fields(study))
    except TypeError:  # an unhashable study (a test double)
        return list(_calc_fields.__wrapped__(study))


@functools.cache
def _calc_fields(study: Study) -> tuple[Field, ...]:
    calcs = [f for f in study.iter_fields() if f.type is FieldType.CALC and f.calculation.strip()]
    references = calc_references(study)  # a bad expression reads nothing here: the checker reports it
    names = set(references)
    deps = {f.name: (references[f.name] & names) - {f.name} for f in calcs}
    ordered: list[Field] = []
    done: set[str] = set()
    pending = list(calcs)
    while pending:
        ready = [f for f in pending if deps[f.name] <= done] or pending[:1]  # a cycle: dictionary order
        for f in ready:
            ordered.append(f)
            done.add(f.name)
        pending = [f for f in pending if f.name not in done]
    return tuple(ordered)


def _gives_nothing(
    node: Any, typed: pl.DataFrame, study: Study, *, as_of: _dt.date | None, specs: Mapping[str, Any]
) -> bool:
    """True when the expression computes no value on any row, found without evaluating every row: all the
    columns it reads are in `typed` and all but at most one are blank on every row, so each row's inputs are
    one of that column's few distinct values (or blank) with blanks elsewhere; those alone are evaluated."""
    from trialkit import logic

    refs = sorted(logic.reference_columns(node))
    if not refs or typed.height == 0 or any(r not in typed.columns for r in refs):
        return False
    live = [r for r in refs if typed.get_column(r).null_count() != typed.height]
    if len(live) > 1:
        return False
    keys = [study.record_id_field, *([EVENT] if study.longitudinal else []), REPEAT_INSTRUMENT]
    blank = typed.select(list(dict.fromkeys([*keys, *refs])))
    if live:
        values = typed.get_column(live[0]).unique()
        if values.len() > 4096:
            return False
        if values.null_count() == 0:  # an instance row may borrow a record's value, or find none
            values = values.extend_constant(None, 1)
        rows = blank.clear(n=values.len()).with_columns(values.alias(live[0]))
    else:
        rows = blank.clear(n=1)
    value = compile_redcap(node, rows, study, as_of=as_of, specs=specs)
    return rows.select(value.cast(pl.Float64, strict=False)).to_series().null_count() == rows.height


def fill_calculations(
    intake: IntakeData, *, as_of: _dt.date | None = None, only: Collection[str] | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """intake.typed with every calculated value computed from its expression on the rows where its form belongs,
    and notes: expressions that cannot be evaluated (the stored values stay), and stored values that disagree with
    their inputs. Where the inputs give a value it wins over the stored one: a MADRS total of 999 typed over ten
    items summing to 25 is a typing error, and REDCap itself recomputes calcs on import and in its data quality
    rule H. Where they give none (an input blank), the stored value stays. `only`: compute just these calcs
    (with the calcs they read: pass a closed set, as trialkit.records.usable.checked_columns gives)."""
    from trialkit import logic

    study = intake.study
    typed = intake.typed
    calcs = [f for f in calc_fields(study) if only is None or f.name in only]
    problems: list[str] = []
    specs = study.field_specs()
    for f in calcs:
        if f.name not in typed.columns:
            continue
        try:
            node = parsed(f.calculation)
            if _gives_nothing(node, typed, study, as_of=as_of, specs=specs):
                continue  # blank inputs (not in the file) give it no value anywhere: the stored values stay
            frame = logic_frame(intake, logic.reference_columns(node), typed=typed)
            value = compile_redcap(node, frame, study, as_of=as_of, specs=specs)
            computed = frame.select(value.cast(pl.Float64, strict=False).alias("v")).get_column("v")
        except Exception as exc:  # never let one expression stop the others
            problems.append(f"calculation of {f.name} not computed: {one_line(exc, 200)}")
            continue
        if computed.null_count() == computed.len():
            continue  # no value anywhere: the stored values stay, and the frame is not rewritten
        scope = form_scope(study, f.form)
        stored = pl.col(f.name).cast(pl.Float64, strict=False)
        use = scope & computed.is_not_null()
        differs = use & stored.is_not_null() & ((stored - computed).abs() > 1e-9 * (computed.abs() + 1))
        disagree = typed.select(differs.sum()).item()
        if disagree:
            problems.append(
                f"{disagree} stored value(s) of {f.name} disagree with the fields it is calculated from; the "
                "calculated value is used (trialkit validate lists them as calc_mismatch)"
            )
        typed = typed.with_columns(pl.when(use).then(computed).otherwise(pl.col(f.name)).alias(f.name))
    return typed, problems
