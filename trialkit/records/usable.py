"""Intake as screening may read it: a value that fails its field's checks never decides.

A cell that holds a value but fails a check of `trialkit.records.cellchecks` (unreadable type, out of range,
not a code, filed on a row where its form does not belong) is blanked in the typed rows, and listed in a
problems table: record, event, instance, field, check and what to do. The criterion that reads it is then
unknown (the candidate pending) and reports say which field needs correcting and why, instead of deciding on
a typo or asking for a field that is filled in.

A calculated field computed from such a cell is blanked too (and listed), whether REDCap's formula would
propagate the blank (`+`) or skip it (`sum()`): a MADRS total without the item that was mistyped is not the
candidate's total. Only same-row inputs are traced; `[event][field]` inputs are not (see the closing notes).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection

import polars as pl

from trialkit.definitions.expressions import calc_references
from trialkit.definitions.model import Study
from trialkit.records import spreadsheet
from trialkit.records.calculations import calc_fields, form_scope, parsed
from trialkit.records.cellchecks import cell_checks
from trialkit.records.convert import EVENT, REPEAT_INSTANCE, REPEAT_INSTRUMENT, Column, study_columns
from trialkit.records.readers import ROW

PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "record": pl.String(),
    "event": pl.String(),
    "instrument": pl.String(),  # the repeating instrument of the row, if any
    "instance": pl.Int64(),
    "field": pl.String(),  # the export column (a checkbox option column for checkboxes)
    "check": pl.String(),  # misplaced, type, range, choice, format, input
    "problem": pl.String(),  # what the person correcting it reads; never the value
}


def empty_problems() -> pl.DataFrame:
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


def checked_columns(study: Study, present: Collection[str], wanted: Collection[str] | None) -> list[Column]:
    """The data columns to check: those present in the input and wanted (None: all), plus every input of a
    wanted calculated field, through nested calcs (a mistyped item must blank the total that is read)."""
    if wanted is not None:
        wanted = set(wanted)
        calcs = calc_references(study)
        todo = [c for c in wanted if c in calcs]
        while todo:
            for ref in calcs[todo.pop()] - wanted:
                wanted.add(ref)
                if ref in calcs:
                    todo.append(ref)
    rid = study.record_id_field
    return [
        c
        for c in study_columns(study)
        if c.name in present and c.name != rid and (wanted is None or c.name in wanted or c.field_name in wanted)
    ]


def blank_unusable(
    typed: pl.DataFrame,
    raw: pl.DataFrame,
    study: Study,
    *,
    as_of: _dt.date | None,
    columns: Collection[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`typed` with every unusable cell blanked, and the problems table. `typed` and `raw` are the same rows in
    the same order (IntakeData.typed and .raw). `columns`: the fields a caller reads (None: every field)."""
    # A column blank on every row passes every check (blank is "missing", never "invalid"): not scanned.
    cols = [c for c in checked_columns(study, raw.columns, columns) if raw.get_column(c.name).null_count() < raw.height]
    if not cols or typed.height == 0:
        return typed, empty_problems()
    missing = tuple(m.code for m in study.missing_codes)
    keys = typed.select(_key_exprs(study))
    values = [pl.col(f"t{i}") for i in range(len(cols))]
    forms = list(dict.fromkeys(c.form for c in cols))
    work = pl.concat(
        [
            keys,
            typed.select(pl.col(c.name).alias(f"t{i}") for i, c in enumerate(cols)),
            raw.select(pl.col(c.name).alias(f"r{i}") for i, c in enumerate(cols)),
        ],
        how="horizontal",
    )
    # where each form belongs, once per form rather than once per column of it, and only for the forms whose
    # checks read it (polars leaves out the others: the checks left below seldom do)
    where = [form_scope(study, form, instrument="instrument", event="event").alias(f"s{j}")
             for j, form in enumerate(forms)]
    scopes = {form: pl.col(f"s{j}") for j, form in enumerate(forms)}
    # Where a column's typed cells are blank exactly where its raw cells are, every written cell was read as its
    # type or code: its type and choice checks pass everywhere and are not evaluated (at a million candidates
    # they are most of the cost). A label that is also a missing-data code still needs its check.
    sure = {
        c.name
        for c in cols
        if typed.get_column(c.name).null_count() == raw.get_column(c.name).null_count()
        and not set(missing) & set(spreadsheet.labels(c))
    }
    checks = [
        [
            ch
            for ch in cell_checks(
                c,
                raw=pl.col(f"r{i}"),
                typed=values[i],
                scope=scopes[c.form],
                as_of=as_of,
                missing_codes=missing,
                raw_dtype=raw.schema[c.name],
            )
            if not ch.usable and not (c.name in sure and ch.check in ("type", "choice"))
        ]
        for i, c in enumerate(cols)
    ]
    bad = work.lazy().with_columns(where).select(
        (~pl.all_horizontal([ch.ok for ch in checks[i]]).fill_null(True)).alias(f"b{i}") if checks[i]
        else pl.lit(False).alias(f"b{i}")
        for i in range(len(cols))
    ).collect()
    counts = bad.sum().row(0)
    flagged = [i for i, n in enumerate(counts) if n]
    if not flagged:
        return typed, empty_problems()
    typed = typed.with_columns(
        pl.when(bad[f"b{i}"]).then(None).otherwise(pl.col(cols[i].name)).alias(cols[i].name) for i in flagged
    )
    rows = bad.select(pl.any_horizontal(pl.col(f"b{i}") for i in flagged)).to_series().arg_true()
    subset = work.gather(rows).with_columns(where)
    reasons = subset.select(
        *keys.columns,
        *[_reason(checks[i], cols[i]).alias(cols[i].name) for i in flagged],
    )
    problems = (
        reasons.unpivot(index=keys.columns, variable_name="field", value_name="why")
        .filter(pl.col("why").is_not_null())
        .with_columns(
            pl.col("why").str.split_exact("\x1f", 1).struct.rename_fields(["check", "problem"]).alias("why")
        )
        .unnest("why")
    )
    order = {c.name: i for i, c in enumerate(cols)}
    problems = problems.with_columns(pl.col("field").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
    problems = problems.sort("row", "_o").drop("_o").select(list(PROBLEM_SCHEMA)).cast(PROBLEM_SCHEMA)
    return typed, problems


def blank_tainted_calcs(
    typed: pl.DataFrame, problems: pl.DataFrame, study: Study, only: Collection[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Blank every calculated value whose same-row inputs include an unusable cell (after calcs were computed),
    and list it. Nested calcs inherit: a BMI class read from a BMI read from a mistyped height is unusable.
    `only`: the calcs the caller reads (None: all); others are neither blanked nor listed, so what is listed
    does not depend on which columns a file's format let the reader leave out."""
    from trialkit import logic

    if problems.height == 0:
        return typed, problems
    tainted: dict[str, pl.Series] = {}
    bad_rows = problems.select("row", "field").unique()
    row_index = typed.get_column(ROW)
    for name in bad_rows.get_column("field").unique().to_list():
        at = bad_rows.filter(pl.col("field") == name).get_column("row")
        tainted[name] = row_index.is_in(at.implode())
        field = study.fields.get(name.split("___", 1)[0])
        if field is not None and field.name != name:  # a checkbox option taints the checkbox as a whole
            tainted[field.name] = tainted.get(field.name, pl.Series([False] * typed.height)) | tainted[name]
    added: list[pl.DataFrame] = []
    for f in calc_fields(study):
        if f.name not in typed.columns or (only is not None and f.name not in only):
            continue
        try:
            refs = [r.name for r in logic.references(parsed(f.calculation)) if not r.event]
        except Exception:
            continue
        sources = [r for r in dict.fromkeys(refs) if r in tainted]
        if not sources:
            continue
        flag = tainted[sources[0]]
        for r in sources[1:]:
            flag = flag | tainted[r]
        flag = flag & typed.get_column(f.name).is_not_null()
        tainted[f.name] = flag
        if not flag.any():
            continue
        typed = typed.with_columns(pl.when(flag).then(None).otherwise(pl.col(f.name)).alias(f.name))
        named = ", ".join(sources)
        added.append(
            typed.filter(flag)
            .select(_key_exprs(study))
            .with_columns(
                pl.lit(f.name).alias("field"),
                pl.lit("input").alias("check"),
                pl.lit(f"calculated from {named}, which needs correcting").alias("problem"),
            )
            .select(list(PROBLEM_SCHEMA))
            .cast(PROBLEM_SCHEMA)
        )
    if added:
        problems = pl.concat([problems, *added], how="vertical").sort("row", maintain_order=True)
    return typed, problems


def _key_exprs(study: Study) -> list[pl.Expr]:
    rid = study.record_id_field
    return [
        pl.col(ROW).alias("row"),
        pl.col(rid).cast(pl.String).alias("record"),
        (pl.col(EVENT) if study.longitudinal else pl.lit(None, dtype=pl.String)).alias("event"),
        pl.col(REPEAT_INSTRUMENT).alias("instrument"),
        pl.col(REPEAT_INSTANCE).alias("instance"),
    ]


def _reason(checks: list, col: Column) -> pl.Expr:  # type: ignore[type-arg]
    """The first failed check of the cell as 'check<US>problem' (null where every check passes)."""
    expr = pl.when(~checks[0].ok.fill_null(True)).then(pl.lit(f"{checks[0].check}\x1f{checks[0].hint}"))
    for ch in checks[1:]:
        expr = expr.when(~ch.ok.fill_null(True)).then(pl.lit(f"{ch.check}\x1f{ch.hint}"))
    return expr.otherwise(pl.lit(None, dtype=pl.String))
