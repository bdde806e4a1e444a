"""Screening: every criterion for every candidate, column-wise, in Kleene mode, as of a date.

The result is a frame with one row per candidate and, per criterion, a small-integer result (`Result`) and a
bitmask of the referenced fields that were missing where the result is unknown. Names, values and prose are
produced only when a report asks for them (`trialkit.screening.explain`), so screening a million candidates
never builds a Python object per candidate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trialkit.definitions.privacy import identifying_fields
from trialkit.definitions.rules import Criterion, CriterionKind, RuleSet
from trialkit.errors import DefinitionError, Diagnostic, UsageError
from trialkit.logic.ast import FieldRef
from trialkit.logic.engine import SMALL_ROWS, collect
from trialkit.records.convert import EVENT, REPEAT_INSTRUMENT
from trialkit.screening import _eval
from trialkit.screening.outcomes import Disposition, Result, deciding_result

RESULT_DTYPE = pl.UInt8
MASK_DTYPE = pl.UInt64
MAX_MISSING = 64  # one bit per missing-field candidate of a criterion

DISPOSITION_COL = "disposition"
PRIMARY_COL = "primary_reason"


def result_col(cid: str) -> str:
    return f"result:{cid}"


def missing_col(cid: str) -> str:
    return f"missing:{cid}"


@dataclass(frozen=True)
class MissingItem:
    """Something whose absence can leave a criterion unknown: a column of the record, a column of a repeating
    instrument's instances, or the instrument itself having no instance at all."""

    label: str  # what the coordinator reads: field name, or `form` for "no instance recorded"
    column: str | None = None
    form: str | None = None  # set for instance fields and for the no-instance item
    via: str | None = None  # an input of this calculated field: named instead of the calc when it is blank
    inputs: tuple[str, ...] = ()  # for a calculated field: its inputs (the calc is named only if they are all there)
    shown_if: Any | None = None  # the field's branching logic: where it hides the field, a blank is not missing


@dataclass(frozen=True)
class CompiledCriterion:
    criterion: Criterion
    index: int
    logic: Any  # syntax tree
    applies: Any | None
    missing_items: tuple[MissingItem, ...]
    columns: tuple[str, ...]  # record columns referenced (for values)
    value_terms: tuple[tuple[str, Any], ...]  # (label, tree) of computed values worth showing
    signature_columns: tuple[str, ...] = ()
    requires_instances: tuple[str, ...] = ()
    uses_today: bool = False  # reads 'today' (the candidate's reference date): reports show which date that was
    applies_bits: frozenset[int] = frozenset()  # items read by applies_if (named while applicability is unknown)
    logic_bits: frozenset[int] = frozenset()  # items read by the decision (named once the criterion applies)

    @property
    def id(self) -> str:
        return self.criterion.id

    @property
    def kind(self) -> CriterionKind:
        return self.criterion.kind


@dataclass(frozen=True)
class CompiledRules:
    """A rule set parsed once, ready to be evaluated on any number of frames (the fqm-execution lesson)."""

    ruleset: RuleSet
    criteria: tuple[CompiledCriterion, ...]
    specs: Mapping[str, Any] = field(repr=False, default_factory=dict)
    record_id: str = "record_id"
    forms: tuple[str, ...] = ()  # repeating instruments the rules aggregate over
    reference_field: str | None = None  # per-candidate 'today' (else the as-of date for everyone)
    identifiers: frozenset[str] = frozenset()  # PHI fields: their values never reach a report
    #: polars expressions built from these rules once, reused by every screening (one candidate at a time pays
    #: for building them otherwise): name -> (the criteria they were built for, the value)
    plans: dict[str, tuple[Any, Any]] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def plan(self, name: str, build: Any) -> Any:
        hit = self.plans.get(name)
        if hit is not None and hit[0] is self.criteria:  # a copy with other criteria rebuilds its own
            return hit[1]
        value = build()
        self.plans[name] = (self.criteria, value)
        return value

    def stamp(self) -> dict[str, str]:
        return self.ruleset.stamp()

    def columns(self) -> tuple[str, ...]:
        """Every record column any criterion reads (what a caller must supply, at least as null columns)."""
        seen: dict[str, None] = {self.reference_field: None} if self.reference_field else {}
        for c in self.criteria:
            for col in c.columns:
                seen.setdefault(col, None)
            for item in c.missing_items:
                if item.form is None and item.column:
                    seen.setdefault(item.column, None)
        return tuple(seen)

    def read_columns(self) -> tuple[str, ...]:
        """Every column screening reads: record columns and the repeating instruments' fields."""
        seen = dict.fromkeys(self.columns())
        for c in self.criteria:
            for item in c.missing_items:
                if item.column and item.column != _eval.REFERENCE_COLUMN:
                    seen.setdefault(item.column, None)
        return tuple(seen)


def compile_rules(ruleset: RuleSet, study: Any = None, *, record_id: str | None = None) -> CompiledRules:
    """Parse every expression of the rule set once. Syntax errors raise `DefinitionError` with located messages."""
    diags: list[Diagnostic] = []
    compiled = []
    forms: dict[str, None] = {}
    reference_field = ruleset.reference_date
    calc_inputs = _calc_inputs(study) if study is not None else {}
    for i, crit in enumerate(ruleset.criteria):
        try:
            logic = _eval.parse(crit.expression, crit.logic_pos)
            applies = _eval.parse(crit.applies_if, crit.applies_pos) if crit.applies_if else None
        except DefinitionError as exc:
            diags.extend(exc.diagnostics)
            continue
        labels = _eval.value_terms(logic) + (_eval.value_terms(applies) if applies is not None else ())
        uses_today = _eval.uses_today(logic) or (applies is not None and _eval.uses_today(applies))
        if reference_field is not None:
            logic = _eval.with_reference_date(logic)
            applies = _eval.with_reference_date(applies) if applies is not None else None
        terms = _eval.value_terms(logic) + (_eval.value_terms(applies) if applies is not None else ())
        value_terms = tuple((label, node) for (label, _), (_, node) in zip(labels, terms, strict=True))
        sig_cols: tuple[str, ...] = ()
        if crit.attested is not None:
            sig_cols = tuple(c for c in (crit.attested.signed_by, crit.attested.signed_on) if c)
        logic_refs = _eval.references(logic).merge(_eval.Refs(columns=sig_cols))
        applies_refs = _eval.references(applies) if applies is not None else _eval.Refs()
        refs = applies_refs.merge(logic_refs)
        refs = _eval.Refs(tuple(c for c in refs.columns if c != _eval.REFERENCE_COLUMN), refs.instance_columns)
        for form in crit.requires_instances:
            logic_refs = logic_refs.merge(_eval.Refs(instance_columns={form: ()}))
            refs = refs.merge(_eval.Refs(instance_columns={form: ()}))
        items = _record_items(refs.columns, calc_inputs, study)
        if reference_field is not None and uses_today:
            # 'today' is the candidate's reference date: unknown when that date is recorded but unreadable
            items.append(MissingItem(reference_field, column=_eval.REFERENCE_COLUMN))
        for form, cols in refs.instance_columns.items():
            forms.setdefault(form, None)
            items.append(MissingItem(form, form=form))
            items.extend(MissingItem(f"{form}.{c}", column=c, form=form, shown_if=_branching(study, c)) for c in cols)
        applies_bits = frozenset(i for i, it in enumerate(items) if _reads(applies_refs, it))
        logic_bits = frozenset(i for i, it in enumerate(items) if _reads(logic_refs, it))
        if len(items) > MAX_MISSING:
            diags.append(
                Diagnostic(
                    "SCR001",
                    f"criterion {crit.id} reads {len(items)} fields; at most {MAX_MISSING}",
                    crit.pos.file,
                    crit.pos.line,
                    crit.pos.col,
                )
            )
            continue
        compiled.append(
            CompiledCriterion(
                criterion=crit,
                index=i,
                logic=logic,
                applies=applies,
                missing_items=tuple(items),
                columns=refs.columns,
                value_terms=value_terms,
                signature_columns=sig_cols,
                applies_bits=applies_bits,
                logic_bits=logic_bits,
                requires_instances=crit.requires_instances,
                uses_today=uses_today,
            )
        )
    if diags:
        raise DefinitionError(f"{ruleset.source or ruleset.id}: rule set cannot be compiled", diagnostics=diags)
    specs = study.field_specs() if study is not None else {}
    rid = record_id or (study.record_id_field if study is not None else "record_id")
    identifiers = identifying_fields(study) if study is not None else frozenset()
    return CompiledRules(ruleset, tuple(compiled), specs, rid, tuple(forms), reference_field, identifiers)


def _record_items(
    columns: tuple[str, ...], calc_inputs: Mapping[str, tuple[str, ...]], study: Any
) -> list[MissingItem]:
    """Missing items for record columns. A calculated field brings its inputs: a coordinator collects weight and
    height, not 'BMI', so the blank inputs are named and the calc itself only when its inputs are all there."""
    items: dict[str, MissingItem] = {}
    for c in columns:
        inputs = calc_inputs.get(c, ())
        items[c] = MissingItem(c, column=c, inputs=inputs, shown_if=_branching(study, c))
    for c in columns:
        for x in calc_inputs.get(c, ()):
            if x not in items:
                items[x] = MissingItem(x, column=x, via=c, shown_if=_branching(study, x))
    return list(items.values())


def _branching(study: Any, name: str) -> Any | None:
    """The parsed branching logic of a field, None when it has none (or it does not parse: the checker says so)."""
    field = study.fields.get(name) if study is not None else None
    if field is None or not field.show_if.strip():
        return None
    try:
        return _eval.parse(field.show_if)
    except DefinitionError:
        return None


def _calc_inputs(study: Any) -> dict[str, tuple[str, ...]]:
    """Calculated field -> the non-calculated record fields it is computed from (through nested calcs), for calcs
    whose inputs are plain fields of the same row (no events, instances or checkboxes)."""
    from trialkit.logic.ast import FieldRef, walk
    from trialkit.logic.parser import parse

    fields = study.fields
    direct: dict[str, tuple[str, ...] | None] = {}
    for name, f in fields.items():
        if str(f.type) != "calc" or not f.calculation.strip():
            continue
        try:
            tree = parse(f.calculation)
        except Exception:  # a broken calc is the definitions checker's business, not screening's
            direct[name] = None
            continue
        refs = [n for n in walk(tree) if isinstance(n, FieldRef)]
        if any(r.event or r.instance is not None or r.code is not None or r.name not in fields for r in refs):
            direct[name] = None
            continue
        direct[name] = tuple(dict.fromkeys(r.name for r in refs))

    def expand(name: str, seen: frozenset[str]) -> tuple[str, ...] | None:
        parts: list[str] = []
        for x in direct.get(name) or ():
            if x in direct:
                if x in seen or direct[x] is None:
                    return None
                sub = expand(x, seen | {x})
                if sub is None:
                    return None
                parts.extend(sub)
            else:
                parts.append(x)
        return tuple(dict.fromkeys(parts))

    out = {}
    for name, refs in direct.items():
        if refs:
            flat = expand(name, frozenset({name}))
            if flat:
                out[name] = flat
    return out


def _reads(refs: _eval.Refs, item: MissingItem) -> bool:
    if item.via is not None:
        return item.via in refs.columns
    if item.form is None:
        return item.column in refs.columns
    if item.column is None:
        return item.form in refs.instance_columns
    return item.column in refs.instance_columns.get(item.form, ())


@dataclass(frozen=True)
class Screening:
    """The outcome of one screening run: the stamp, the as-of date and the per-candidate result frame."""

    rules: CompiledRules
    as_of: dt.date
    frame: pl.DataFrame  # record id, disposition, primary_reason, result:<id>..., missing:<id>...
    data: pl.DataFrame = field(repr=False)  # the candidates' record columns (for values in explanations)
    instances: Mapping[str, pl.DataFrame] = field(repr=False, default_factory=dict)
    notes: tuple[str, ...] = ()  # how the input was read (shown in reports)
    #: cells that held a value screening did not use (trialkit.records.usable): record, event, instance, field,
    #: check, problem. Their criteria are unknown; reports say what to correct.
    problems: pl.DataFrame | None = field(repr=False, default=None)

    @property
    def ruleset(self) -> RuleSet:
        return self.rules.ruleset

    @property
    def record_id(self) -> str:
        return self.rules.record_id

    def __len__(self) -> int:
        return self.frame.height

    def stamp(self) -> dict[str, Any]:
        return {"ruleset": self.rules.stamp(), "as_of": self.as_of.isoformat()}


def screen(
    rules: CompiledRules,
    records: pl.DataFrame | Any,
    *,
    as_of: dt.date,
    instances: Mapping[str, pl.DataFrame] | None = None,
) -> Screening:
    """Screen every candidate (one row of `records` each) against the compiled rules, as of `as_of`.

    `records` may be a polars or pandas frame, or an object with `.records` and `.instances` (intake data).
    Record columns the rules read but the frame lacks are treated as missing for every candidate.
    """
    if not isinstance(as_of, dt.date) or isinstance(as_of, dt.datetime):
        raise UsageError(f"as_of must be a date, not {type(as_of).__name__}")
    unreadable: pl.Series | None = None
    problems: pl.DataFrame | None = None
    event = getattr(records, "event", None)  # the event whose rows are the candidates (intake data says)
    if hasattr(records, "records") and hasattr(records, "instances"):
        if hasattr(records, "for_screening"):  # intake data: a value that fails its checks never decides
            records = records.for_screening(as_of=as_of, columns=rules.read_columns())
            problems = records.problems
        instances = records.instances if instances is None else instances
        unreadable = _unreadable_reference(records, rules.reference_field)
        records = records.records
    frame = _as_polars(records)
    rid = rules.record_id
    if rid not in frame.columns:
        raise UsageError(f"the data has no record id column '{rid}'")
    frame = _with_missing_columns(frame, rules)
    frame = frame.with_columns(_reference_date(rules, frame, as_of, unreadable).alias(_eval.REFERENCE_COLUMN))
    instances = {k: _as_polars(v) for k, v in (instances or {}).items()}
    for form in rules.forms:
        if form not in instances:
            instances[form] = _empty_instances(rules, form)

    ctx = _eval.Context(as_of=as_of, specs=rules.specs, instances=instances, record_id=rid)
    exprs: dict[str, Any] = {}
    for cc in rules.criteria:
        exprs[_logic_key(cc)] = cc.logic
        if cc.applies is not None:
            exprs[_applies_key(cc)] = cc.applies
    # "has at least one instance", counted by the logic engine in its pass over that form's instances. Parsed
    # once per rule set: the logic engine reuses its compiled plan only for the very same trees.
    exprs.update(rules.plan("has", lambda: _has_exprs(rules)))
    # One pass for every expression: the logic engine shares parsing of columns and instance aggregates.
    # Only the columns the rules read go to the logic engine: it joins instance aggregates onto this frame.
    needed = [rid, _eval.REFERENCE_COLUMN, *(c for c in rules.columns() if c not in (rid, _eval.REFERENCE_COLUMN))]
    narrow = pl.DataFrame([frame.get_column(c) for c in needed])  # a projection, without planning a query
    evaluated = pl.DataFrame([s for s in _eval.evaluate_many(exprs, narrow, ctx).get_columns() if s.name != rid])
    # Result codes and disposition in one lazy query over the evaluated expressions (one candidate at a time,
    # each query costs about a millisecond to start), then the missing-field masks in a second one (see _masks).
    signatures = dict.fromkeys(c for cc in rules.criteria for c in cc.signature_columns if c != rid)
    base = pl.DataFrame([narrow.get_column(c) for c in (rid, *signatures)]).hstack(evaluated)
    outcome, masks_plan = rules.plan("query", lambda: _query_steps(rules))
    out = collect(_apply_steps(base.lazy(), outcome), base.height)
    masks, touched = _masks(rules, narrow, evaluated, out, masks_plan)
    masks = _with_gates(rules, masks, frame, ctx, touched, event)
    masks = _with_instance_gaps(rules, out, masks, base, ctx)
    cols = [rid, DISPOSITION_COL, PRIMARY_COL]
    cols += [c for cc in rules.criteria for c in (result_col(cc.id), missing_col(cc.id))]
    result = pl.DataFrame([masks.get_column(c) if c in masks.columns else out.get_column(c) for c in cols])
    return Screening(rules, as_of, result, frame, instances, problems=problems)


_TOUCHED = "__tk_gated"
_UNKNOWN = "__tk_u"  # some criterion is unknown (a temporary of the disposition step)


def _apply_steps(lazy: pl.LazyFrame, steps: Sequence[Sequence[pl.Expr]]) -> pl.LazyFrame:
    for step in steps:
        lazy = lazy.with_columns(step)
    return lazy


def _query_steps(rules: CompiledRules) -> tuple[list[list[pl.Expr]], list[pl.Expr]]:
    """The with_columns steps of the outcome query (results, disposition, the record id as text, last: the steps
    before may read it), and the select of the masks query (missing masks, then whether a gated field is in one)."""
    crits = rules.criteria
    rid = rules.record_id
    if not crits:
        none = [pl.lit(Disposition.ELIGIBLE.value).alias(DISPOSITION_COL), pl.lit(None, pl.String).alias(PRIMARY_COL)]
        return [none, [pl.lit(False).alias(_UNKNOWN), pl.col(rid).cast(pl.String)]], []
    results = [_result_expr(cc).alias(result_col(cc.id)) for cc in crits]
    first, second = _disposition_exprs(crits)
    assert _UNKNOWN in [e.meta.output_name() for e in first]
    steps = [results, first, second, [pl.col(rid).cast(pl.String)]]
    raw, masks = _mask_exprs(crits)
    gated = _gated(rules)
    touched = []
    if gated:
        touched = [pl.any_horizontal(
            (pl.col(missing_col(cc.id)) & pl.lit(sum(1 << b for b, _ in items), MASK_DTYPE)) != 0
            for cc, items in gated
        ).alias(_TOUCHED)]
    return steps, [raw, masks, touched]


def _masks(
    rules: CompiledRules, narrow: pl.DataFrame, evaluated: pl.DataFrame, out: pl.DataFrame, plan: list[list[pl.Expr]]
) -> tuple[pl.DataFrame, pl.Series | None]:
    """Missing-field masks (0 where the criterion is not unknown) and the row numbers whose masks hold a field
    with branching logic (None when no criterion reads one). On small frames they are built in one query on the
    rows with some unknown result; on large ones criterion by criterion (`_masks_by_criterion`)."""
    cols = [missing_col(cc.id) for cc in rules.criteria]
    rows = out.get_column(_UNKNOWN).arg_true()
    height = out.height
    if rows.len() == 0:
        zero = _constant("", MASK_DTYPE, 0, height)
        return pl.DataFrame([zero.alias(c) for c in cols]), (pl.Series([], dtype=pl.UInt32) if plan[2] else None)
    if height > SMALL_ROWS:
        return _masks_by_criterion(rules, narrow, evaluated, out)
    raw, masks, touched = plan
    applies = [evaluated.get_column(_applies_key(cc)) for cc in rules.criteria if cc.applies is not None]
    results = [out.get_column(result_col(cc.id)) for cc in rules.criteria]
    every = rows.len() == height
    frame = narrow.hstack([*applies, *results])
    if not every:
        frame = frame.gather(rows)
    got = collect(frame.lazy().with_columns(raw).with_columns(masks).select([*cols, *touched]), frame.height)
    gated_rows = None
    if touched:
        hit = got.get_column(_TOUCHED).arg_true()
        gated_rows = hit if every else rows.gather(hit)
    if every:
        return got.select(cols), gated_rows
    zero = _constant("", MASK_DTYPE, 0, height)
    return pl.DataFrame([zero.scatter(rows, got.get_column(c)).alias(c) for c in cols]), gated_rows


def _masks_by_criterion(
    rules: CompiledRules, narrow: pl.DataFrame, evaluated: pl.DataFrame, out: pl.DataFrame
) -> tuple[pl.DataFrame, pl.Series | None]:
    """The masks of a large frame, each built on the rows where its criterion is unknown only (a percent or two of
    them): the fields a criterion reads are gathered at those rows, rather than every field's blank bits
    computed on every row and then kept on a few."""
    plans = rules.plan("masks", lambda: _criterion_masks(rules))
    height = out.height
    masks = []
    touched = []
    for cc, (columns, expr, gated_bits) in zip(rules.criteria, plans, strict=True):
        result = out.get_column(result_col(cc.id))
        rows = result.eq(Result.UNKNOWN.value).arg_true()
        # numpy's zeros: memory the system hands over zeroed, touched only where a mask is set (a polars constant
        # column writes every row, a million page faults' worth over twenty criteria)
        mask = np.zeros(height, dtype=np.uint64)
        if rows.len() == 0:
            masks.append(pl.Series(missing_col(cc.id), mask))
            continue
        read = [narrow.get_column(c).gather(rows) for c in columns]
        if cc.applies is not None:
            read.append(evaluated.get_column(_applies_key(cc)).gather(rows))
        got = pl.DataFrame(read).select(expr).to_series() if read else pl.select(expr).to_series()
        if got.len() != rows.len():  # no column read: the constant mask of every unknown row
            got = pl.Series([got[0]] * rows.len(), dtype=MASK_DTYPE)
        mask[rows.to_numpy()] = got.fill_null(0).to_numpy()
        masks.append(pl.Series(missing_col(cc.id), mask))
        if gated_bits:
            touched.append(rows.filter((got & gated_bits) != 0))
    gated_rows = None
    if rules.plan("gated", lambda: _gated(rules)):
        gated_rows = pl.concat(touched).unique().sort() if touched else pl.Series([], dtype=pl.UInt32)
    return pl.DataFrame(masks), gated_rows


def _criterion_masks(rules: CompiledRules) -> list[tuple[list[str], pl.Expr, int]]:
    """Per criterion: the record columns its mask reads, the mask over rows where it is unknown, and the bits of
    its fields with branching logic."""
    gated = {cc.id: sum(1 << b for b, _ in items) for cc, items in _gated(rules)}
    out = []
    for cc in rules.criteria:
        columns: dict[str, None] = {}
        for item in cc.missing_items:
            if item.form is None:
                columns.update(dict.fromkeys(c for c in (item.column, item.via, *item.inputs) if c))
        mask = _missing_mask(cc, cc.logic_bits)
        if cc.applies is not None:
            mask = pl.when(pl.col(_applies_key(cc)).is_null()).then(_missing_mask(cc, cc.applies_bits)).otherwise(mask)
        out.append((list(columns), mask.cast(MASK_DTYPE).alias(missing_col(cc.id)), gated.get(cc.id, 0)))
    return out


def _has_exprs(rules: CompiledRules) -> dict[str, Any]:
    forms = sorted({form for cc in rules.criteria for form in cc.requires_instances})
    return {_has_key(form): _eval.parse(f"count_instances({form}) > 0") for form in forms}


def _mask_exprs(crits: Sequence[CompiledCriterion]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    raw = []
    for i, cc in enumerate(crits):
        raw.append(_missing_mask(cc, cc.logic_bits).alias(f"__tk_L{i}"))
        if cc.applies is not None:
            raw.append(_missing_mask(cc, cc.applies_bits).alias(f"__tk_A{i}"))
    out = []
    for i, cc in enumerate(crits):
        mask = pl.col(f"__tk_L{i}")
        if cc.applies is not None:
            mask = pl.when(pl.col(_applies_key(cc)).is_null()).then(pl.col(f"__tk_A{i}")).otherwise(mask)
        unknown = pl.col(result_col(cc.id)) == Result.UNKNOWN.value
        out.append(
            pl.when(unknown).then(mask).otherwise(pl.lit(0, MASK_DTYPE)).cast(MASK_DTYPE).alias(missing_col(cc.id))
        )
    return raw, out


def _gated(rules: CompiledRules) -> list[tuple[CompiledCriterion, list[tuple[int, MissingItem]]]]:
    """Criteria with record fields that have branching logic, and those fields' (bit, item)."""
    gated = []
    for cc in rules.criteria:
        items = [(b, it) for b, it in enumerate(cc.missing_items) if it.form is None and it.shown_if is not None]
        if items:
            gated.append((cc, items))
    return gated


def _on_row(tree: Any, event: str | None) -> Any:
    """Branching logic as read on a candidate's row of `event`: `[screening_arm_1][x]` there is the row's own
    `[x]` (the pregnancy test opens on `[screening_arm_1][childbearing_potential]`); left as it is, such logic
    could not be evaluated and its field was asked for even where the form hides it."""
    if event is None:
        return tree
    if isinstance(tree, FieldRef):
        return dataclasses.replace(tree, event=None) if tree.event == event else tree
    if not dataclasses.is_dataclass(tree):
        return tree
    changes = {}
    for f in dataclasses.fields(tree):
        value = getattr(tree, f.name)
        if dataclasses.is_dataclass(value) or isinstance(value, tuple):
            new = tuple(_on_row(v, event) for v in value) if isinstance(value, tuple) else _on_row(value, event)
            if new != value:
                changes[f.name] = new
    return dataclasses.replace(tree, **changes) if changes else tree


def _with_gates(
    rules: CompiledRules,
    masks: pl.DataFrame,
    frame: pl.DataFrame,
    ctx: _eval.Context,
    rows: pl.Series | None,
    event: str | None = None,
) -> pl.DataFrame:
    """Branching logic in the still-needed lists: a field its form hides is not asked for, and a field whose
    branching logic is still undecided (MAOI date, while 'MAOI in the past month?' is blank) gives way to the
    blank fields that decide it, when the criterion reads those too. A list is never emptied this way.
    Only the candidates with a gated field in a list (`rows`, found with the masks) are evaluated (in batch
    screening, few are)."""
    if rows is None or masks.height == 0:
        return masks
    gated = rules.plan("gated", lambda: _gated(rules))
    if rows.len() == 0:
        return masks
    gates = {it.column: _on_row(it.shown_if, event) for _, items in gated for _, it in items}
    fields = sorted({c for tree in gates.values() for c in _eval.references(tree).columns if c in frame.columns})
    subset = frame.select(rules.record_id, *(c for c in fields if c != rules.record_id)).gather(rows)
    shown = _eval.branching_truths({f"gate:{k}": v for k, v in gates.items()}, subset, ctx)
    if not shown:
        return masks
    combo = pl.concat([masks.gather(rows), pl.DataFrame(shown), subset.select(fields)], how="horizontal")
    out = []
    for cc, items in gated:
        index = {it.column: b for b, it in enumerate(cc.missing_items) if it.form is None}
        original = pl.col(missing_col(cc.id))
        clear: list[pl.Expr] = []
        add: list[pl.Expr] = []
        for bit, item in items:
            if f"gate:{item.column}" not in shown:
                continue
            has = (original & pl.lit(1 << bit, MASK_DTYPE)) != 0
            truth = pl.col(f"gate:{item.column}")
            deciders = _eval.references(gates[item.column]).columns
            # undecided: replaced by its blank deciders, only when the criterion reads them (else it stays)
            swap = has & truth.is_null() if all(c in index and c in frame.columns for c in deciders) else None
            gone = has & truth.eq_missing(False)
            if swap is not None:
                gone = gone | swap
                add += [(swap & pl.col(c).is_null()).cast(MASK_DTYPE) * pl.lit(1 << index[c], MASK_DTYPE)
                        for c in deciders]
            clear.append(gone.cast(MASK_DTYPE) * pl.lit(1 << bit, MASK_DTYPE))
        if not clear:
            continue
        cleared = original - (original & pl.sum_horizontal(clear))
        new = functools.reduce(operator.or_, add, cleared)  # OR: two fields can share a decider (C-SSRS q2)
        out.append(pl.when(new == 0).then(original).otherwise(new).cast(MASK_DTYPE).alias(missing_col(cc.id)))
    if not out:
        return masks
    updated = combo.select(out)
    # only the masks that changed are rewritten (each rewrite copies a whole column)
    changed = [c for c in updated.columns if (updated.get_column(c) != combo.get_column(c)).any()]
    return masks.with_columns(masks[c].scatter(rows, updated[c]) for c in changed) if changed else masks


def _with_instance_gaps(
    rules: CompiledRules, results: pl.DataFrame, masks: pl.DataFrame, frame: pl.DataFrame, ctx: _eval.Context
) -> pl.DataFrame:
    """Add the bits of instance items (no instance recorded, an instance field blank) to the masks, for the rows
    whose criterion is unknown only: aggregating instances per record is the costly part, and rarely needed.
    `frame` holds the record ids, signature columns and evaluated expressions, in input row order."""
    for cc in rules.criteria:
        inst_bits = [(bit, item) for bit, item in enumerate(cc.missing_items) if item.form is not None]
        if not inst_bits:
            continue
        rows = results.get_column(result_col(cc.id)).eq(Result.UNKNOWN.value).arg_true()
        if rows.len() == 0:
            continue
        subset = frame.select(ctx.record_id).gather(rows)
        gaps = _eval.instance_gaps(cc, subset, ctx)
        if cc.applies is not None:
            applies_unknown = frame[_applies_key(cc)].gather(rows).is_null()
        else:
            applies_unknown = pl.repeat(False, rows.len(), eager=True)
        extra = pl.repeat(0, rows.len(), dtype=MASK_DTYPE, eager=True)
        for bit, item in inst_bits:
            flag = gaps[item.label].fill_null(False)
            wanted = (applies_unknown & (bit in cc.applies_bits)) | (~applies_unknown & (bit in cc.logic_bits))
            extra = extra + (flag & wanted).cast(MASK_DTYPE) * (1 << bit)
        col = missing_col(cc.id)
        current = masks[col].gather(rows)
        masks = masks.with_columns(masks[col].scatter(rows, current | extra))
    return masks


def _has_key(form: str) -> str:
    return f"has:{form}"


def _logic_key(cc: CompiledCriterion) -> str:
    return f"logic:{cc.id}"


def _applies_key(cc: CompiledCriterion) -> str:
    return f"applies:{cc.id}"


def _reference_date(
    rules: CompiledRules, frame: pl.DataFrame, as_of: dt.date, unreadable: pl.Series | None = None
) -> pl.Expr:
    """'today' for each candidate: the reference date field where recorded (the protocol's screening date), else the
    as-of date. Kept a Date so datediff and age_at_date see a real date. A date that is recorded but cannot be
    read (2026-02-30) leaves 'today' unknown: the as-of date would silently measure every window from the wrong
    day, and the coordinator is asked for the date instead. `unreadable`: record ids whose raw date was bad."""
    today = pl.lit(as_of, dtype=pl.Date)
    if rules.reference_field is None:
        return today
    given = pl.col(rules.reference_field)
    col = given.str.to_date("%Y-%m-%d", strict=False) if frame.schema[rules.reference_field] == pl.String else given
    parsed = col.cast(pl.Date, strict=False)
    bad = given.is_not_null() & parsed.is_null()
    if unreadable is not None and unreadable.len():
        bad = bad | pl.col(rules.record_id).cast(pl.String).is_in(unreadable.implode())
    return pl.when(bad).then(None).otherwise(pl.coalesce(parsed, today))


def _unreadable_reference(intake: Any, field_name: str | None) -> pl.Series | None:
    """Record ids whose reference date was written in the input but is missing from the record: it did not read as
    a date, or the record's rows disagree on it."""
    raw = getattr(intake, "raw", None)
    if field_name is None or raw is None or field_name not in raw.columns:
        return None
    # Not shortcut by "every written date was read": a date whose rows disagree was read, and is missing all the
    # same (the result then depended on whether another candidate had an unreadable date).
    rid = intake.record_id
    records = intake.records
    blank = pl.DataFrame([records.get_column(rid), records.get_column(field_name)]).filter(pl.col(field_name).is_null())
    if blank.height == 0:
        return None
    blank = blank.select(pl.col(rid).cast(pl.String))
    # The columns read, before any filter: filtering the whole raw frame (every column of every row of a flat
    # export, instances included) copied it all, half a second on a million candidates.
    keep = [c for c in dict.fromkeys((rid, field_name, REPEAT_INSTRUMENT, EVENT)) if c in raw.columns]
    wanted = [pl.col(field_name).is_not_null()]
    if REPEAT_INSTRUMENT in keep:
        wanted.append(pl.col(REPEAT_INSTRUMENT).is_null())
    if getattr(intake, "event", None) and EVENT in keep:
        wanted.append(pl.col(EVENT) == intake.event)
    rows = pl.DataFrame([raw.get_column(c) for c in keep]).filter(wanted)
    return rows.select(pl.col(rid).cast(pl.String)).join(blank, on=rid, how="semi").to_series()


def _as_polars(frame: Any) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    try:
        return pl.from_pandas(frame)
    except (TypeError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot screen a {type(frame).__name__}: give a polars or pandas frame") from exc


def _with_missing_columns(frame: pl.DataFrame, rules: CompiledRules) -> pl.DataFrame:
    have = set(frame.columns)
    absent = [c for c in rules.columns() if c not in have]
    if not absent:
        return frame
    # Series, not literal expressions: no query to plan (a fraction of a millisecond per candidate)
    return frame.hstack([_constant(c, _eval.dtype_of(rules.specs, c), None, frame.height) for c in absent])


def _constant(name: str, dtype: Any, value: Any, height: int) -> pl.Series:
    if height <= SMALL_ROWS:
        # built from a list: extend_constant runs a query (about 0.2 ms), a dozen per candidate screened alone
        return pl.Series(name, [value] * height, dtype=dtype)
    return pl.Series(name, dtype=dtype).extend_constant(value, height)


def _empty_instances(rules: CompiledRules, form: str) -> pl.DataFrame:
    cols = {rules.record_id: pl.String, "redcap_repeat_instance": pl.Int64}
    for cc in rules.criteria:
        for item in cc.missing_items:
            if item.form == form and item.column:
                cols[item.column] = _eval.dtype_of(rules.specs, item.column)
    return pl.DataFrame(schema=cols)


def _result_expr(cc: CompiledCriterion) -> pl.Expr:
    """The result code of one criterion, over the frame of evaluated expressions. Arithmetic on small integers
    rather than when/then chains: a million rows times twenty criteria makes the difference measurable."""
    # true -> 0 (met), false -> 1 (not met), null -> 2 (unknown)
    decided = (~pl.col(_logic_key(cc))).cast(RESULT_DTYPE).fill_null(Result.UNKNOWN.value)
    undecidable = []
    if cc.signature_columns:
        undecidable += [pl.col(c).is_null() for c in cc.signature_columns]
    if cc.requires_instances:
        undecidable += [~pl.col(_has_key(form)) for form in cc.requires_instances]
    if undecidable:
        decided = (
            pl.when(pl.any_horizontal(undecidable)).then(pl.lit(Result.UNKNOWN.value, RESULT_DTYPE)).otherwise(decided)
        )
    if cc.applies is not None:
        # applies true -> decided, false -> 3 (not applicable), null -> 2 (unknown)
        a = pl.col(_applies_key(cc)).cast(RESULT_DTYPE)
        decided = (decided * a + pl.lit(Result.NOT_APPLICABLE.value, RESULT_DTYPE) * (1 - a)).fill_null(
            Result.UNKNOWN.value
        )
    return decided.cast(RESULT_DTYPE)


def _missing_mask(cc: CompiledCriterion, bits: frozenset[int]) -> pl.Expr:
    """One bit per missing item that is absent for the candidate. Every referenced field that is blank is named
    (not only the ones that would flip the result): that is the list a coordinator collects."""
    terms: list[pl.Expr] = []
    for bit, item in enumerate(cc.missing_items):
        if bit not in bits or item.form is not None:
            continue
        flag = pl.col(item.column).is_null()
        if item.via is not None:  # an input is named only while its calc is blank
            flag = flag & pl.col(item.via).is_null()
        elif item.inputs:  # a blank calc is named only when none of its inputs is blank
            flag = flag & pl.all_horizontal([pl.col(x).is_not_null() for x in item.inputs])
        terms.append(flag.fill_null(False).cast(MASK_DTYPE) * pl.lit(1 << bit, dtype=MASK_DTYPE))
    if not terms:
        return pl.lit(0, dtype=MASK_DTYPE)
    return pl.sum_horizontal(terms)


_BITS = 62  # deciding criteria per integer: 1 << 62 is still a plain Int64 literal for polars


def _disposition_exprs(crits: Sequence[CompiledCriterion]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    chunks = [crits[at : at + _BITS] for at in range(0, len(crits), _BITS)]
    sums = []
    for k, chunk in enumerate(chunks):
        bits = [
            (pl.col(result_col(cc.id)) == deciding_result(cc.kind).value).cast(pl.UInt64) * (1 << i)
            for i, cc in enumerate(chunk)
        ]
        sums.append(pl.sum_horizontal(bits).alias(f"__tk_f{k}"))
    unknown = pl.any_horizontal([pl.col(result_col(cc.id)) == Result.UNKNOWN.value for cc in crits])
    first = [*sums, unknown.alias("__tk_u")]
    enum = pl.Enum([d.value for d in Disposition])
    failed = pl.any_horizontal([pl.col(f"__tk_f{k}") > 0 for k in range(len(chunks))])
    primary = [
        (pl.col(f"__tk_f{k}") & (~pl.col(f"__tk_f{k}") + 1))  # two's complement: only the lowest set bit is left
        .replace_strict({1 << i: cc.id for i, cc in enumerate(chunk)}, default=None, return_dtype=pl.String)
        for k, chunk in enumerate(chunks)
    ]
    second = [
        pl.when(failed)
        .then(pl.lit(Disposition.INELIGIBLE.value, enum))
        .when(pl.col("__tk_u"))
        .then(pl.lit(Disposition.PENDING.value, enum))
        .otherwise(pl.lit(Disposition.ELIGIBLE.value, enum))
        .alias(DISPOSITION_COL),
        (primary[0] if len(primary) == 1 else pl.coalesce(primary)).alias(PRIMARY_COL),
    ]
    return first, second


def decode_mask(cc: CompiledCriterion, mask: int) -> tuple[str, ...]:
    return tuple(item.label for bit, item in enumerate(cc.missing_items) if mask >> bit & 1)


def select_candidates(screening: Screening, record_ids: Sequence[str]) -> Screening:
    """The same screening narrowed to some candidates (for explaining a few out of many)."""
    rid = screening.record_id
    ids = pl.Series(rid, list(record_ids), dtype=pl.String)
    wanted = pl.col(rid).cast(pl.String).is_in(ids.implode())
    frame = screening.frame.filter(wanted)
    data = screening.data.filter(wanted)
    inst = {k: v.filter(wanted) for k, v in screening.instances.items()}
    problems = screening.problems
    if problems is not None:
        problems = problems.filter(pl.col("record").is_in(ids.implode()))
    return Screening(screening.rules, screening.as_of, frame, data, inst, screening.notes, problems)
