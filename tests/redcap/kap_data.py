"""KAP-TRD intake slices and REDCap state checks shared by the pull and push tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from trialkit.redcap.client import RedcapClient, RetryPolicy, Token

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["record_id", "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
T0 = dt.datetime(2026, 11, 1, 12, 0, 0)


def intake_frame(n: int) -> pl.DataFrame:
    """Every row of the first `n` candidates of the example intake, without the screening results."""
    frame = pl.read_csv(ROOT / "examples" / "kap_trd_intake.csv", infer_schema=False)
    keep = frame["record_id"].unique(maintain_order=True).head(n)
    frame = frame.filter(pl.col("record_id").is_in(keep.implode()))
    return frame.drop([c for c in frame.columns if c.startswith("elig_") or c == "eligibility_result_complete"])


def rows_of(frame: pl.DataFrame) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if v is not None} for row in frame.to_dicts()]


def client_for(sandbox, token: str, *, chunk_size: int = 7, attempts: int = 3) -> RedcapClient:
    return RedcapClient(sandbox.url, Token(token), chunk_size=chunk_size,
                        retry=RetryPolicy(attempts=attempts, backoff=0.0))


def cells(frame: pl.DataFrame, columns: list[str] | None = None) -> set[tuple]:
    """Every non-blank cell as (record, event, instrument, instance, field, value)."""
    frame = frame.with_columns([pl.col(k).cast(pl.String).fill_null("") if k in frame.columns else pl.lit("").alias(k)
                                for k in KEYS[1:]])
    fields = [c for c in (columns or frame.columns) if c not in KEYS and c in frame.columns and not c.startswith("_")]
    long = frame.select([*KEYS, *[pl.col(f).cast(pl.String) for f in fields]]).unpivot(
        index=KEYS, on=fields, variable_name="field", value_name="value").drop_nulls("value")
    return set(long.iter_rows())
