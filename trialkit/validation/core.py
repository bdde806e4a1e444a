"""Validate intake data against a study: checks generated from the instruments, declared as a pandera schema
(trialkit.validation.engines.pandera_schema) and reported all at once (pandera's lazy failure table), mapped to
a findings table. By default the checks run in one polars select instead of pandera's check-by-check executor;
both give the same failure table (engines), and `engine="pandera"` runs pandera's own.

The schema runs over the raw text of every input row (so a finding shows the value as written) beside helper
columns computed once, vectorised: the typed value, whether the row carries the field's form, whether the
form was started, whether branching logic shows the field and what a calculation gives (trialkit.logic in
REDCap mode). Each check is a polars expression; no Python code runs per row.

Check ids (stable; users filter on them): type, format, range, choice, required, hidden_value, calc_mismatch,
calc_missing, misplaced, record_id, duplicate_row, event, repeat_instrument, repeat_instance, unknown_column,
logic, shape.

Choices made where REDCap leaves room:
- `required` applies where branching logic shows the field and the row holds some data of its form (a form
  nobody started is not a list of missing required fields; screening reports what is still needed).
  When a field's branching logic cannot be evaluated, a `logic` warning is given and no required/hidden check
  is guessed for that field.
- min/max violations are errors (REDCap's form only warns unless @FORCE-MINMAX; for trial data an impossible
  blood pressure must not pass a nightly check). `today`/`now` bounds use `as_of`.
- Project missing-data codes are accepted in any field and count as answered.
- A stored calculated value agrees when it equals the recomputed value rounded to the stored number of
  decimals (24 or 24.4 for 24.39...); blank while the calculation gives a value is a warning.
- Values on rows where their form does not belong (another event, or a repeating form's field on a
  non-repeating row) are errors, as REDCap refuses them on import; unchecked checkboxes ("0") and grey form
  status ("0") there are not.
- Columns that are not the study's (nor REDCap's own) are errors, as REDCap refuses them on import.
- Identifier (PHI) values never enter the findings: `value` shows *** and messages never quote values.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import polars as pl

from trialkit.definitions.model import FieldType, Study
from trialkit.definitions.privacy import identifying_fields
from trialkit.errors import Severity
from trialkit.records import EVENT, REPEAT_INSTANCE, REPEAT_INSTRUMENT, ROW, Column, IntakeData, study_columns
from trialkit.records.cellchecks import cell_checks, listing
from trialkit.records.convert import DAG, SURVEY_ID
from trialkit.records.spreadsheet import LOST_ZEROS, lost_zeros
from trialkit.validation.context import (
    EVT,
    INST,
    RI,
    RID,
    Context,
    build_context,
    calc_name,
    scope_name,
    shown_name,
    started_name,
    typed_name,
)
from trialkit.validation.engines import pandera_failures, polars_failures
from trialkit.validation.findings import COLUMNS, MASK, Findings, empty_frame, file_finding

ERROR = Severity.ERROR.value
WARNING = Severity.WARNING.value


@dataclass(frozen=True)
class CheckInfo:
    """What a failed pandera check means for the findings table."""

    check: str
    field: str
    severity: str
    message: str
    mask: bool = False  # the column holds an identifier: never show its values
    detail: str | None = None  # helper column whose value is appended to the message


@dataclass
class _Plan:
    """The checks, per column in declaration order: what the pandera schema declares (engines.pandera_schema)."""

    checks: dict[str, list[tuple[str, pl.Expr]]]
    infos: dict[tuple[str, int], CheckInfo]

    def add(self, column: str, expr: pl.Expr, info: CheckInfo) -> None:
        """`expr` is True where the row passes (null counts as a pass)."""
        checks = self.checks.setdefault(column, [])
        self.infos[(column, len(checks))] = info
        checks.append((info.check, expr))


#: how the plan is run: "polars" (one select for all checks) or "pandera" (pandera's executor, check by check);
#: both give the same failure table (trialkit.validation.engines)
ENGINES = {"polars": polars_failures, "pandera": pandera_failures}


# ---- the public entry point ------------------------------------------------------------------------------
def validate(
    intake: IntakeData,
    study: Study | None = None,
    *,
    as_of: _dt.date | None = None,
    engine: str = "polars",
    id_width: int | None = None,
) -> Findings:
    """Check `intake` against `study` (default: the study it was read with). `as_of` is "today" for
    `today`/`now` ranges and date functions in logic (default: the current date; pass it for reproducible
    runs). `engine`: "polars" or "pandera", see ENGINES (same findings). `id_width`: when `intake` is one part
    of a file (chunked validation), the width of the whole file's zero-padded record ids (spreadsheet
    .zero_padded_width), so that a lost-zeros finding does not depend on the part. Returns every finding; never
    raises for bad data."""
    run = ENGINES[engine]
    # read with keep_types (screening's read), or for another study: every cell's REDCap text, rows numbered as read
    intake = intake.as_text(study)
    study = intake.study
    as_of = as_of or _dt.date.today()
    ctx = build_context(intake, as_of=as_of)
    plan = _plan(intake, ctx, as_of, id_width)
    work = intake.raw.hstack(ctx.frame.drop(ROW))
    helpers = [c for c in ctx.frame.columns if c != ROW]
    data_columns = {c.name for c in study_columns(study)}
    declared = [
        name
        for name in intake.raw.columns
        if name in plan.checks or name in data_columns or _known_column(name, study)
    ] + helpers
    failures = run(plan.checks, declared, f"study {study.name}", work)
    frame = _findings_frame(failures, plan, work, intake, ctx)
    return Findings(frame=frame, source=intake.source, rows_checked=intake.raw.height, as_of=as_of)


# ---- which columns exist ------------------------------------------------------------------------------------
def _known_column(name: str, study: Study) -> bool:
    """REDCap's own columns that a flat export of this study may carry besides its data columns."""
    if name == ROW or name in (DAG, SURVEY_ID):
        return True
    if name == EVENT:
        return study.longitudinal
    if name in (REPEAT_INSTRUMENT, REPEAT_INSTANCE):
        return bool(study.repeating_pairs)
    if name.endswith("_timestamp"):  # survey pseudo-field, ignored by REDCap on import
        return any(name == f"{inst.name}_timestamp" for inst in study.instruments)
    return False


# ---- building the checks ------------------------------------------------------------------------------------
def _plan(intake: IntakeData, ctx: Context, as_of: _dt.date, id_width: int | None = None) -> _Plan:
    study = intake.study
    plan = _Plan(checks={}, infos={})
    present = set(intake.raw.columns)
    rid = study.record_id_field
    missing_codes = [c.code for c in study.missing_codes]
    private = identifying_fields(study)  # values never shown: identifiers and calcs derived from them
    _meta_checks(plan, study, present, id_width)
    checkbox_groups: dict[str, list[Column]] = {}
    for col in study_columns(study):
        if col.kind == "checkbox" and col.field is not None:
            checkbox_groups.setdefault(col.field.name, []).append(col)
    for col in study_columns(study):
        if col.name not in present or col.name == rid:
            continue
        _column_checks(plan, col, ctx, as_of, missing_codes, private)
    for name, cols in checkbox_groups.items():
        first = next((c for c in cols if c.name in present), None)
        if first is None:
            continue
        _checkbox_required(plan, name, cols, first, ctx, present)
    return plan


def _meta_checks(plan: _Plan, study: Study, present: set[str], id_width: int | None = None) -> None:
    rid = study.record_id_field
    plan.add(rid, pl.col(rid).is_not_null(), CheckInfo("record_id", rid, ERROR, "record id is blank"))
    plan.add(rid, ~lost_zeros(pl.col(rid), id_width), CheckInfo("record_id", rid, ERROR, LOST_ZEROS))
    key = pl.struct([pl.col(RID), pl.col(EVT), pl.col(RI), pl.col(INST)])
    plan.add(
        rid,
        pl.col(RID).is_null() | ~key.is_duplicated(),
        CheckInfo("duplicate_row", rid, ERROR, "duplicate row: the same record, event and instance appear again"),
    )
    if study.longitudinal and EVENT in present:
        events = [e.name for e in study.events]
        plan.add(EVENT, pl.col(EVENT).is_not_null(), CheckInfo("event", EVENT, ERROR, "event name is blank"))
        plan.add(
            EVENT,
            pl.col(EVENT).is_null() | pl.col(EVENT).is_in(events),
            CheckInfo("event", EVENT, ERROR, f"not an event of the study ({listing(events)})"),
        )
    if REPEAT_INSTRUMENT in present and study.repeating_pairs:
        if study.longitudinal:
            pairs = [f"{e}\x1f{f}" for e, f in study.repeating_pairs]
            ok = pl.concat_str([pl.col(EVT).fill_null(""), pl.col(REPEAT_INSTRUMENT)], separator="\x1f").is_in(pairs)
            where = "a repeating instrument on this event"
        else:
            ok = pl.col(REPEAT_INSTRUMENT).is_in([f for _, f in study.repeating_pairs])
            where = "a repeating instrument of the study"
        plan.add(
            REPEAT_INSTRUMENT,
            pl.col(REPEAT_INSTRUMENT).is_null() | ok,
            CheckInfo("repeat_instrument", REPEAT_INSTRUMENT, ERROR, f"not {where}"),
        )
    if REPEAT_INSTANCE in present and study.repeating_pairs:
        raw = pl.col(REPEAT_INSTANCE)
        plan.add(
            REPEAT_INSTANCE,
            raw.is_null() | raw.str.contains(r"^[1-9][0-9]*$"),
            CheckInfo("repeat_instance", REPEAT_INSTANCE, ERROR, "repeat instance must be a whole number >= 1"),
        )
        plan.add(
            REPEAT_INSTANCE,
            ~(pl.col(RI).is_not_null() & raw.is_null()),
            CheckInfo("repeat_instance", REPEAT_INSTANCE, ERROR, "repeat instance is blank on a repeating row"),
        )
        plan.add(
            REPEAT_INSTANCE,
            ~(pl.col(RI).is_null() & raw.is_not_null()),
            CheckInfo(
                "repeat_instance", REPEAT_INSTANCE, ERROR, "repeat instance given without a repeating instrument"
            ),
        )


def _column_checks(
    plan: _Plan, col: Column, ctx: Context, as_of: _dt.date, missing_codes: list[str], private: frozenset[str]
) -> None:
    raw = pl.col(col.name)
    name = col.name
    mask = col.field_name in private
    scope = pl.col(scope_name(col.form))
    typed = pl.col(typed_name(name))
    # The same checks decide what screening may read (trialkit.records.cellchecks).
    for check in cell_checks(col, raw=raw, typed=typed, scope=scope, as_of=as_of, missing_codes=tuple(missing_codes)):
        plan.add(name, check.ok, CheckInfo(check.check, name, ERROR, check.message, mask=mask))
    field = col.field
    if field is None:
        return
    started = pl.col(started_name(col.form))
    has_shown = field.name in ctx.shown
    if field.show_if.strip() and not has_shown:
        return  # branching logic could not be evaluated (reported as a 'logic' finding): no guessing
    shown = pl.col(shown_name(field.name)).fill_null(True) if has_shown else pl.lit(True)
    if field.required and col.kind != "checkbox":
        plan.add(
            name,
            ~(scope & started & shown & raw.is_null()),
            CheckInfo("required", name, ERROR, "required field is blank", mask=mask),
        )
    if has_shown:
        has_value = (raw == "1") if col.kind == "checkbox" else raw.is_not_null()
        plan.add(
            name,
            ~(scope & (pl.col(shown_name(field.name)) == False) & has_value).fill_null(True),  # noqa: E712
            CheckInfo(
                "hidden_value",
                name,
                WARNING,
                f"has a value but its branching logic hides it: {_short(field.show_if)}",
                mask=mask,
            ),
        )
    if field.type is FieldType.CALC and field.name in ctx.calcs:
        calc = pl.col(calc_name(field.name))
        decimals = raw.str.extract(r"\.([0-9]+)$", 1).str.len_chars().fill_null(0).cast(pl.Float64)
        tolerance = pl.lit(10.0).pow(-decimals) * 0.5 + 1e-9
        stored = typed
        wrong = scope & stored.is_not_null() & (calc.is_null() | ((stored - calc).abs() > tolerance))
        plan.add(
            name,
            ~wrong.fill_null(False),
            CheckInfo(
                "calc_mismatch",
                name,
                ERROR,
                "stored value differs from the calculation",
                mask=mask,
                detail=calc_name(field.name),
            ),
        )
        plan.add(
            name,
            ~(scope & started & raw.is_null() & calc.is_not_null()).fill_null(False),
            CheckInfo(
                "calc_missing",
                name,
                WARNING,
                "blank, but the calculation gives a value",
                mask=mask,
                detail=calc_name(field.name),
            ),
        )


def _checkbox_required(
    plan: _Plan, name: str, cols: list[Column], first: Column, ctx: Context, present: set[str]
) -> None:
    field = first.field
    if field is None or not field.required or (field.show_if.strip() and name not in ctx.shown):
        return
    ticked = pl.any_horizontal([pl.col(c.name) == "1" for c in cols if c.name in present]).fill_null(False)
    scope = pl.col(scope_name(first.form))
    started = pl.col(started_name(first.form))
    shown = pl.col(shown_name(name)).fill_null(True) if name in ctx.shown else pl.lit(True)
    plan.add(
        first.name,
        ~(scope & started & shown & ~ticked),
        CheckInfo("required", name, ERROR, "required checkbox has no option ticked", mask=first.identifier),
    )


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- pandera failure cases -> findings ---------------------------------------------------------------------
def _findings_frame(
    failures: pl.DataFrame | None, plan: _Plan, work: pl.DataFrame, intake: IntakeData, ctx: Context
) -> pl.DataFrame:
    parts: list[pl.DataFrame] = []
    extra = [file_finding("shape", note, severity=WARNING) for note in intake.notes] + [
        file_finding("logic", message, field, severity=WARNING) for field, message in ctx.problems
    ]
    if extra:
        parts.append(pl.DataFrame(extra, schema=COLUMNS))
    if failures is not None and failures.height:
        parts.append(_from_failures(failures, plan, work, intake))
    if not parts:
        return empty_frame()
    order = {name: i for i, name in enumerate(intake.raw.columns)}
    return (
        pl.concat(parts, how="vertical")
        .with_columns(pl.col("field").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_o"))
        .sort(["row", "_o"], nulls_last=False, maintain_order=True)
        .drop("_o")
    )


def _from_failures(failures: pl.DataFrame, plan: _Plan, work: pl.DataFrame, intake: IntakeData) -> pl.DataFrame:
    info_rows = [
        {
            "column": col,
            "check_number": num,
            "_check": i.check,
            "_field": i.field,
            "_severity": i.severity,
            "_message": i.message,
            "_mask": i.mask,
            "_detail": i.detail,
        }
        for (col, num), i in plan.infos.items()
    ]
    infos = pl.DataFrame(
        info_rows,
        schema={
            "column": pl.String,
            "check_number": pl.Int32,
            "_check": pl.String,
            "_field": pl.String,
            "_severity": pl.String,
            "_message": pl.String,
            "_mask": pl.Boolean,
            "_detail": pl.String,
        },
    )
    cols = failures.filter(pl.col("schema_context") == "Column").join(infos, on=["column", "check_number"], how="left")
    keys = work.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("index"),
        pl.col(ROW).alias("row"),
        pl.col(RID).alias("record"),
        pl.col(EVT).alias("event"),
        pl.col(INST).alias("instance"),
    )
    cols = cols.join(keys, on="index", how="left")
    details = [d for d in cols.get_column("_detail").unique().to_list() if d is not None]
    detail_value = pl.lit(None, dtype=pl.String)
    for d in details:
        values = work.get_column(d)
        gathered = cols.select(
            pl.when(pl.col("_detail") == d).then(pl.col("index")).otherwise(None).alias("i")
        ).get_column("i")
        picked = (
            values.cast(pl.String)
            .gather(gathered.fill_null(0))
            .to_frame("v")
            .with_columns(pl.when(gathered.is_not_null()).then(pl.col("v")).otherwise(None))
            .get_column("v")
        )
        cols = cols.with_columns(pl.Series(f"_d_{d}", picked))
        detail_value = pl.coalesce([detail_value, pl.col(f"_d_{d}")])
    cols = cols.with_columns(detail_value.alias("_dv"))
    column_findings = cols.select(
        pl.col("row").cast(pl.Int64),
        pl.col("record"),
        pl.col("event"),
        pl.col("instance").cast(pl.Int64),
        pl.col("_field").fill_null(pl.col("column")).alias("field"),
        pl.when(pl.col("_mask") & pl.col("failure_case").is_not_null())
        .then(pl.lit(MASK))
        .otherwise(pl.col("failure_case"))
        .alias("value"),
        pl.col("_check").fill_null(pl.col("check")).alias("check"),
        pl.col("_severity").fill_null(pl.lit(ERROR)).alias("severity"),
        # the recomputed value of an identifier calc is as private as the stored one
        pl.when(pl.col("_mask").fill_null(False))
        .then(pl.col("_message"))
        .when(pl.col("_dv").is_not_null() & pl.col("_check").is_in(["calc_mismatch", "calc_missing"]))
        .then(
            pl.concat_str([pl.col("_message"), pl.lit(" (calculated: "), pl.col("_dv").fill_null("blank"), pl.lit(")")])
        )
        .when(pl.col("_check") == "calc_mismatch")
        .then(pl.concat_str([pl.col("_message"), pl.lit(" (calculated: blank)")]))
        .otherwise(pl.col("_message").fill_null(pl.col("check")))
        .alias("message"),
    )
    schema_level = failures.filter(pl.col("schema_context") != "Column")
    unknown = schema_level.select(
        pl.lit(None, dtype=pl.Int64).alias("row"),
        pl.lit(None, dtype=pl.String).alias("record"),
        pl.lit(None, dtype=pl.String).alias("event"),
        pl.lit(None, dtype=pl.Int64).alias("instance"),
        pl.col("failure_case").alias("field"),
        pl.lit(None, dtype=pl.String).alias("value"),
        pl.when(pl.col("check") == "column_in_schema")
        .then(pl.lit("unknown_column"))
        .otherwise(pl.col("check"))
        .alias("check"),
        pl.lit(ERROR).alias("severity"),
        pl.when((pl.col("check") == "column_in_schema") & (pl.col("failure_case") == ""))
        .then(pl.lit("a column with no name in the header: name it, or delete it if it is empty (a spreadsheet may "
                     "leave an empty column at the end)"))
        .when(pl.col("check") == "column_in_schema")
        .then(pl.lit(f"column is not a field of study {intake.study.name!r}"))
        .otherwise(pl.col("check"))
        .alias("message"),
    )
    return pl.concat([column_findings.cast(COLUMNS), unknown.cast(COLUMNS)], how="vertical")
