"""Row context for validation: which form each row carries, whether a field is shown, what a calc gives.

Everything here is a polars expression or one vectorised select over the typed rows; branching logic and
calculations go through trialkit.logic in REDCap mode, compiled once per field and evaluated for all rows in
one pass.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import polars as pl

from trialkit import logic
from trialkit.definitions.model import Field, FieldType, Study
from trialkit.records import EVENT, REPEAT_INSTANCE, REPEAT_INSTRUMENT, ROW, Column, IntakeData, study_columns
from trialkit.records.calculations import compile_redcap, form_scope, logic_frame, one_line
from trialkit.records.calculations import parsed as parse_once

RID = "__rid"
EVT = "__event"
RI = "__ri"
INST = "__instance"


def scope_name(form: str) -> str:
    return f"__scope__{form}"


def started_name(form: str) -> str:
    return f"__started__{form}"


def typed_name(column: str) -> str:
    return f"__typed__{column}"


def shown_name(field_name: str) -> str:
    return f"__shown__{field_name}"


def calc_name(field_name: str) -> str:
    return f"__calc__{field_name}"


@dataclass
class Context:
    """Helper columns (same rows and order as intake.raw) plus problems met while computing them."""

    frame: pl.DataFrame
    shown: set[str] = field(default_factory=set)  # fields whose branching logic was evaluated
    calcs: set[str] = field(default_factory=set)  # calc fields recomputed
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, message)


def _scope_expr(study: Study, form: str) -> pl.Expr:
    return form_scope(study, form, instrument=RI, event=EVT)


def _started_expr(form: str, columns: list[Column], present: set[str], rid: str) -> pl.Expr:
    """The row holds some data of `form` (REDCap exports unticked checkboxes as 0 and grey forms as 0; the
    record id, though the first field of the first form, says nothing about that form)."""
    parts = []
    for c in columns:
        if c.name not in present or c.name == rid:
            continue
        if c.kind == "checkbox":
            parts.append(pl.col(c.name) == "1")
        elif c.kind == "complete":
            parts.append(pl.col(c.name).is_in(["1", "2"]))
        else:
            parts.append(pl.col(c.name).is_not_null())
    if not parts:
        return pl.lit(False)
    return pl.any_horizontal(parts).fill_null(False)


def build_context(intake: IntakeData, *, as_of: _dt.date) -> Context:
    study = intake.study
    typed = intake.typed
    rid = study.record_id_field
    columns = list(study_columns(study))
    present = set(intake.raw.columns)
    exprs: list[pl.Expr] = [
        pl.col(rid).alias(RID),
        (pl.col(EVENT) if study.longitudinal else pl.lit(None, dtype=pl.String)).alias(EVT),
        pl.col(REPEAT_INSTRUMENT).alias(RI),
        pl.col(REPEAT_INSTANCE).alias(INST),
    ]
    base = typed.select([*exprs, pl.col(ROW)])
    by_form: dict[str, list[Column]] = {}
    for c in columns:
        by_form.setdefault(c.form, []).append(c)
    # with_columns, not select: an expression may be a bare literal (no column of the form in this file, e.g.
    # another project's export), and select would make it a frame of one row instead of one value per row
    frame = base.with_columns([_scope_expr(study, form).alias(scope_name(form)) for form in by_form])
    started_names = [started_name(form) for form in by_form]
    started = intake.raw.with_columns(
        [_started_expr(form, cols, present, rid).alias(started_name(form)) for form, cols in by_form.items()]
    ).select(started_names)
    frame = frame.hstack(started)
    typed_cols = [
        pl.col(c.name).alias(typed_name(c.name))
        for c in columns
        if c.name in present and c.kind in ("date", "datetime", "time", "integer", "number")
    ]
    frame = frame.hstack(typed.select(typed_cols)) if typed_cols else frame
    ctx = Context(frame=frame)
    _add_logic(ctx, intake, as_of=as_of)
    return ctx


def _logic_fields(study: Study) -> list[Field]:
    return [f for f in study.iter_fields() if f.show_if.strip() or (f.type is FieldType.CALC and f.calculation.strip())]


def _add_logic(ctx: Context, intake: IntakeData, *, as_of: _dt.date) -> None:
    fields = _logic_fields(intake.study)
    if not fields:
        return
    specs = intake.study.field_specs()
    parsed: list[tuple[Field, str, object]] = []
    needs: set[str] = set()
    for f in fields:
        for what, text in (("show_if", f.show_if), ("calc", f.calculation if f.type is FieldType.CALC else "")):
            if not text.strip():
                continue
            try:
                node = parse_once(text)  # once per process, not once per chunk
            except Exception as exc:  # a LogicSyntaxError normally; never let one field stop validation
                ctx.problems.append((f.name, f"{_what(what)} cannot be parsed: {exc}"))
                continue
            parsed.append((f, what, node))
            needs.update(logic.reference_columns(node))
    if not parsed:
        return
    frame = logic_frame(intake, needs)
    out: list[pl.Expr] = []
    names: list[tuple[Field, str]] = []
    for f, what, node in parsed:
        try:
            value = compile_redcap(node, frame, intake.study, as_of=as_of, specs=specs)
        except Exception as exc:
            ctx.problems.append((f.name, f"{_what(what)} cannot be evaluated: {one_line(exc)}"))
            continue
        if what == "show_if":
            out.append(value.cast(pl.Boolean, strict=False).alias(shown_name(f.name)))
        else:
            out.append(value.cast(pl.Float64, strict=False).alias(calc_name(f.name)))
        names.append((f, what))
    if not out:
        return
    try:
        values = frame.select(out)
    except Exception:
        # One bad expression must not hide the others: fall back to evaluating them one by one.
        kept = []
        for expr, (f, what) in zip(out, names, strict=True):
            try:
                kept.append(frame.select(expr))
            except Exception as exc:
                ctx.problems.append((f.name, f"{_what(what)} cannot be evaluated: {one_line(exc)}"))
        if not kept:
            return
        values = pl.concat(kept, how="horizontal")
    ctx.frame = ctx.frame.hstack(values)
    for f, what in names:
        if (shown_name(f.name) if what == "show_if" else calc_name(f.name)) in values.columns:
            (ctx.shown if what == "show_if" else ctx.calcs).add(f.name)


def _what(what: str) -> str:
    return "branching logic" if what == "show_if" else "calculation"
