"""From the result frame to what people read: per-candidate checklists with values and missing fields, the
summary (counts by disposition and reason, missing fields ranked), and the CONSORT-style funnel."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from trialkit.screening import _eval
from trialkit.screening.engine import (
    DISPOSITION_COL,
    PRIMARY_COL,
    CompiledCriterion,
    Screening,
    decode_mask,
    missing_col,
    result_col,
)
from trialkit.screening.outcomes import (
    DISPOSITIONS,
    CandidateResult,
    CriterionOutcome,
    Disposition,
    Result,
    deciding_result,
)


def jsonable(value: Any) -> Any:
    """A cell as JSON: dates as ISO text, NaN as null, whole floats as integers (a MADRS total of 20.0 reads 20;
    the evaluator computes in floats, REDCap shows whole numbers without a decimal point)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _value_columns(screening: Screening) -> dict[str, pl.Series]:
    """Every value the checklists show, evaluated column-wise once for all candidates being explained."""
    ctx = _eval.Context(
        as_of=screening.as_of,
        specs=screening.rules.specs,
        instances=screening.instances,
        record_id=screening.record_id,
    )
    out: dict[str, pl.Series] = {}
    data = screening.data
    terms: dict[str, object] = {}
    for cc in screening.rules.criteria:
        for col in cc.columns:
            if col not in out and col in data.columns:
                out[col] = data[col]
        for label, node in cc.value_terms:
            terms.setdefault(f"={label}", node)
    if _eval.REFERENCE_COLUMN in data.columns:
        out["today"] = data[_eval.REFERENCE_COLUMN]
    if terms and data.height:
        evaluated = _eval.evaluate_many(terms, data, ctx)
        for key in terms:
            out[key] = evaluated[key]
    for cc in screening.rules.criteria:
        for label, node in cc.value_terms:
            key = f"~{label}"
            if key not in out:
                detail = _instance_detail(node, screening, ctx)
                if detail is not None:
                    out[key] = detail
    return out


_CONDITION_ARG = {
    "count_instances": 1,
    "any_instance": 1,
    "count_distinct_instances": 2,
    "sum_instances": 2,
    "min_instances": 2,
    "max_instances": 2,
}


def _instance_detail(node: Any, screening: Screening, ctx: _eval.Context) -> pl.Series | None:
    """For an aggregate over instances with a condition: per candidate, each instance and whether it counted, e.g.
    '#1 sertraline: yes; #2 bupropion: no'. Lets a coordinator see which trials decided I4."""
    from trialkit.logic import ast

    if not isinstance(node, ast.Call) or node.name not in _CONDITION_ARG:
        return None
    at = _CONDITION_ARG[node.name]
    if len(node.args) <= at or not isinstance(node.args[0], ast.FormName):
        return None
    form = node.args[0].name
    table = screening.instances.get(form)
    rid = screening.record_id
    data = screening.data
    if table is None or data.height == 0:
        return None
    ids = data.select(pl.col(rid).cast(pl.String), pl.col(_eval.REFERENCE_COLUMN))
    rows = table.with_columns(pl.col(rid).cast(pl.String)).join(ids, on=rid, how="inner")
    if rows.height == 0:
        return pl.Series([None] * data.height, dtype=pl.String)
    # the condition per instance and, for a distinct count, what is counted (the drug), named in the detail
    cond = node.args[at]
    exprs = {"c": cond}
    if node.name == "count_distinct_instances":
        exprs["v"] = node.args[1]
    # each part of an 'and' condition on its own, and the two sides of a comparison, to say why an instance did
    # not count ("atrq_duration 4 < 6")
    conjuncts = cond.operands if isinstance(cond, ast.BoolOp) and cond.op == "and" else (cond,)
    for i, part in enumerate(conjuncts):
        exprs[f"k{i}"] = part
        if isinstance(part, ast.Binary) and part.op in _NEGATED:
            exprs[f"l{i}"], exprs[f"r{i}"] = part.left, part.right
    evaluated = _eval.evaluate_many(
        exprs,
        rows.with_row_index("__row").select(pl.col("__row").cast(pl.String), pl.all().exclude("__row")),
        _eval.Context(ctx.as_of, ctx.specs, {}, "__row"),
    )
    truth = evaluated["c"]
    words = {True: "yes", False: "no", None: "unknown"}
    inst = (
        rows["redcap_repeat_instance"].to_list() if "redcap_repeat_instance" in rows.columns else [None] * rows.height
    )
    names = [_instance_name(v) for v in evaluated["v"].to_list()] if "v" in exprs else [None] * rows.height
    parts: dict[str, list[str]] = {}
    lists = {k: evaluated[k].to_list() for k in exprs}
    unusable = _unusable_cells(screening, form)
    for j, (rec, n, nm, t) in enumerate(zip(rows[rid].to_list(), inst, names, truth.to_list(), strict=True)):
        head = f"#{n}" if n is not None else "#?"
        text = f"{head} {nm}: {words[t]}" if nm is not None else f"{head}: {words[t]}"
        if t is not True:
            why = _why_not(conjuncts, lists, j, want=None if t is None else False)
            if why.endswith(" blank") and (rec, n, why.removesuffix(" blank")) in unusable:
                why = f"{why.removesuffix(' blank')} {UNUSABLE}"  # filled in, but not usable: not blank
            if why:
                text += f" ({why})"
        parts.setdefault(rec, []).append(text)
    return pl.Series([("; ".join(parts[r]) if r in parts else None) for r in ids[rid].to_list()], dtype=pl.String)


#: a field whose value could not be used, where it would otherwise read as blank (it is not empty)
UNUSABLE = "not usable, to correct"


def _unusable_cells(screening: Screening, form: str) -> set[tuple[str, Any, str]]:
    """(record, instance, field) of the instances of `form` whose value could not be used (few: a set is fine)."""
    problems = screening.problems
    if problems is None or problems.height == 0:
        return set()
    rows = problems.filter((pl.col("instrument") == form) & (pl.col("check") != "input"))
    return set(rows.select(pl.col("record").cast(pl.String), "instance", "field").iter_rows())


_NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "=": "<>", "<>": "="}


def _why_not(conjuncts: tuple[Any, ...], values: dict[str, list[Any]], j: int, want: bool | None) -> str:
    """The first part of the condition that is false (or, for an unknown instance, blank) for instance j, in the
    rule file's terms: 'atrq_duration 4 < 6', 'atrq_current_episode 0 <> 1', 'atrq_improvement blank'."""
    from trialkit.logic import ast

    for i, part in enumerate(conjuncts):
        if values[f"k{i}"][j] is not want:
            continue
        if f"l{i}" in values:
            left, right = values[f"l{i}"][j], values[f"r{i}"][j]
            name = part.left.name if isinstance(part.left, ast.FieldRef) else "value"
            if left is None or right is None:
                blank = name if left is None else (part.right.name if isinstance(part.right, ast.FieldRef) else "")
                return f"{blank} blank".strip()
            if want is False:
                return f"{name} {jsonable(left)} {_NEGATED[part.op]} {jsonable(right)}"
        return "unknown" if want is None else "condition not met"
    return ""


def _instance_name(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


MASK = "***"


def candidates(screening: Screening) -> Iterator[CandidateResult]:
    """One `CandidateResult` per candidate, in input order. Meant for reports on hundreds or thousands of rows;
    for a million, summarise the frame instead (`summarise`)."""
    frame = screening.frame
    rid = screening.record_id
    values = _value_columns(screening)
    # Align the data rows with the result rows (both keep input order; a filter may have narrowed one).
    data_ids = screening.data[rid].cast(pl.String).to_list()
    pos = {r: i for i, r in enumerate(data_ids)}
    # each cell made JSON-able once, not once per criterion that shows it (text cells already are)
    value_lists = {
        k: v.to_list() if k.startswith("~") or v.dtype == pl.String else [jsonable(x) for x in v.to_list()]
        for k, v in values.items()
    }
    labels = [r.label for r in sorted(Result)]
    crits = screening.rules.criteria
    masked = screening.rules.identifiers
    problems = _problems_by_record(screening)
    # a value computed from an identifier (year of birth, initials, a phone prefix) is one too
    private = {(cc.id, label) for cc in crits for label, node in cc.value_terms if masked and _reads_any(node, masked)}
    # per criterion, what the loop below asks of it for each candidate (column names, the kind's text)
    plan = [(cc, result_col(cc.id), missing_col(cc.id), cc.kind.value, cc.criterion.text) for cc in crits]
    rows = frame.to_dicts()
    for row in rows:
        record = row[rid]
        i = pos.get(record)
        outcomes = []
        record_problems = problems.get(record, {})
        for cc, rcol, mcol, kind, text in plan:
            result = labels[row[rcol]]
            mask = row[mcol]
            missing = decode_mask(cc, mask) if mask else ()
            to_correct: tuple[str, ...] = ()
            if record_problems:
                missing, to_correct = _split_unusable(missing, record_problems)
            vals: dict[str, Any] = {}
            if i is not None:
                if cc.uses_today and "today" in value_lists:
                    vals["today"] = value_lists["today"][i]
                for col in cc.columns:
                    if col in value_lists:
                        value = value_lists[col][i]
                        # a report may be printed or mailed: PHI shows only whether it is there
                        vals[col] = MASK if col in masked and value is not None else value
                for label, node in cc.value_terms:
                    hide = (cc.id, label) in private
                    value = value_lists[f"={label}"][i]
                    vals[label] = MASK if hide and value is not None else value
                    if f"~{label}" in value_lists:
                        detail = value_lists[f"~{label}"][i]
                        vals[f"{node.args[0].name} instances counted"] = MASK if hide and detail is not None else detail
            outcomes.append(
                CriterionOutcome(cc.id, kind, result, missing, vals, text, to_correct)
            )
        reasons = tuple(o.id for o in outcomes if o.decides_ineligible)
        disposition = str(row[DISPOSITION_COL])
        needed: dict[str, None] = {}
        correct: dict[str, None] = {}
        if disposition == Disposition.PENDING.value:
            for o in outcomes:
                if o.result == "unknown":
                    for m in o.missing:
                        needed.setdefault(m, None)
                    for m in o.to_correct:
                        correct.setdefault(m, None)
        yield CandidateResult(
            record, disposition, row[PRIMARY_COL], reasons, tuple(needed), tuple(outcomes), tuple(correct)
        )


def _reads_any(node: Any, fields: frozenset[str]) -> bool:
    refs = _eval.references(node)
    read = set(refs.columns).union(*refs.instance_columns.values()) if refs.instance_columns else set(refs.columns)
    return any(c.split(":", 1)[-1].split("___", 1)[0] in fields for c in read)


def _problems_by_record(screening: Screening) -> dict[str, dict[str, list[str]]]:
    """record -> still-needed label -> what to correct, for the candidates being explained. Labels as the masks
    name them: `field` for a record field (a checkbox by its field name), `form.field` for an instance field."""
    problems = screening.problems
    if problems is None or problems.height == 0:
        return {}
    ids = screening.frame.get_column(screening.record_id).cast(pl.String)
    rows = problems.filter(pl.col("record").is_in(ids.implode()) & (pl.col("check") != "input"))
    out: dict[str, dict[str, list[str]]] = {}
    specs = screening.rules.specs
    for record, event, form, instance, column, problem in rows.select(
        "record", "event", "instrument", "instance", "field", "problem"
    ).iter_rows():
        name = column if column in specs else column.split("___", 1)[0]
        where = [f"{form} #{instance}"] if form else []
        if event:
            where.append(event)
        place = f" ({', '.join(where)})" if form else ""
        label = f"{form}.{name}" if form else name
        out.setdefault(record, {}).setdefault(label, []).append(f"{name}{place}: {problem}")
    return out


def _unusable_records(screening: Screening) -> dict[str, pl.Series]:
    """Still-needed label (as `_problems_by_record` names it) -> the records whose value for it could not be used.
    Column-wise: a million candidates' problems are grouped, not walked."""
    problems = screening.problems
    if problems is None or problems.height == 0:
        return {}
    field = pl.col("field")
    name = pl.when(field.is_in(list(screening.rules.specs))).then(field).otherwise(field.str.split("___").list.first())
    label = pl.when(pl.col("instrument").is_not_null()).then(pl.col("instrument") + "." + name).otherwise(name)
    grouped = (
        problems.filter(pl.col("check") != "input")
        .group_by(label.alias("label"))
        .agg(pl.col("record").cast(pl.String).unique())
    )
    return dict(zip(grouped.get_column("label").to_list(), grouped.get_column("record"), strict=True))


def _split_unusable(
    missing: tuple[str, ...], problems: dict[str, list[str]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Still-needed labels that are blank because the value written could not be used move to 'to correct',
    with the reason: a coordinator must fix a typo, not collect the field again."""
    blank = tuple(m for m in missing if m not in problems)
    fix = tuple(text for m in missing if m in problems for text in problems[m])
    return blank, fix


@dataclass(frozen=True)
class MissingRank:
    field: str
    pending: int  # pending candidates that still need it
    sole: int  # pending candidates for whom it is the only thing still needed
    criteria: tuple[str, ...]  # criteria that read it


@dataclass(frozen=True)
class Summary:
    total: int
    by_disposition: dict[str, int]
    by_primary_reason: dict[str, int]  # ineligible candidates by primary reason, protocol order
    by_reason: dict[str, int]  # every deciding criterion counted (a candidate may count under several)
    by_result: dict[str, dict[str, int]]  # criterion -> result label -> count
    missing: tuple[MissingRank, ...]
    missing_forms: tuple[tuple[str, int], ...] = ()  # (instrument, pending candidates needing something from it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_disposition": dict(self.by_disposition),
            # CONSORT counts each excluded candidate once, under its primary reason; every reason is counted too.
            "by_reason": dict(self.by_primary_reason),
            "by_any_reason": dict(self.by_reason),
            "by_criterion": {k: dict(v) for k, v in self.by_result.items()},
            "missing_fields": [
                {
                    "field": m.field,
                    "pending_candidates": m.pending,
                    "only_missing_for": m.sole,
                    "criteria": list(m.criteria),
                }
                for m in self.missing
            ],
            "missing_by_form": [{"form": f, "pending_candidates": n} for f, n in self.missing_forms],
        }


def summarise(screening: Screening) -> Summary:
    """Counts and the missing-field ranking, column-wise (fine for a million candidates)."""
    frame = screening.frame
    crits = screening.rules.criteria
    ids = [cc.id for cc in crits]
    disp_counts = dict.fromkeys(DISPOSITIONS, 0)
    for d, n in frame.group_by(DISPOSITION_COL).len().iter_rows():
        disp_counts[str(d)] = n
    primary = dict.fromkeys(ids, 0)
    for r, n in frame.filter(pl.col(PRIMARY_COL).is_not_null()).group_by(PRIMARY_COL).len().iter_rows():
        primary[r] = n
    by_reason: dict[str, int] = {}
    by_result: dict[str, dict[str, int]] = {}
    if crits:
        # One pass of column sums: counts per criterion and result, and how often each criterion decides.
        exprs = [
            (pl.col(result_col(cc.id)) == r.value).sum().alias(f"{cc.id}|{r.label}") for cc in crits for r in Result
        ]
        counts = frame.select(exprs).row(0, named=True)
        for cc in crits:
            by_result[cc.id] = {r.label: int(counts[f"{cc.id}|{r.label}"]) for r in Result}
            by_reason[cc.id] = by_result[cc.id][deciding_result(cc.kind).label]
    missing, forms = _missing_ranking(screening)
    return Summary(
        total=frame.height,
        by_disposition=disp_counts,
        by_primary_reason={k: v for k, v in primary.items() if v},
        by_reason={k: v for k, v in by_reason.items() if v},  # protocol order
        by_result=by_result,
        missing=missing,
        missing_forms=forms,
    )


def _missing_ranking(screening: Screening) -> tuple[tuple[MissingRank, ...], tuple[tuple[str, int], ...]]:
    """Missing fields ranked by the pending candidates that need them, and the same by instrument (a coordinator
    schedules 'the MADRS', not ten items)."""
    crits = screening.rules.criteria
    specs = screening.rules.specs
    holders: dict[str, list[tuple[CompiledCriterion, int]]] = {}
    form_of: dict[str, str] = {}
    for cc in crits:
        for bit, item in enumerate(cc.missing_items):
            holders.setdefault(item.label, []).append((cc, bit))
            # the reference date's item reads an internal column: its label names the field (and so the form)
            spec = (specs.get(item.column or "") or specs.get(item.label)) if item.form is None else None
            form_of[item.label] = item.form or getattr(spec, "form", None) or "other"
    if not holders:
        return (), ()
    pending = screening.frame.filter(pl.col(DISPOSITION_COL) == Disposition.PENDING.value)
    if pending.height == 0:
        return (), ()
    flags = {
        label: pl.any_horizontal(
            [(pl.col(missing_col(cc.id)) & pl.lit(1 << bit, dtype=pl.UInt64)) != 0 for cc, bit in places]
        )
        for label, places in holders.items()
    }
    labels = list(flags)
    named = pending.select([flags[lab].alias(f"f{i}") for i, lab in enumerate(labels)])
    # a field whose value could not be used is to correct, not still needed (as in each candidate's lists)
    unusable = _unusable_records(screening)
    if unusable:
        ids = pending.get_column(screening.record_id).cast(pl.String)
        named = named.with_columns(
            pl.col(f"f{i}") & ~ids.is_in(unusable[lab].implode()) for i, lab in enumerate(labels) if lab in unusable
        )
    n_missing = named.select(pl.sum_horizontal(pl.all().cast(pl.UInt32)).alias("n"))["n"]
    stats = (
        named.with_columns(n_missing.alias("__n"))
        .select(
            [pl.col(f"f{i}").sum().alias(f"p{i}") for i in range(len(labels))]
            + [(pl.col(f"f{i}") & (pl.col("__n") == 1)).sum().alias(f"s{i}") for i in range(len(labels))]
        )
        .row(0, named=True)
    )
    ranks = [
        MissingRank(lab, int(stats[f"p{i}"]), int(stats[f"s{i}"]), tuple(cc.id for cc, _ in holders[lab]))
        for i, lab in enumerate(labels)
        if stats[f"p{i}"]
    ]
    order = {lab: i for i, lab in enumerate(labels)}
    ranks.sort(key=lambda m: (-m.pending, -m.sole, order[m.field]))
    by_form: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_form.setdefault(form_of[lab], []).append(i)
    form_counts = named.select(
        [pl.any_horizontal([pl.col(f"f{i}") for i in idx]).sum().alias(form) for form, idx in by_form.items()]
    ).row(0, named=True)
    forms = sorted(((f, int(n)) for f, n in form_counts.items() if n), key=lambda x: (-x[1], list(by_form).index(x[0])))
    return tuple(ranks), tuple(forms)


@dataclass(frozen=True)
class FunnelBox:
    label: str
    n: int
    items: tuple[tuple[str, str, int], ...] = ()  # (criterion id, text, count)


@dataclass(frozen=True)
class Funnel:
    assessed: FunnelBox
    excluded: FunnelBox
    pending: FunnelBox
    eligible: FunnelBox


def funnel(screening: Screening, summary: Summary | None = None) -> Funnel:
    """CONSORT enrolment boxes: assessed -> excluded (by primary reason; exclusions count under 'not meeting
    criteria' as CONSORT does), pending data, eligible."""
    s = summary or summarise(screening)
    texts = {cc.id: cc.criterion.text for cc in screening.rules.criteria}
    items = tuple((cid, texts.get(cid, ""), n) for cid, n in s.by_primary_reason.items())
    return Funnel(
        assessed=FunnelBox("Assessed for eligibility", s.total),
        excluded=FunnelBox("Excluded: not meeting eligibility criteria", s.by_disposition["ineligible"], items),
        pending=FunnelBox("Pending: data still needed", s.by_disposition["pending"]),
        eligible=FunnelBox("Eligible", s.by_disposition["eligible"]),
    )
