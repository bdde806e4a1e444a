"""The result table: one row per candidate, every cell text, built column-wise from the screening frame.

CSV, the screening log, the JSON candidate list and the terminal table are written from it, so a million
candidates never become a million Python objects; per-criterion checklists with values
(`trialkit.screening.explain.candidates`) are built only for the candidates a report shows.

Still-needed names are decoded once per distinct combination of missing-field masks (there are few), and
the values to correct are looked up only for the candidates that have any.
"""

from __future__ import annotations

import polars as pl

from trialkit.screening.engine import DISPOSITION_COL, PRIMARY_COL, Screening, decode_mask, missing_col, result_col
from trialkit.screening.outcomes import Disposition, Result, deciding_result

#: Separator inside the reasons, still_needed and to_correct cells.
SEP = ";"


def result_table(screening: Screening) -> pl.DataFrame:
    """record id, disposition, primary_reason, reasons, still_needed, to_correct (blank unless pending), then
    one column per criterion with its result label (met, not_met, unknown, not_applicable)."""
    rules = screening.rules
    rid = screening.record_id
    frame = screening.frame
    reasons = [
        pl.when(pl.col(result_col(cc.id)) == deciding_result(cc.kind).value).then(pl.lit(cc.id))
        for cc in rules.criteria
    ]
    labels = {r.value: r.label for r in Result}
    needed, correct = _needed_and_correct(screening)
    return frame.select(
        pl.col(rid).cast(pl.String),
        pl.col(DISPOSITION_COL).cast(pl.String).alias("disposition"),
        pl.col(PRIMARY_COL).fill_null("").alias("primary_reason"),
        (pl.concat_str(reasons, separator=SEP, ignore_nulls=True) if reasons else pl.lit("")).fill_null("").alias(
            "reasons"
        ),
        needed.alias("still_needed"),
        correct.alias("to_correct"),
        *[
            pl.col(result_col(cc.id)).replace_strict(labels, return_dtype=pl.String).alias(cc.id)
            for cc in rules.criteria
        ],
    )


def _needed_and_correct(screening: Screening) -> tuple[pl.Series, pl.Series]:
    from trialkit.screening.explain import _problems_by_record, _split_unusable

    rules = screening.rules
    frame = screening.frame
    masks = [missing_col(cc.id) for cc in rules.criteria]
    blank = pl.Series([""] * frame.height, dtype=pl.String)
    if not masks:
        return blank, blank
    pending = frame.get_column(DISPOSITION_COL).cast(pl.String) == Disposition.PENDING.value
    unknown = [
        pl.when(pl.col(result_col(cc.id)) == Result.UNKNOWN.value).then(pl.col(missing_col(cc.id))).otherwise(0)
        for cc in rules.criteria
    ]
    live = frame.select(unknown)
    combos = live.filter(pending).unique()
    text: dict[tuple, str] = {}
    for row in combos.iter_rows():
        names: dict[str, None] = {}
        for cc, mask in zip(rules.criteria, row, strict=True):
            for name in decode_mask(cc, mask or 0):
                names.setdefault(name, None)
        text[row] = SEP.join(names)
    if not text:
        return blank, blank
    keys = pl.DataFrame(
        [[*k, v] for k, v in text.items()],
        schema={**{m: live.schema[m] for m in live.columns}, "__needed": pl.String},
        orient="row",
    )
    needed = (
        live.with_columns(pending.alias("__p"))
        .join(keys, on=live.columns, how="left", maintain_order="left")
        .select(pl.when(pl.col("__p")).then(pl.col("__needed")).otherwise(pl.lit("")))
        .to_series()
    )
    correct = blank
    problems = _problems_by_record(screening)
    if problems:
        rid = screening.record_id
        ids = frame.get_column(rid).cast(pl.String)
        rows = (ids.is_in(list(problems)) & pending).arg_true().to_list()
        needed = needed.clone()
        fixes = [""] * frame.height
        for i in rows:
            labels = tuple(n for n in needed[i].split(SEP) if n)
            still, fix = _split_unusable(labels, problems[ids[i]])
            needed[i] = SEP.join(still)
            fixes[i] = SEP.join(dict.fromkeys(fix))
        correct = pl.Series(fixes, dtype=pl.String)
    return needed, correct
