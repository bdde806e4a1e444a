"""The one place screening talks to `trialkit.logic`: parsing with file positions, references, compiling to
polars expressions in Kleene mode, and the per-record instance gaps used for 'still needed'."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import polars as pl

from trialkit.errors import DefinitionError, Diagnostic, LogicError, LogicSyntaxError
from trialkit.logic import ast
from trialkit.logic.fields import ref_column
from trialkit.logic.functions import INSTANCE_AGGREGATES
from trialkit.logic.parser import parse as _parse
from trialkit.logic.render import render as _render

# FieldSpec.kind -> the dtype of a column the data lacks (codes and text stay strings, as intake keeps them)
_DTYPES = {
    "date": pl.Date,
    "datetime": pl.Datetime("us"),
    "time": pl.Time,
    "num": pl.Float64,
}


@dataclass(frozen=True)
class Refs:
    columns: tuple[str, ...] = ()  # record columns, in first-reference order
    instance_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # form -> its columns

    def merge(self, other: Refs) -> Refs:
        cols = tuple(dict.fromkeys(self.columns + other.columns))
        inst = {k: tuple(v) for k, v in self.instance_columns.items()}
        for form, cols2 in other.instance_columns.items():
            inst[form] = tuple(dict.fromkeys(inst.get(form, ()) + tuple(cols2)))
        return Refs(cols, inst)


@dataclass(frozen=True)
class Context:
    as_of: dt.date
    specs: Mapping[str, Any]
    instances: Mapping[str, pl.DataFrame]
    record_id: str


def parse(text: str, where: Any = None) -> ast.Node:
    """Parse an expression; a syntax error becomes a DefinitionError located in the rule file."""
    try:
        return _parse(text)
    except LogicSyntaxError as exc:
        line, col = getattr(exc, "rel_line", exc.line), getattr(exc, "rel_col", exc.col)
        raise DefinitionError(str(exc), diagnostics=[_located("LOG001", exc.message, where, line, col)]) from None
    except LogicError as exc:
        raise DefinitionError(str(exc), diagnostics=[_located("LOG001", exc.message, where, None, None)]) from None


def _located(code: str, message: str, where: Any, line: int | None, col: int | None) -> Diagnostic:
    if where is None:
        return Diagnostic(code, message, None, line, col)
    fline, fcol = where.locate(line, col) if hasattr(where, "locate") else (where.line, where.col)
    return Diagnostic(code, message, where.file, fline, fcol)


def references(node: ast.Node) -> Refs:
    """Record columns and per-form instance columns that an expression reads, in reading order."""
    cols: dict[str, None] = {}
    inst: dict[str, dict[str, None]] = {}
    stack: list[tuple[ast.Node, str | None]] = [(node, None)]
    while stack:
        current, form = stack.pop()
        if isinstance(current, ast.FieldRef):
            if form is None:
                cols.setdefault(ref_column(current), None)
            else:
                inst[form].setdefault(ref_column(current), None)
            continue
        if isinstance(current, ast.Call) and current.name in INSTANCE_AGGREGATES and current.args:
            first = current.args[0]
            inner = first.name if isinstance(first, ast.FormName) else form
            if inner is not None:
                inst.setdefault(inner, {})
            stack.extend((c, inner) for c in reversed(current.args[1:]))
            continue
        stack.extend((c, form) for c in reversed(current.children()))
    return Refs(tuple(cols), {k: tuple(v) for k, v in inst.items()})


def value_terms(node: ast.Node) -> tuple[tuple[str, ast.Node], ...]:
    """Computed values worth showing beside the raw fields: function calls that yield a number (age, datediff,
    counts over instances), outermost first. A coordinator reads 'age_at_date(...) = 17', not only a birth date."""
    out: list[tuple[str, ast.Node]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Call) and current.name != "if":
            label = _short_label(current)
            out.append((label, current))
            continue
        stack.extend(reversed(current.children()))
    return tuple(dict(out).items())


REFERENCE_COLUMN = "__reference_date"


def uses_today(node: ast.Node) -> bool:
    return any(isinstance(n, ast.String) and n.value.strip().lower() == "today" for n in ast.walk(node))


def with_reference_date(node: ast.Node) -> ast.Node:
    """The tree with every `'today'` turned into a read of the per-candidate reference date column."""
    if isinstance(node, ast.String) and node.value.strip().lower() == "today":
        return ast.FieldRef(REFERENCE_COLUMN, line=node.line, col=node.col)
    changes: dict[str, Any] = {}
    for f in fields(node):
        value = getattr(node, f.name)
        if isinstance(value, ast.Node):
            new = with_reference_date(value)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and value and all(isinstance(v, ast.Node) for v in value):
            new_items = tuple(with_reference_date(v) for v in value)
            if any(a is not b for a, b in zip(new_items, value, strict=True)):
                changes[f.name] = new_items
    return replace(node, **changes) if changes else node


def _short_label(call: ast.Call, limit: int = 60) -> str:
    """The call as REDCap text; long ones (instance aggregates) keep their first arguments and end in '...'."""
    try:
        text = _render(call, extensions=True)
    except LogicError:
        return f"{call.name}(...)"
    if len(text) <= limit:
        return text
    head = []
    for arg in call.args[:2]:
        try:
            part = _render(arg, extensions=True)
        except LogicError:
            break
        # a long argument that is itself a call (the I4 drug: if(... 'other' ...)) is named, not spelled out
        head.append(f"{arg.name}(...)" if isinstance(arg, ast.Call) and len(part) > 24 else part)
    return f"{call.name}({', '.join(head)}, ...)"


def dtype_of(specs: Mapping[str, Any], column: str) -> pl.DataType:
    spec = specs.get(column.split(":")[-1])
    return _DTYPES.get(spec.kind, pl.String) if spec is not None else pl.String


def evaluate_many(exprs: Mapping[str, ast.Node], frame: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """Every named expression over `frame` in Kleene mode, one pass; record id column first, input row order."""
    from trialkit.logic import evaluate_many as _many

    return _many(
        dict(exprs),
        frame,
        mode="kleene",
        as_of=ctx.as_of,
        fields=ctx.specs or None,
        instances=ctx.instances,
        record_id=ctx.record_id,
        explain=False,
        missing_columns="blank",
    )


def branching_truths(gates: Mapping[str, ast.Node], frame: pl.DataFrame, ctx: Context) -> dict[str, pl.Series]:
    """Kleene truth of each named branching logic per row of `frame` (true, false, or null where undecided). Logic
    that cannot be evaluated here (reading other events or instances) is left out: its field counts as shown."""
    if not gates or frame.height == 0:
        return {}
    try:
        out = evaluate_many(gates, frame, ctx)
        return {name: out.get_column(name) for name in gates}
    except LogicError:
        pass
    truths = {}
    for name, node in gates.items():
        with contextlib.suppress(LogicError):
            truths[name] = evaluate_many({name: node}, frame, ctx).get_column(name)
    return truths


def _shown(items: list[Any], table: pl.DataFrame, ctx: Context) -> dict[str, pl.Series]:
    """Per instance item with branching logic, per row of `table`: false where the logic hides the field."""
    gates = {i.label: i.shown_if for i in items if i.shown_if is not None and i.column in table.columns}
    return {label: truth.fill_null(True) for label, truth in branching_truths(gates, table, ctx).items()}


def instance_gaps(cc: Any, frame: pl.DataFrame, ctx: Context) -> dict[str, pl.Series]:
    """Per record of `frame`, for each instance item of the criterion: is it missing? (no instance of the form, or
    some instance with that field blank), aligned to `frame`'s row order."""
    items = [i for i in cc.missing_items if i.form is not None]
    if not items:
        return {}
    rid = ctx.record_id
    out: dict[str, pl.Expr] = {}
    for form in dict.fromkeys(i.form for i in items):
        table = ctx.instances.get(form)
        cols = [i for i in items if i.form == form and i.column is not None]
        if table is None or table.height == 0:
            for i in items:
                if i.form == form:
                    out[i.label] = pl.repeat(i.column is None, frame.height, eager=True)
            continue
        ids = frame.select(pl.col(rid).cast(pl.String))
        # Only the instances of the records asked about (usually a few unknown candidates out of many), and only
        # the columns read here: the fields asked about and those their branching logic reads.
        read = {rid: None, **dict.fromkeys(i.column for i in cols)}
        for i in cols:
            if i.shown_if is not None:
                read.update(dict.fromkeys(references(i.shown_if).columns))
        wanted = pl.col(rid).cast(pl.String)
        mine = table.select([wanted, *(c for c in read if c != rid and c in table.columns)])
        mine = mine.filter(wanted.is_in(ids.get_column(rid).implode()))
        # A field its branching logic hides (atrq_drug_other unless the drug is 'other') is not missing there;
        # where the logic is unknown the field may be shown, so a blank still counts.
        shown = _shown(cols, mine, ctx)
        mine = mine.with_columns(pl.Series(f"__shown:{label}", values) for label, values in shown.items())
        aggs = [pl.len().alias("__n")] + [
            ((pl.col(i.column).is_null() & (pl.col(f"__shown:{i.label}") if i.label in shown else True)).any()
             if i.column in table.columns else pl.lit(True)).alias(i.label)
            for i in cols
        ]
        per_record = mine.group_by(rid).agg(aggs)
        aligned = ids.join(per_record, on=rid, how="left", maintain_order="left")
        out[form] = aligned["__n"].is_null()
        for i in cols:
            out[i.label] = aligned[i.label].fill_null(False)
    return out
