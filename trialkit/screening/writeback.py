"""Screening results as REDCap records, for the nightly job to write back (the `eligibility_result` form).

Column-wise, so a million candidates cost one select. All values are REDCap text; identifiers are never read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from trialkit.screening.engine import Screening
from trialkit.screening.table import SEP, result_table
from trialkit.screening.words import criterion_words, vocabulary

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
#: the form's status field (not a study field: REDCap adds one per form) and Complete, its green value; left
#: out, REDCap shows a form holding data as Incomplete (red)
FORM_STATUS_FIELD = "eligibility_result_complete"
COMPLETE = "2"


def result_records(
    screening: Screening, *, screened_at: dt.datetime, event: str | None = None, study: Any = None
) -> pl.DataFrame:
    """One row per candidate: record id, [redcap_event_name], and the `elig_*` fields as REDCap text.

    `elig_reasons` and `elig_still_needed` are space-separated (criterion ids, field names); still-needed is blank
    unless the candidate is pending and names blank fields only (values to correct are in the summary).
    `elig_summary` says it all in the protocol's and the forms' words (labels from `study`; field names without
    it): every deciding criterion with its text, not only the first. The form's status (`FORM_STATUS_FIELD`) is
    Complete. `screened_at` is passed in: the library never reads the clock.
    """
    rid = screening.record_id
    stamp = screening.rules.stamp()
    # the same table the reports are written from: REDCap says what the reports say
    table = result_table(screening, vocabulary(study, screening.rules))
    out = table.select(
        pl.col(rid),
        *([pl.lit(event).alias("redcap_event_name")] if event else []),
        pl.col("disposition").alias("elig_disposition"),
        pl.col("primary_reason").alias("elig_primary_reason"),
        pl.col("reasons").str.replace_all(SEP, " ", literal=True).alias("elig_reasons"),
        pl.col("still_needed").str.replace_all(SEP, " ", literal=True).alias("elig_still_needed"),
        pl.lit(screening.as_of.isoformat()).alias("elig_as_of"),
        pl.lit(stamp["id"]).alias("elig_ruleset_id"),
        pl.lit(stamp["version"]).alias("elig_ruleset_version"),
        pl.lit(stamp["sha256"]).alias("elig_ruleset_sha256"),
        pl.lit(screened_at.strftime("%Y-%m-%d %H:%M:%S")).alias("elig_screened_at"),
        _summary(table, criterion_words(screening.rules)).alias("elig_summary"),
        pl.lit(COMPLETE).alias(FORM_STATUS_FIELD),
    )
    order = [rid, *(["redcap_event_name"] if event else []), *WRITEBACK_FIELDS, FORM_STATUS_FIELD]
    return out.select(order)


def _summary(table: pl.DataFrame, texts: dict[str, str]) -> pl.Expr:
    """One line per candidate a coordinator reads in REDCap: 'Ineligible: I5 MADRS total >= 20 ... Also: E5
    Uncontrolled hypertension ...', 'Pending: still needed MADRS not done (11 fields); to correct: ...', 'Eligible'."""
    worded = pl.concat_str(pl.element(), pl.lit(" "),
                           pl.element().replace_strict(texts, default="", return_dtype=pl.String)).str.strip_chars()
    also = pl.col("reasons").str.split(SEP).list.slice(1).list.eval(worded).list.join("; ")
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
        pl.when(also != "").then(pl.concat_str(pl.lit(" Also: "), also)).otherwise(pl.lit("")),
    )
    return (
        pl.when(pl.col("disposition") == "eligible")
        .then(pl.lit("Eligible"))
        .when(pl.col("disposition") == "ineligible")
        .then(ineligible)
        .otherwise(pending)
    )
