"""Screening results as REDCap records, for the nightly job to write back (the `eligibility_result` form).

Column-wise, so a million candidates cost one select. All values are REDCap text; identifiers are never read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from trialkit.screening.engine import DISPOSITION_COL, PRIMARY_COL, Screening, decode_mask, missing_col, result_col
from trialkit.screening.outcomes import deciding_result
from trialkit.screening.table import SEP, result_table
from trialkit.screening.words import vocabulary

WRITEBACK_FIELDS = (
    "elig_disposition",
    "elig_primary_reason",
    "elig_reasons",
    "elig_still_needed",
    "elig_as_of",
    "elig_ruleset_id",
    "elig_ruleset_version",
    "elig_ruleset_sha256",
    "elig_screened_at",
    "elig_summary",
)


def result_records(
    screening: Screening, *, screened_at: dt.datetime, event: str | None = None, study: Any = None
) -> pl.DataFrame:
    """One row per candidate: record id, [redcap_event_name], and the `elig_*` fields as REDCap text.

    `elig_reasons` and `elig_still_needed` are space-separated (criterion ids, field names); still-needed is blank
    unless the candidate is pending. `elig_summary` says the same in the protocol's and the forms' words (labels
    from `study`; field names without it). `screened_at` is passed in: the library never reads the clock.
    """
    rules = screening.rules
    rid = screening.record_id
    frame = screening.frame
    reasons = []
    for cc in rules.criteria:
        reasons.append(pl.when(pl.col(result_col(cc.id)) == deciding_result(cc.kind).value).then(pl.lit(cc.id)))
    reason_text = pl.concat_str(reasons, separator=" ", ignore_nulls=True) if reasons else pl.lit("")
    needed = _still_needed(screening)
    stamp = rules.stamp()
    out = frame.select(
        pl.col(rid),
        *([pl.lit(event).alias("redcap_event_name")] if event else []),
        pl.col(DISPOSITION_COL).cast(pl.String).alias("elig_disposition"),
        pl.col(PRIMARY_COL).fill_null("").alias("elig_primary_reason"),
        reason_text.fill_null("").alias("elig_reasons"),
        pl.lit(screening.as_of.isoformat()).alias("elig_as_of"),
        pl.lit(stamp["id"]).alias("elig_ruleset_id"),
        pl.lit(stamp["version"]).alias("elig_ruleset_version"),
        pl.lit(stamp["sha256"]).alias("elig_ruleset_sha256"),
        pl.lit(screened_at.strftime("%Y-%m-%d %H:%M:%S")).alias("elig_screened_at"),
    )
    out = out.with_columns(needed.alias("elig_still_needed"), _summary(screening, study).alias("elig_summary"))
    order = [rid, *(["redcap_event_name"] if event else []), *WRITEBACK_FIELDS]
    return out.select(order)


def _summary(screening: Screening, study: Any) -> pl.Series:
    """One line per candidate a coordinator reads in REDCap: 'Ineligible: I5 MADRS total >= 20 ... (also E5)',
    'Pending: still needed MADRS not done (11 fields); to correct: ...', 'Eligible'."""
    table = result_table(screening, vocabulary(study, screening.rules))
    also = pl.col("reasons").str.split(SEP).list.slice(1).list.join(", ")
    needed = pl.col("still_needed_text").str.replace_all(SEP, "; ", literal=True)
    correct = pl.col("to_correct").str.replace_all(SEP, "; ", literal=True)
    pending = pl.concat_str(
        pl.lit("Pending: "),
        pl.when(needed != "").then(pl.concat_str(pl.lit("still needed: "), needed)).otherwise(pl.lit("")),
        pl.when((needed != "") & (correct != "")).then(pl.lit("; ")).otherwise(pl.lit("")),
        pl.when(correct != "").then(pl.concat_str(pl.lit("to correct: "), correct)).otherwise(pl.lit("")),
    )
    ineligible = pl.concat_str(
        pl.lit("Ineligible: "),
        pl.col("primary_reason"),
        pl.lit(" "),
        pl.col("primary_reason_text"),
        pl.when(also != "").then(pl.concat_str(pl.lit(" (also "), also, pl.lit(")"))).otherwise(pl.lit("")),
    )
    return table.select(
        pl.when(pl.col("disposition") == "eligible")
        .then(pl.lit("Eligible"))
        .when(pl.col("disposition") == "ineligible")
        .then(ineligible)
        .otherwise(pending)
        .alias("elig_summary")
    ).to_series()


def _still_needed(screening: Screening) -> pl.Series:
    """Missing-field names of pending candidates, in protocol order, decoded per distinct mask combination (few)."""
    rules = screening.rules
    frame = screening.frame
    masks = [missing_col(cc.id) for cc in rules.criteria]
    pending = frame[DISPOSITION_COL].cast(pl.String) == "pending"
    combos = frame.filter(pending).select(masks).unique()
    text: dict[tuple, str] = {}
    for row in combos.iter_rows():
        names: dict[str, None] = {}
        for cc, mask in zip(rules.criteria, row, strict=True):
            for name in decode_mask(cc, mask or 0):
                names.setdefault(name, None)
        text[row] = " ".join(names)
    if not text:
        return pl.Series("elig_still_needed", [""] * frame.height, dtype=pl.String)
    keys = pl.DataFrame(
        [[*k, v] for k, v in text.items()],
        schema={**{m: frame.schema[m] for m in masks}, "elig_still_needed": pl.String},
        orient="row",
    )
    joined = (
        frame.select(masks).with_columns(pending.alias("__p")).join(keys, on=masks, how="left", maintain_order="left")
    )
    return joined.select(pl.when(pl.col("__p")).then(pl.col("elig_still_needed")).otherwise(pl.lit(""))).to_series()
