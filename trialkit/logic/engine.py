"""Running compiled expressions over data: input shapes, type inference, instance joins, results."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import polars as pl

from trialkit.errors import DataError, Location, LogicError
from trialkit.logic.ast import BoolOp, Call, FieldRef, FormName, Node, walk
from trialkit.logic.checker import extensions_used
from trialkit.logic.evaluate import (
    _MAX_BITS,
    INSTANCE_COLUMN,
    Col,
    Compiler,
    _Aux,
    _label,
    _scalar,
    spread,
    zero_column,
)
from trialkit.logic.fields import FieldSpec, checkbox_column, ref_column
from trialkit.logic.functions import INSTANCE_AGGREGATES

# Content inference matches what the typed readers then parse: no surrounding spaces.
_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$"


def references(expr: Node) -> tuple[FieldRef, ...]:
    """Every field reference in the expression (document order), including those inside instance aggregates."""
    return tuple(n for n in walk(expr) if isinstance(n, FieldRef))


def reference_columns(expr: Node) -> tuple[str, ...]:
    """Data columns the main frame must hold (instance aggregates and [field][n] read `instances` instead)."""
    out: list[str] = []
    for ref in _main_refs(expr):
        if ref.instance not in (None, "current-instance"):
            continue
        col = ref_column(ref)
        if col not in out:
            out.append(col)
    return tuple(out)


def _main_refs(expr: Node) -> list[FieldRef]:
    """Field references outside instance aggregates, in document order."""
    return [n for n in _walk_main(expr) if isinstance(n, FieldRef)]


def to_polars(data) -> pl.DataFrame:
    """Accept a polars DataFrame/LazyFrame, or a pandas DataFrame when pandas is installed."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    if type(data).__module__.split(".")[0] == "pandas":
        return pl.from_pandas(data)
    raise DataError(f"expected a polars or pandas DataFrame, got {type(data).__name__}")


def infer_kinds(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """For text columns: 'num' when every non-blank value is a number, 'date'/'datetime' when every one is an ISO
    date(time), else 'str'. One pass over the named columns."""
    schema = frame.schema  # built once: frame.schema is rebuilt on every access (quadratic over 1,000 columns)
    cols = [c for c in dict.fromkeys(columns) if schema.get(c) == pl.String]
    if not cols or frame.height == 0:
        return {}
    exprs = []
    for i, c in enumerate(cols):
        v = pl.col(c)
        present = v.is_not_null() & (v != "")
        exprs += [
            present.sum().alias(f"p{i}"),
            (present & v.str.contains(_NUM_RE)).sum().alias(f"n{i}"),
            (present & v.str.contains(_DATE_RE)).sum().alias(f"d{i}"),
            (present & v.str.contains(_DATETIME_RE)).sum().alias(f"t{i}"),
        ]
    row = frame.select(exprs).row(0, named=True)
    kinds = {}
    for i, c in enumerate(cols):
        p = row[f"p{i}"]
        if p == 0:
            kinds[c] = "str"
        elif row[f"n{i}"] == p:
            kinds[c] = "num"
        elif row[f"d{i}"] == p:
            kinds[c] = "date"
        elif row[f"d{i}"] + row[f"t{i}"] == p:
            kinds[c] = "datetime"
        else:
            kinds[c] = "str"
    return kinds


@dataclass(frozen=True)
class Compiled:
    """One expression compiled for a frame schema: embed `value` (and `missing`) in your own select."""

    value: pl.Expr
    kind: str
    missing: pl.Expr | None = None


def _missing_list(mask: pl.Expr | None, value: pl.Expr, names: Sequence[str]) -> pl.Expr:
    empty = pl.lit([], dtype=pl.List(pl.String))
    if mask is None or not names:
        # Both branches alike, but tied to `value` so the lists come one per row of it, not as a single literal.
        return pl.when(value.is_null()).then(empty).otherwise(empty)
    items = [pl.when((mask & pl.lit(1 << i, pl.UInt64)) != 0).then(pl.lit(n)) for i, n in enumerate(names)]
    return pl.when(value.is_null()).then(pl.concat_list(items).list.drop_nulls()).otherwise(empty)


def _bits(exprs: Sequence[Node]) -> dict[str, int]:
    labels: dict[str, int] = {}
    for e in exprs:
        for ref in references(e):
            lab = _label(ref)
            if lab not in labels and len(labels) < _MAX_BITS:
                labels[lab] = len(labels)
    return labels


def _broadcast(e: pl.Expr) -> pl.Expr:
    """An expression that reads no column, made a scalar: constants combined by all_horizontal (and other
    horizontal functions) give a one-row column that polars does not stretch to the frame's height."""
    return e if e.meta.root_names() else e.first()


def _final(c: Col, mode: str) -> pl.Expr:
    if c.kind == "bool" and mode == "redcap":
        return c.expr.fill_null(False)
    if c.kind == "null":
        return pl.lit(None, pl.String)
    return c.expr


def compile_expr(
    expr: Node,
    schema: Mapping[str, pl.DataType] | pl.DataFrame,
    *,
    mode: str = "redcap",
    as_of: date | datetime | None = None,
    fields: Mapping[str, FieldSpec] | None = None,
    record_id: str | None = None,
    missing_codes: Sequence[str] = (),
    explain: bool = False,
    kinds: Mapping[str, str] | None = None,
    missing_columns: str = "error",
) -> Compiled:
    """Compile for a frame shape, without running it. Instance aggregates and [field][n] need evaluate()."""
    if isinstance(schema, pl.DataFrame):
        schema = schema.schema
    if extensions_used(expr) or any(r.instance not in (None, "current-instance") for r in _main_refs(expr)):
        raise LogicError("instance aggregates and [field][instance] need evaluate()/evaluate_many() with instances")
    bits = _bits([expr])
    comp = Compiler(
        schema,
        mode=mode,
        as_of=as_of,
        fields=fields,
        record_id=record_id,
        missing_codes=missing_codes,
        explain=explain,
        kinds=kinds,
        bits=bits,
        missing_columns=missing_columns,
    )
    c = comp.compile(expr)
    value = _final(c, mode)
    missing = _missing_list(c.mask, value, list(bits)) if comp.explain else None
    return Compiled(value, c.kind, missing)


@dataclass(frozen=True)
class LogicResult:
    """Per-record result. `values`: Boolean (null = unknown, kleene only), Float64, String or Datetime."""

    record_ids: pl.Series
    values: pl.Series
    kind: str
    mode: str
    missing: pl.Series | None = None  # kleene + explain: list[str] per row, non-empty only where unknown

    def frame(self) -> pl.DataFrame:
        cols = [self.record_ids, self.values.alias("value")]
        if self.missing is not None:
            cols.append(self.missing.alias("missing"))
        return pl.DataFrame(cols)


def evaluate(
    expr: Node,
    data,
    *,
    mode: str = "redcap",
    as_of: date | datetime | None = None,
    fields: Mapping[str, FieldSpec] | None = None,
    instances: Mapping[str, object] | None = None,
    record_id: str | None = None,
    missing_codes: Sequence[str] = (),
    explain: bool | None = None,
    missing_columns: str = "error",
) -> LogicResult:
    """Evaluate one expression over every row of `data` (one row per record), all rows at once.

    mode 'redcap' reproduces REDCap; 'kleene' gives unknown (null) where missing data would decide, and
    (explain, default on in kleene) lists per row the referenced fields whose absence made it unknown.
    `record_id` defaults to the first column. `missing_columns='blank'` reads absent columns as blank.
    """
    frame = evaluate_many(
        {"value": expr},
        data,
        mode=mode,
        as_of=as_of,
        fields=fields,
        instances=instances,
        record_id=record_id,
        missing_codes=missing_codes,
        explain=explain,
        missing_columns=missing_columns,
    )
    rid = frame.columns[0]
    kind = frame_kinds(frame)["value"]
    missing = frame.get_column("value__missing") if "value__missing" in frame.columns else None
    return LogicResult(frame.get_column(rid), frame.get_column("value"), kind, mode, missing)


def frame_kinds(frame: pl.DataFrame) -> dict[str, str]:
    out = {}
    for name, dtype in frame.schema.items():
        if dtype == pl.Boolean:
            out[name] = "bool"
        elif dtype.is_numeric():
            out[name] = "num"
        elif isinstance(dtype, pl.Datetime) or dtype == pl.Date:
            out[name] = "date"
        else:
            out[name] = "str"
    return out


def evaluate_many(
    exprs: Mapping[str, Node],
    data,
    *,
    mode: str = "redcap",
    as_of: date | datetime | None = None,
    fields: Mapping[str, FieldSpec] | None = None,
    instances: Mapping[str, object] | None = None,
    record_id: str | None = None,
    missing_codes: Sequence[str] = (),
    explain: bool | None = None,
    missing_columns: str = "error",
) -> pl.DataFrame:
    """Evaluate several named expressions in one pass. Returns the record id column, one column per name and,
    in kleene mode with explain, a `<name>__missing` list[str] column per name."""
    frame = to_polars(data)
    if frame.width == 0:
        raise DataError("the data has no columns")
    rid = record_id or frame.columns[0]
    if rid not in frame.columns:
        raise DataError(f"record id column {rid!r} is not in the data")
    explain = (mode == "kleene") if explain is None else explain
    fields = fields or _NO_FIELDS  # one object: compiled plans are reused for the same fields mapping only
    nodes = list(exprs.values())
    trees = _trees(nodes)
    bits = trees.bits
    aux = _Aux()
    frame = _attach_instances(
        frame, trees, instances or {}, aux, rid, mode, as_of, fields, missing_codes, explain, bits, missing_columns
    )
    needed = list(trees.columns)
    needed += [aux.columns[k] for k in aux.columns]
    kinds = infer_kinds(frame, [c for c in needed if _base_name(c) not in fields])
    frame = _with_series(frame, zero_column(frame.height))
    options = (mode, as_of, rid, tuple(missing_codes), explain, missing_columns)
    settings = (*options, tuple(bits.items()))
    key = _plan_key(exprs, frame.schema, kinds, aux, settings)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None or plan.fields is not fields or any(a is not b for a, b in zip(plan.nodes, nodes, strict=True)):
        comp = _compiler(frame.schema, options, fields, kinds, bits, aux=aux)
        steps = _share_common_subexpressions(comp, nodes)
        stage: list[pl.Expr] = []
        selects = [pl.col(rid)]
        explained: list[tuple[str, Node]] = []
        for i, (name, expr) in enumerate(exprs.items()):
            c = comp.compile(expr)
            stage.append(_broadcast(_final(c, mode)).alias(f"__tk_value{i}"))
            selects.append(pl.col(f"__tk_value{i}").alias(name))
            if comp.explain:
                mask = c.mask if c.mask is not None else pl.lit(0, pl.UInt64)
                stage.append(_broadcast(mask).alias(f"__tk_mask{i}"))
                selects.append(pl.col(f"__tk_mask{i}").alias(f"{name}__missing"))
                explained.append((f"{name}__missing", expr))
        plan = _Plan(tuple(nodes), fields, [*steps, stage], selects, explained)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    out = collect(_apply(frame.lazy(), plan.steps).select(plan.selects), frame.height)
    explained = plan.explained
    if explained:
        # Masks hold few distinct values (combinations of missing fields): name them once per distinct value.
        out = out.with_columns(
            _mask_to_names(pl.col(col), out.get_column(col), _ordered_bits(expr, bits)) for col, expr in explained
        )
    return out


@dataclass(frozen=True)
class _Plan:
    """Expressions compiled for one set of syntax trees over one frame shape: the with_columns steps, then the
    final select. Kept so that evaluating the same rules again (one candidate at a time) skips compiling."""

    nodes: tuple[Node, ...]
    fields: Mapping[str, FieldSpec]
    steps: list[list[pl.Expr]]
    selects: list[pl.Expr]
    explained: list[tuple[str, Node]]


_PLANS: dict[tuple, _Plan] = {}


SMALL_ROWS = 10_000


def collect(query: pl.LazyFrame, rows: int) -> pl.DataFrame:
    """Run a query sized for `rows` rows. polars' streaming engine (its default) costs milliseconds to start per
    query, most of screening one candidate; on large frames it is the faster one (a fifth less CPU on a million
    candidates). On small frames (one candidate) polars' optimiser passes cost more than
    they save, about a fifth of screening one candidate: they only rewrite the plan, so they are skipped there
    (type coercion and checks still run)."""
    if rows <= SMALL_ROWS:
        return query.collect(engine="in-memory", optimizations=_SMALL_FLAGS)
    return query.collect(engine="auto")


# Common sub-expression elimination stays on: without it polars 2.1 leaves a constant the logic compiles to
# (':' = (0 and [a])) as one value instead of one per row, and the query fails on a frame of several rows.
_SMALL_FLAGS = pl.QueryOptFlags.none()
_SMALL_FLAGS.comm_subexpr_elim = True


_NO_FIELDS: Mapping[str, FieldSpec] = MappingProxyType({})
_MAX_PLANS = 64


def _plan_key(exprs: Mapping[str, Node], schema, kinds: Mapping[str, str], aux: _Aux, settings: tuple) -> tuple | None:
    """What a compiled plan depends on besides the trees' identity (checked on use, as ids can be reused): the
    frame's column types, the kinds inferred from text content, the instance columns joined on, and the options.
    None when some part cannot be a key (the plan is then compiled each time)."""
    key = (
        tuple((name, id(node)) for name, node in exprs.items()),
        tuple(schema.items()),
        tuple(sorted(kinds.items())),
        tuple(sorted(aux.columns.items())),
        tuple(sorted(aux.lo_hi.items())),
        tuple(sorted(aux.masks.items())),
        settings,
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _ordered_bits(expr: Node, bits: Mapping[str, int]) -> list[tuple[int, str]]:
    """(bit, label) of the expression's references, in the order the expression first mentions them."""
    labels = dict.fromkeys(_label(r) for r in references(expr))
    return [(bits[label], label) for label in labels if label in bits]


def _mask_to_names(col: pl.Expr, values: pl.Series, labels: Sequence[tuple[int, str]]) -> pl.Expr:
    distinct = [int(v) for v in values.unique().to_list() if v is not None]
    mapping = {m: [label for bit, label in labels if m >> bit & 1] for m in distinct}
    return col.replace_strict(list(mapping), list(mapping.values()), default=[], return_dtype=pl.List(pl.String))


def _shareable(node: Node) -> bool:
    if isinstance(node, FormName) or _scalar(node):
        return False
    return not (isinstance(node, Call) and node.name in INSTANCE_AGGREGATES)


# Compiled nodes may use an operand's expression several times (a comparison of text reads each side as a number
# and as text; `if` tests its condition twice in kleene mode). Nested, that doubles the polars plan at every level,
# and polars' optimiser walks the plan as a tree: ten nested `if` conditions took seconds. A node whose expanded
# size would pass _STAGE_WEIGHT is computed into a column first, so every plan stays linear in the text.
_USES = 10  # upper bound on how often a compiled node repeats an operand's expression
_STAGE_WEIGHT = 1_000


def _heavy_nodes(nodes: Sequence[Node], walk_nodes=None) -> list[Node]:
    """Nodes to compute into a column because their parents would repeat a large expression."""
    walk_nodes = walk_nodes or _walk_main
    weight: dict[int, int] = {}
    heavy: list[Node] = []
    for expr in nodes:
        order = list(walk_nodes(expr))
        for node in reversed(order):  # children before parents
            if id(node) in weight:
                continue
            kids = [] if isinstance(node, Call) and node.name in INSTANCE_AGGREGATES else node.children()
            uses = 2 if isinstance(node, BoolOp) or len(kids) > 3 else _USES
            total = 1
            for kid in kids:
                w = weight.get(id(kid), 1)
                if w * uses > _STAGE_WEIGHT and _shareable(kid):
                    heavy.append(kid)
                    w = weight[id(kid)] = 1
                total += uses * w
            weight[id(node)] = total
    return heavy


def _share_common_subexpressions(comp: Compiler, nodes: Sequence[Node]) -> list[list[pl.Expr]]:
    """Compute every sub-expression that occurs more than once (within or across expressions), and every one that
    would make its parent's plan too large, into a column first, smallest first, so the plan stays linear in the
    text and each is computed once."""
    counts: dict[Node, int] = {}
    for expr in nodes:
        for node in _walk_main(expr):
            if _shareable(node):
                counts[node] = counts.get(node, 0) + 1
    staged = [n for n, c in counts.items() if c > 1]
    staged += [n for n in dict.fromkeys(_heavy_nodes(nodes)) if counts.get(n, 0) <= 1]
    return _stage_steps(comp, staged)


def _stage(comp: Compiler, staged: Sequence[Node], lazy: pl.LazyFrame) -> pl.LazyFrame:
    return _apply(lazy, _stage_steps(comp, staged))


def _apply(lazy: pl.LazyFrame, steps: Sequence[Sequence[pl.Expr]]) -> pl.LazyFrame:
    for step in steps:
        lazy = lazy.with_columns(step)
    return lazy


def _stage_steps(comp: Compiler, staged: Sequence[Node]) -> list[list[pl.Expr]]:
    """The staged nodes' columns, one `with_columns` step each, smallest first."""
    steps: list[list[pl.Expr]] = []
    staged = sorted(staged, key=lambda n: sum(1 for _ in walk(n)))
    for node in staged:
        if node in comp.shared:
            continue
        c = comp.compile(node)
        if not c.expr.meta.root_names() and (c.mask is None or not c.mask.meta.root_names()):
            # A constant (no column read): kept inline. As a column of its own, polars' optimiser folded it back
            # into the next step as a one-row value that was not stretched to the frame (a shape error).
            comp.shared[node] = c
            continue
        name = f"__tk_s{len(comp.shared)}"
        exprs = [c.expr.alias(name)]
        mask = None
        if comp.explain and c.mask is not None:
            exprs.append(c.mask.alias(f"{name}_m"))
            mask = pl.col(f"{name}_m")
        steps.append(exprs)
        comp.shared[node] = Col(pl.col(name), c.kind, mask=mask, has_time=c.has_time, stored=c.stored)
    return steps


def _walk_main(expr: Node) -> Iterator[Node]:
    """Nodes outside instance aggregates (their conditions run on instance frames), pre-order, without recursion."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Call) and node.name in INSTANCE_AGGREGATES:
            continue
        stack.extend(reversed(node.children()))


def _base_name(column: str) -> str:
    col = column.split(":", 1)[-1]
    return col.split("___", 1)[0]


@dataclass(frozen=True)
class _Trees:
    """What evaluating a list of syntax trees needs to know of the trees alone, worked out once per list (walking
    them each time was a millisecond of screening one candidate): field bits, main-frame columns read, the
    instance aggregate calls in order (with a nested aggregate inside, if any), and the [field][n] references."""

    nodes: tuple[Node, ...]
    bits: Mapping[str, int]
    columns: tuple[str, ...]
    calls: tuple[tuple[Call, Call | None], ...]
    instance_refs: tuple[FieldRef, ...]


_TREES: dict[tuple[int, ...], _Trees] = {}


def _trees(nodes: Sequence[Node]) -> _Trees:
    key = tuple(map(id, nodes))
    hit = _TREES.get(key)
    # the cached entry holds its trees, so their ids cannot be reused while it lives; checked all the same
    if hit is not None and all(a is b for a, b in zip(hit.nodes, nodes, strict=True)):
        return hit
    calls = []
    for expr in nodes:
        for call in extensions_used(expr):
            nested = (i for i in walk(call) if i is not call and isinstance(i, Call) and i.name in INSTANCE_AGGREGATES)
            calls.append((call, next(nested, None)))
    refs = tuple(r for e in nodes for r in _main_refs(e) if r.instance not in (None, "current-instance"))
    out = _Trees(
        tuple(nodes),
        MappingProxyType(_bits(nodes)),
        tuple(c for e in nodes for c in reference_columns(e)),
        tuple(calls),
        refs,
    )
    if len(_TREES) >= _MAX_PLANS:
        _TREES.clear()
    _TREES[key] = out
    return out


def _with_series(frame: pl.DataFrame, column: pl.Series) -> pl.DataFrame:
    """`frame.with_columns(column)` without a query (a query costs a fraction of a millisecond to plan, which
    adds up when screening one candidate)."""
    if column.name in frame.columns:
        return frame.with_columns(column)
    return frame.hstack([column])


def _attach_instances(
    frame: pl.DataFrame,
    trees: _Trees,
    instances: Mapping[str, object],
    aux: _Aux,
    rid: str,
    mode: str,
    as_of,
    fields: Mapping[str, FieldSpec],
    missing_codes,
    explain: bool,
    bits: Mapping[str, int],
    missing_columns: str,
) -> pl.DataFrame:
    """Compute instance aggregates and [field][n] values per record and attach them to the frame.

    Per repeating form: every aggregate's condition and value are first computed as row columns of the instance
    table, then ONE group_by with plain aggregations (polars' fast path) serves all aggregates over that form,
    and only the aggregated columns are joined to the record ids."""
    frames = {form: to_polars(df) for form, df in instances.items()}
    by_form: dict[str, list[Call]] = {}
    for call, inner in trees.calls:
        if inner is not None:
            raise LogicError(
                f"{inner.name}() cannot be nested inside {call.name}()",
                location=Location(line=inner.line, col=inner.col),
            )
        form_node = call.args[0]
        assert isinstance(form_node, FormName)
        if form_node.name not in frames:
            raise LogicError(
                f"{call.name}(): no instance data for repeating instrument '{form_node.name}'",
                location=Location(line=call.line, col=call.col),
            )
        by_form.setdefault(form_node.name, []).append(call)
    n = 0
    keys = frame.get_column(rid).to_frame()
    owners: _Owners | None = None
    added: list[str] = []
    for form, calls in by_form.items():
        inst = frames[form]
        inst = _with_series(inst, zero_column(inst.height))
        if rid not in inst.columns:
            raise DataError(f"instance data for '{form}' has no record id column {rid!r}")
        used = [c for call in calls for a in call.args[1:] for c in reference_columns(a)]
        kinds = infer_kinds(inst, [c for c in used if _base_name(c) not in fields])
        options = (mode, as_of, rid, tuple(missing_codes), explain, missing_columns)
        settings = (form, n, *options, tuple(bits.items()))
        key = _plan_key({str(i): c for i, c in enumerate(calls)}, inst.schema, kinds, _Aux(), settings)
        plan = _FORM_PLANS.get(key) if key is not None else None
        if plan is None or plan.fields is not fields or any(a is not b for a, b in zip(plan.calls, calls, strict=True)):
            plan = _form_plan(form, calls, n, inst.schema, kinds, fields, bits, options)
            if key is not None:
                if len(_FORM_PLANS) >= _MAX_PLANS:
                    _FORM_PLANS.clear()
                _FORM_PLANS[key] = plan
        n = plan.n
        aux.columns.update(plan.columns)
        aux.lo_hi.update(plan.lo_hi)
        aux.masks.update(plan.masks)
        inst_lazy = _apply(inst.lazy(), plan.steps)
        staged = inst_lazy.with_columns(plan.first)
        kept = [pl.col(e.meta.output_name()) for e in plan.first]
        if owners is None:
            owners = _Owners.of(frame.get_column(rid))
        runs = owners.rows_of(inst.get_column(rid).cast(frame.schema[rid], strict=False))
        rows = staged.with_columns(runs.owner).select([*kept, *plan.rows, pl.col(_OWNER)])
        per_owner = _per_owner(rows, runs, plan, inst.height)
        joined = owners.align(per_owner)
        if joined.get_column(_HAS).null_count():
            # Defaults are for records without instances only: a null value of a record that has some is a kleene
            # unknown (any_instance, a count between its bounds) and must stay null.
            none = pl.col(_HAS).is_null()
            fill = [pl.col(c).fill_null(pl.when(none).then(v)) for c, v in plan.defaults.items()]
            joined = collect(joined.lazy().with_columns(fill).select(plan.outputs), frame.height)
        else:  # every record has instances: no default applies (and no query to run)
            joined = pl.DataFrame([joined.get_column(c) for c in plan.outputs])
        keys = keys.hstack(joined)
        added += joined.columns
    for ref in trees.instance_refs:
        if id(ref) in aux.columns:
            continue
        n += 1
        name = f"__tk_inst{n}"
        keys = _attach_instance_ref(keys, ref, frames, fields, rid, name)
        aux.columns[id(ref)] = name
        added.append(name)
    if not added:
        return frame
    return frame.hstack([keys.get_column(c) for c in added])


@dataclass(frozen=True)
class _FormPlan:
    """The compiled aggregates over one repeating form (see _Plan): staged columns, row columns, aggregations, the
    defaults for records without instances, and the aggregate columns each call node reads."""

    calls: tuple[Call, ...]
    fields: Mapping[str, FieldSpec]
    steps: list[list[pl.Expr]]
    first: list[pl.Expr]
    rows: list[pl.Expr]
    reduces: list[_Reduce]
    post: list[pl.Expr]
    outputs: list[str]
    defaults: dict[str, object]
    columns: dict[int, str]
    lo_hi: dict[int, tuple[str, str]]
    masks: dict[int, str]
    n: int


_FORM_PLANS: dict[tuple, _FormPlan] = {}


def _compiler(schema, options: tuple, fields, kinds, bits, **extra) -> Compiler:
    """A Compiler for the main frame or one form's instances: `options` is (mode, as_of, record id, missing codes,
    explain, missing columns), as in the plan keys."""
    mode, as_of, rid, missing_codes, explain, missing_columns = options
    return Compiler(schema, mode=mode, as_of=as_of, fields=fields, record_id=rid, missing_codes=missing_codes,
                    explain=explain, kinds=kinds, bits=bits, missing_columns=missing_columns, **extra)


def _form_plan(form, calls, n, schema, kinds, fields, bits, options) -> _FormPlan:
    comp = _compiler(schema, options, fields, kinds, bits, in_instances=form)
    # Heavy sub-expressions of the conditions and values are computed into columns first, as in the main frame.
    steps = _stage_steps(comp, _heavy_nodes([a for call in calls for a in call.args[1:]], walk))
    first: list[pl.Expr] = []  # condition columns
    rows: list[pl.Expr] = []  # columns derived from them
    reduces: list[_Reduce] = []
    post: list[pl.Expr] = []
    outputs: list[str] = []
    defaults: dict[str, object] = {}
    aux = _Aux()
    for call in calls:
        n += 1
        name = f"__tk_agg{n}"
        f, r, red, p, o, d = _aggregate_exprs(call, comp, name)
        first += f
        rows += r
        reduces += red
        post += p
        outputs += o
        defaults.update(d)
        aux.columns[id(call)] = name
        if f"{name}_lo" in d:
            aux.lo_hi[id(call)] = (f"{name}_lo", f"{name}_hi")
        if f"{name}_mask" in d:
            aux.masks[id(call)] = f"{name}_mask"
    return _FormPlan(tuple(calls), fields, steps, first, rows, reduces, post, outputs, defaults, aux.columns,
                     aux.lo_hi, aux.masks, n)


def _aggregate_exprs(call: Call, comp: Compiler, name: str):
    """(row columns over the instance table, derived row columns, plain reductions of them per record, the
    aggregate columns computed from those reductions, defaults for records without instances). Kleene counts add
    `<name>_lo`/`<name>_hi` bounds and explain a `<name>_mask`, each with its default.

    Reductions (`_Reduce`) are kept plain (polars' fast aggregation path) and combined per record afterwards, on
    one row per record instead of inside the grouping."""
    kleene, explain = comp.kleene, comp.explain
    args = call.args[1:]
    if call.name in ("count_instances", "any_instance"):
        value_node, cond_node = None, (args[0] if args else None)
    else:
        value_node, cond_node = args[0], (args[1] if len(args) > 1 else None)
    mask = None
    if cond_node is not None and not _scalar(cond_node):
        cond = comp.compile(cond_node)
        t = comp.truth(cond)
        mask = cond.mask
    elif cond_node is not None:
        t = spread(comp.truth(comp.compile(cond_node)))  # a row-independent condition applies to every row
    else:
        t = spread(pl.lit(True))
    yes, maybe, v = f"{name}_y", f"{name}_m", f"{name}_v"
    first = [t.fill_null(False).alias(yes), t.fill_null(True).alias(maybe)]
    every = cond_node is None and call.name in ("count_instances", "any_instance")
    if every:  # every instance counts: the number of rows, without a column of trues
        first = []
    rows: list[pl.Expr] = []
    reduces: list[_Reduce] = []
    post: list[pl.Expr] = []
    defaults: dict[str, object] = {}
    lo_name, hi_name = f"{name}_lo", f"{name}_hi"
    lo, hi = pl.col(lo_name), pl.col(hi_name)
    outputs = [name]
    counted = [_Reduce(lo_name, "len", ""), _Reduce(hi_name, "len", "")] if every else [
        _Reduce(lo_name, "true", yes), _Reduce(hi_name, "true", maybe)]
    if call.name == "count_instances":
        reduces += counted
        value = lo.cast(pl.Float64) if not kleene else pl.when(lo == hi).then(lo.cast(pl.Float64))
        post.append(value.alias(name))
        defaults[name] = 0.0
        if kleene:
            outputs += [lo_name, hi_name]
            defaults.update({lo_name: 0, hi_name: 0})
    elif call.name == "any_instance":
        reduces += counted
        value = (lo > 0) if not kleene else pl.when(lo > 0).then(True).when(hi == 0).then(False)
        post.append(value.alias(name))
        defaults[name] = False
    elif call.name == "count_distinct_instances":
        text = comp.text(comp.compile(value_node))
        # Distinct values are counted on 64-bit hashes of the text: integer hashing beats string hashing.
        # Hashed once into a column: the three columns below would each repeat the whole text expression.
        first.append(pl.when(text.is_not_null()).then(text.hash(seed=0)).alias(f"{v}_h"))
        text = pl.col(f"{v}_h")
        rows += [
            pl.when(pl.col(yes)).then(text).alias(f"{v}_yes"),
            pl.when(pl.col(maybe)).then(text).alias(f"{v}_maybe"),
            (text.is_null() & pl.col(maybe)).alias(f"{v}_gap"),
        ]
        reduces += [
            _Reduce(lo_name, "distinct", f"{v}_yes", f"{v}_h", yes),
            _Reduce(f"{v}_dm", "distinct", f"{v}_maybe", f"{v}_h", maybe),
            _Reduce(f"{v}_ng", "true", f"{v}_gap"),
        ]
        d_hi = pl.col(f"{v}_dm") + pl.col(f"{v}_ng")
        if kleene:  # post expressions read reductions only (they run side by side, in one step)
            post += [pl.when(lo == d_hi).then(lo.cast(pl.Float64)).alias(name), d_hi.alias(hi_name)]
            outputs += [lo_name, hi_name]
            defaults.update({lo_name: 0, hi_name: 0})
        else:
            post.append(lo.cast(pl.Float64).alias(name))
        defaults[name] = 0.0
    else:
        rows.append(pl.when(pl.col(yes)).then(comp.num(comp.compile(value_node))).alias(v))
        op = {"sum_instances": "sum", "min_instances": "min", "max_instances": "max"}[call.name]
        reduces += [_Reduce(f"{v}_r", op, v), _Reduce(f"{v}_n", "count", v)]
        value = pl.when(pl.col(f"{v}_n") > 0).then(pl.col(f"{v}_r").cast(pl.Float64))
        if kleene:
            reduces += [_Reduce(lo_name, "true", yes), _Reduce(hi_name, "true", maybe)]
            value = pl.when(lo != hi).then(None).otherwise(value)
        post.append(value.alias(name))
    if explain:
        m = f"{name}_mk"
        if mask is not None:
            first.append(pl.when(t.is_null()).then(mask).otherwise(pl.lit(0, pl.UInt64)).alias(m))
            reduces.append(_Reduce(f"{m}_or", "bit_or", m))
            post.append(pl.col(f"{m}_or").fill_null(0).cast(pl.UInt64).alias(f"{name}_mask"))
        else:
            post.append(pl.lit(0, pl.UInt64).alias(f"{name}_mask"))
        outputs.append(f"{name}_mask")
        defaults[f"{name}_mask"] = 0
    return first, rows, reduces, post, outputs, defaults


class _Reduce(NamedTuple):
    """A per-record reduction of an instance row column into column `out`. `op`: "len" counts rows (no column),
    "true" counts true values,
    "count" non-null values, "distinct" distinct non-null values, "sum"/"min"/"max"/"bit_or" as polars (nulls
    skipped). A distinct count may also name the `value` column and the `where` (boolean) column that `column`
    is `value` masked by: counting by runs reads those two, and the masked column is then not computed."""

    out: str
    op: str
    column: str
    value: str | None = None
    where: str | None = None


def _grouped_aggs(reduces: Sequence[_Reduce]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """A group_by's plain aggregations for the reductions, and the expressions that finish them per record."""
    aggs: list[pl.Expr] = []
    finish: list[pl.Expr] = []
    for out, op, col, _, _ in reduces:
        c = pl.col(col)
        if op == "len":
            aggs.append(pl.len().cast(pl.Int64).alias(out))
        elif op == "true":
            aggs.append(c.sum().cast(pl.Int64).alias(out))
        elif op == "count":
            aggs.append(c.count().cast(pl.Int64).alias(out))
        elif op == "distinct":
            # n_unique counts null as a value: taken back out where present, once grouped
            aggs += [c.n_unique().alias(f"{out}:n"), c.null_count().alias(f"{out}:z")]
            finish.append((pl.col(f"{out}:n").cast(pl.Int64) - (pl.col(f"{out}:z") > 0).cast(pl.Int64)).alias(out))
        elif op == "bit_or":
            aggs.append(c.bitwise_or().alias(out))
        else:
            aggs.append(getattr(c, op)().alias(out))
    return aggs, finish


_OWNER = "__tk_owner"
_HAS = "__tk_has_instances"


def _per_owner(rows: pl.LazyFrame, runs: _Runs, plan: _FormPlan, height: int) -> pl.DataFrame:
    """One row per owner number that has instances: the owner, the instance count (`_HAS`) and the plan's
    aggregate columns. `rows`: the instance rows' columns the reductions read, and their owner (null: no record's)."""
    if height >= _RUNS_FROM and height and all(r.op in _RUN_OPS for r in plan.reduces) and runs.grouped():
        read = dict.fromkeys(c for r in plan.reduces for c in ((r.value, r.where) if r.value else (r.column,)) if c)
        got = collect(rows.select(list(read)), height)
        if all(got.schema[r.value or r.column].is_integer() for r in plan.reduces if r.op == "distinct"):
            reduced = _reduce_runs(got, runs, plan.reduces)
            return collect(reduced.lazy().with_columns(plan.post).select(_OWNER, _HAS, *plan.outputs), reduced.height)
    aggs, finish = _grouped_aggs(plan.reduces)
    grouped = rows.filter(pl.col(_OWNER).is_not_null()).group_by(_OWNER).agg([*aggs, pl.len().alias(_HAS)])
    if finish:
        grouped = grouped.with_columns(finish)
    return collect(grouped.with_columns(plan.post).select(_OWNER, _HAS, *plan.outputs), height)


#: Reductions by runs are exact (counts) and pay off on many rows; one candidate's few rows take the group_by.
_RUN_OPS = ("len", "true", "count", "distinct")
_RUNS_FROM = SMALL_ROWS
#: Distinct values within a run are found by comparing each row with the rows up to this far before it; the rows
#: of longer runs (rare: a record with more instances than this) are counted by a group_by of their own.
_RUN_REACH = 8


def _reduce_runs(rows: pl.DataFrame, runs: _Runs, reduces: Sequence[_Reduce]) -> pl.DataFrame:
    """The reductions per run of rows, for instances whose every owner's rows are one run (`_Runs.grouped`):
    per-row counts (is it true, non-null, the first of its value in its run) summed over each run by differences
    of running totals at the runs' last rows, without hashing anything. Counts are integers, so the totals are
    exact: a record's counts never depend on the rows before it. `distinct` reads integer columns (hashes)."""
    total = len(runs.run)  # the rows read may be no column at all (counting rows only)
    starts = runs.starts
    stops = np.append(starts[1:], total)
    lengths = stops - starts
    reach = min(int(lengths.max()), _RUN_REACH)
    within: list[np.ndarray] = []  # per distance k: is the row k before in the same run (for rows k onwards)
    if reach > 1 and any(r.op == "distinct" for r in reduces):
        within = [runs.run[k:] == runs.run[:-k] for k in range(1, reach)]
    # per value column: is each row's value non-null, and per distance k, does the row k before hold it too
    seen: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    counts = []
    for r in reduces:
        if r.op == "len":
            counts.append(pl.Series(r.out, lengths, dtype=pl.Int64))
            continue
        if r.op == "true":
            flag = _bools(rows.get_column(r.column))
        elif r.op == "count":
            flag = rows.get_column(r.column).is_not_null().to_numpy()
        else:  # distinct: a non-null value not seen in the rows of its run before it (where `where` holds)
            name = r.value or r.column
            if name not in seen:
                values = rows.get_column(name)
                known = values.is_not_null().to_numpy()
                v = (values.fill_null(0) if values.null_count() else values).to_numpy()
                seen[name] = known, [same & known[:-k] & (v[k:] == v[:-k]) for k, same in enumerate(within, 1)]
            known, repeats = seen[name]
            where = _bools(rows.get_column(r.where)) & known if r.value else known
            flag = where.copy()
            for k, repeat in enumerate(repeats, start=1):
                flag[k:] &= ~(repeat & where[:-k])
        totals = np.cumsum(flag, dtype=np.int32 if total < 2**31 else np.int64)[stops - 1]
        counts.append(pl.Series(r.out, np.diff(totals, prepend=0), dtype=pl.Int64))
    frame = pl.DataFrame([runs.run_owner.alias(_OWNER), pl.Series(_HAS, lengths, dtype=pl.UInt32), *counts])
    long = pl.Series(lengths > _RUN_REACH)
    if long.any() and any(r.op == "distinct" for r in reduces):
        frame = _long_runs(rows, runs, reduces, frame, long)
    return frame.filter(pl.col(_OWNER).is_not_null())


def _bools(column: pl.Series) -> np.ndarray:
    return (column.fill_null(False) if column.null_count() else column).to_numpy()


def _long_runs(
    rows: pl.DataFrame, runs: _Runs, reduces: Sequence[_Reduce], counts: pl.DataFrame, long: pl.Series
) -> pl.DataFrame:
    """Distinct counts of the runs longer than _RUN_REACH, by a group_by over their rows only."""
    which = long.arg_true()
    run = pl.Series("__tk_run", runs.run)
    in_long = long.gather(run)
    subset = rows.filter(in_long).with_columns(run.filter(in_long))
    distinct = [r for r in reduces if r.op == "distinct"]
    # the masked columns are not among the rows read by the run path: made here from value and where
    masked = [pl.when(pl.col(r.where)).then(pl.col(r.value)).alias(r.column) for r in distinct if r.value]
    aggs, finish = _grouped_aggs(distinct)
    got = subset.with_columns(masked).group_by("__tk_run", maintain_order=True).agg(aggs).with_columns(finish)
    return counts.with_columns(counts.get_column(r.out).scatter(which, got.get_column(r.out)) for r in distinct)


@dataclass(frozen=True)
class _Owners:
    """Record ids as row numbers: instances are aggregated per owning record on a small integer rather than on the
    id text (hashing 3.5 million text ids, and joining the result back on text, was most of a screening run).

    `first[r]` is the first row of the frame holding record r's id: instances belong to that number, and every
    row with that id reads the aggregates of that number, as a join on the id would give them."""

    ids: pl.Series
    unique: bool  # every id appears once, none is null: a row is its own owner number

    @staticmethod
    def of(ids: pl.Series) -> _Owners:
        if ids.null_count():
            return _Owners(ids, False)
        adjacent_distinct = ids.len() < 2 or not ids.head(-1).eq_missing(ids.tail(-1)).any()
        unique = adjacent_distinct and (ids.is_sorted() or ids.n_unique() == ids.len())
        return _Owners(ids, unique)

    def _first(self) -> pl.DataFrame:
        """id -> its first row number (ids that are null own nothing: a null id never matched in a join either)."""
        return (
            self.ids.to_frame("__id")
            .with_row_index(_OWNER)
            .filter(pl.col("__id").is_not_null())
            .unique(subset="__id", keep="first", maintain_order=False)
        )

    def rows_of(self, inst: pl.Series) -> _Runs:
        """The owner number of each instance row (null for an id that is no record's), with the runs of equal ids."""
        total = inst.len()
        # the first row of each run: compared with the row before it (slices, not a shifted copy of the text)
        first = np.ones(total, dtype=bool)
        if total > 1:
            first[1:] = inst.slice(1).ne_missing(inst.slice(0, total - 1)).to_numpy()
        starts = np.flatnonzero(first)
        run = np.cumsum(first, dtype=np.uint32) - 1 if total else np.zeros(0, dtype=np.uint32)
        run_ids = inst.filter(pl.Series(first))
        # Instances usually come grouped by record in record order (REDCap exports them so): the runs of equal ids
        # are then the records themselves, found without hashing any text.
        if self.unique and run_ids.len() == self.ids.len() and run_ids.equals(self.ids):
            run_owner = pl.int_range(0, run_ids.len(), dtype=pl.UInt32, eager=True).alias(_OWNER)
            return _Runs(pl.Series(_OWNER, run), run, starts, run_owner, self.ids.len())
        # Otherwise each run of equal ids (still far fewer than the rows) is looked up once.
        runs = run_ids.to_frame("__id").join(self._first(), on="__id", how="left", maintain_order="left")
        run_owner = runs.get_column(_OWNER)
        return _Runs(run_owner.gather(run).alias(_OWNER), run, starts, run_owner, self.ids.len())

    def align(self, per_owner: pl.DataFrame) -> pl.DataFrame:
        """`per_owner`'s rows (without the owner) as the frame's rows read them: a row whose owner has none is
        null throughout. A scatter and a gather of row numbers instead of a join on the owner."""
        height = self.ids.len()
        owner = per_owner.get_column(_OWNER)
        if self.unique and per_owner.height == height and owner.is_sorted():
            # owners are distinct and below `height`: sorted and as many, they are the frame's rows in order
            return per_owner.drop(_OWNER)
        where = _nulls(height, pl.UInt32).scatter(
            per_owner.get_column(_OWNER), pl.int_range(0, per_owner.height, dtype=pl.UInt32, eager=True)
        )
        if not self.unique:
            where = where.gather(self.targets().get_column(_OWNER))
        return per_owner.drop(_OWNER).gather(where)

    def targets(self) -> pl.DataFrame:
        """Per frame row, in order: the owner number whose aggregates it reads."""
        if self.unique:
            return pl.DataFrame({_OWNER: pl.int_range(0, self.ids.len(), dtype=pl.UInt32, eager=True)})
        joined = self.ids.to_frame("__id").join(self._first(), on="__id", how="left", maintain_order="left")
        return joined.select(_OWNER)


@dataclass(frozen=True)
class _Runs:
    """Instance rows' owner numbers (`owner`, per row) and the runs of equal record ids they come in: each row's
    run (`run`), the first row of each run (`starts`) and its owner (`run_owner`, null for an id that is no
    record's). `records`: how many rows the record frame has (owner numbers are below it)."""

    owner: pl.Series
    run: np.ndarray
    starts: np.ndarray
    run_owner: pl.Series
    records: int

    def grouped(self) -> bool:
        """Is every owner's instances one run of rows? (true whatever the order of the runs)."""
        owners = self.run_owner.drop_nulls()
        if owners.len() > self.records:  # more runs than records: some record's rows are apart
            return False
        if owners.len() < 2:
            return True
        if owners.is_sorted():
            return bool((owners.diff().drop_nulls() > 0).all())
        return owners.n_unique() == owners.len()


def _nulls(height: int, dtype: pl.DataType) -> pl.Series:
    if height <= SMALL_ROWS:
        return pl.Series([None] * height, dtype=dtype)  # extend_constant runs a query (a fraction of a millisecond)
    return pl.Series(dtype=dtype).extend_constant(None, height)


def _record_ids(rid: str, frame: pl.DataFrame) -> pl.Expr:
    """Instance rows' record ids in the record frame's dtype. Not strict: an id that cannot be one of the frame's
    (text 'abc' against integer ids) becomes null and joins no record, instead of stopping the run."""
    return pl.col(rid).cast(frame.schema[rid], strict=False)


def _attach_instance_ref(
    frame: pl.DataFrame, ref: FieldRef, frames: Mapping[str, pl.DataFrame], fields, rid: str, name: str
) -> pl.DataFrame:
    column = ref.name if ref.code is None else checkbox_column(ref.name, ref.code)
    spec = fields.get(ref.name)
    candidates = [spec.form] if spec is not None and spec.form in frames else [f for f in frames if column in frames[f]]
    if not candidates or column not in frames[candidates[0]].columns:
        raise LogicError(
            f"[{ref.name}][{ref.instance}]: no instance data holds column {column!r}",
            location=Location(line=ref.line, col=ref.col),
        )
    inst = frames[candidates[0]]
    if INSTANCE_COLUMN not in inst.columns:
        raise DataError(f"instance data for '{candidates[0]}' has no {INSTANCE_COLUMN} column")
    num = pl.col(INSTANCE_COLUMN).cast(pl.Int64, strict=False)
    if isinstance(ref.instance, int):
        picked = inst.filter(num == ref.instance)
    elif ref.instance in ("last-instance", "first-instance"):
        target = num.max() if ref.instance == "last-instance" else num.min()
        picked = inst.filter(num == target.over(rid))
    else:
        raise LogicError(
            f"[{ref.instance}] is only meaningful inside a repeating instrument's own rows",
            location=Location(line=ref.line, col=ref.col),
        )
    picked = picked.unique(subset=[rid], keep="first").select(_record_ids(rid, frame), pl.col(column).alias(name))
    return frame.join(picked, on=rid, how="left", maintain_order="left")
