"""Benchmark: 20 eligibility-style REDCap logic expressions over 1,000,000 synthetic records.

Prints the columnar time (all 20 in one pass, per mode), the peak memory of the process (ru_maxrss), and the
ratio against evaluating the same compiled expressions one record at a time (a one-row frame per record),
measured on a sample of records in the same run and extrapolated to the full count (the output says so).

    python benchmarks/bench_logic.py [--records 1000000] [--sample 2000] [--repeat 3] [--raw] [--quick]

--quick: 200,000 records, a sample of 500, 2 repeats (well under a minute); the 1 s target is then scaled to
the record count (stated so). The headline figures are also printed as `FIGURE {json}` lines (run_all.py).

--raw feeds REDCap export strings instead of typed columns (the evaluator types them on the fly).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import date

import polars as pl

from trialkit.logic import FieldSpec, compile_expr, evaluate_many, parse

AS_OF = date(2024, 3, 1)

PHQ9 = [f"[phq9_{i}]" for i in range(1, 10)]
EXPRESSIONS = {
    "I1_age": "age_at_date([dob], [screening_date]) >= 18 and age_at_date([dob], [screening_date]) <= 75",
    "I1_age_datediff": "rounddown(datediff([dob], 'today', 'y')) >= 18",
    "I5_madrs": "[madrs_total] >= 20 and datediff([madrs_date], [screening_date], 'd', true) >= 0"
    " and datediff([madrs_date], [screening_date], 'd', true) <= 14",
    "phq9_sum": f"sum({', '.join(PHQ9)}) >= 10",
    "phq9_plus": f"{' + '.join(PHQ9)} >= 10",
    "I7_pregnancy": "if([sex] = '2' and [childbearing] = '1', [preg_test_result] = '0', true)",
    "conmed_any": "[conmeds(1)] = '1' or [conmeds(3)] = '1'",
    "conmed_none": "[conmeds(2)] = '0' and [conmeds(4)] = '0' and [conmeds(5)] = '0'",
    "bp_first": "[sbp_1] < 140 and [dbp_1] < 90",
    "bp_mean": "mean([sbp_1], [sbp_2]) < 140 and mean([dbp_1], [dbp_2]) < 90",
    "bmi": "round([weight] / (([height] / 100)^(2)), 1) < 35",
    "I3_episode": "datediff([episode_start], [screening_date], 'd') >= 28",
    "I8_consent": "[consent_date] <> '' and [consent_date] <= [screening_date]",
    "E_cssrs": "[cssrs_q4] = '1' or [cssrs_q5] = '1'",
    "E_bipolar": "not ([bipolar] = '1' or [psychosis] = '1')",
    "madrs_band": "if([madrs_total] >= 35, 'severe', if([madrs_total] >= 20, 'moderate', 'mild')) = 'moderate'",
    "suicidality": "max([phq9_9], [cssrs_q4]) > 0",
    "madrs_missing": "isblankormissingcode([madrs_total]) or [madrs_total] < 10",
    "ad_name": "contains([current_ad_name], 'sertra') or starts_with([current_ad_name], 'escit')",
    "bp_stable": "abs([sbp_1] - [sbp_2]) <= 20 and [hr] >= 50 and [hr] <= 100",
}

FIELDS = {
    f.name: f
    for f in [
        FieldSpec("record_id"),
        *[FieldSpec(n, "text", "date_ymd") for n in ("dob", "screening_date", "madrs_date", "episode_start")],
        FieldSpec("consent_date", "text", "date_ymd"),
        FieldSpec("madrs_total", "calc"),
        *[FieldSpec(f"phq9_{i}", "radio", choices=("0", "1", "2", "3")) for i in range(1, 10)],
        FieldSpec("sex", "radio", choices=("1", "2")),
        *[FieldSpec(n, "yesno") for n in ("childbearing", "cssrs_q4", "cssrs_q5", "bipolar", "psychosis")],
        FieldSpec("preg_test_result", "radio", choices=("0", "1", "8")),
        FieldSpec("conmeds", "checkbox", choices=("1", "2", "3", "4", "5")),
        *[FieldSpec(n, "text", "integer") for n in ("sbp_1", "sbp_2", "dbp_1", "dbp_2", "hr")],
        FieldSpec("weight", "text", "number_1dp"),
        FieldSpec("height", "text", "number"),
        FieldSpec("current_ad_name", "text"),
        FieldSpec("atrq_current_episode", "yesno", form="atrq", repeating=True),
        FieldSpec("atrq_drug", "dropdown", choices=tuple(str(k) for k in range(20)), form="atrq", repeating=True),
    ]
}


def synthetic(n: int, raw: bool) -> pl.DataFrame:
    """Deterministic pseudo-random records (hash of the row number), about 5% blanks per field."""
    i = pl.int_range(0, n, dtype=pl.UInt64)

    def rnd(seed: int, k: int) -> pl.Expr:
        return (i.hash(seed) % k).cast(pl.Int64)

    def blank(seed: int, e: pl.Expr) -> pl.Expr:
        return pl.when(rnd(seed + 1000, 20) == 0).then(None).otherwise(e)

    screening = pl.lit(date(2024, 1, 1)) + pl.duration(days=rnd(1, 60))
    cols = {
        "record_id": i.cast(pl.String),
        "screening_date": screening,
        "dob": blank(2, pl.lit(date(1940, 1, 1)) + pl.duration(days=rnd(2, 365 * 70))),
        "madrs_date": blank(3, screening - pl.duration(days=rnd(3, 30))),
        "episode_start": blank(4, screening - pl.duration(days=rnd(4, 400))),
        "consent_date": blank(5, screening - pl.duration(days=rnd(5, 5) - 1)),
        "madrs_total": blank(6, rnd(6, 61).cast(pl.Float64)),
        **{f"phq9_{k}": blank(10 + k, rnd(10 + k, 4).cast(pl.String)) for k in range(1, 10)},
        "sex": blank(20, (rnd(20, 2) + 1).cast(pl.String)),
        "childbearing": blank(21, rnd(21, 2).cast(pl.String)),
        "preg_test_result": blank(22, pl.when(rnd(22, 10) == 0).then(pl.lit("1")).otherwise(pl.lit("0"))),
        **{f"conmeds___{k}": (rnd(30 + k, 5) == 0).cast(pl.Int8).cast(pl.String) for k in range(1, 6)},
        "sbp_1": blank(40, 100 + rnd(40, 70)),
        "sbp_2": blank(41, 100 + rnd(41, 70)),
        "dbp_1": blank(42, 60 + rnd(42, 45)),
        "dbp_2": blank(43, 60 + rnd(43, 45)),
        "hr": blank(44, 45 + rnd(44, 70)),
        "weight": blank(45, 45 + rnd(45, 900).cast(pl.Float64) / 10),
        "height": blank(46, 150 + rnd(46, 50).cast(pl.Float64)),
        "cssrs_q4": blank(47, (rnd(47, 30) == 0).cast(pl.Int8).cast(pl.String)),
        "cssrs_q5": blank(48, (rnd(48, 40) == 0).cast(pl.Int8).cast(pl.String)),
        "bipolar": blank(49, (rnd(49, 15) == 0).cast(pl.Int8).cast(pl.String)),
        "psychosis": blank(50, (rnd(50, 25) == 0).cast(pl.Int8).cast(pl.String)),
        "current_ad_name": blank(
            51,
            pl.when(rnd(51, 3) == 0)
            .then(pl.lit("Sertraline"))
            .when(rnd(51, 3) == 1)
            .then(pl.lit("escitalopram"))
            .otherwise(pl.lit("bupropion")),
        ),
    }
    frame = pl.select(**cols)
    if raw:
        frame = frame.select(pl.all().cast(pl.String))
    return frame


I4 = (
    "count_distinct_instances(atrq, [atrq_drug], [atrq_current_episode] = '1' and [atrq_dose] >= [atrq_min_dose]"
    " and [atrq_duration] >= 6 and [atrq_improvement] < 50) >= 2"
)


def synthetic_atrq(n: int) -> pl.DataFrame:
    """About 3.5 antidepressant trials per record (instances), 5% of improvements blank."""
    i = pl.int_range(0, int(n * 3.5), dtype=pl.UInt64)
    return pl.select(
        record_id=(i * 2 // 7).cast(pl.String),
        redcap_repeat_instance=(i % 4 + 1).cast(pl.Int64),
        atrq_drug=(i.hash(2) % 20).cast(pl.String),
        atrq_dose=(i.hash(3) % 300).cast(pl.Float64),
        atrq_min_dose=pl.lit(50.0),
        atrq_duration=(i.hash(4) % 20).cast(pl.Float64),
        atrq_current_episode=(i.hash(5) % 2).cast(pl.String),
        atrq_improvement=pl.when(i.hash(6) % 20 == 0).then(None).otherwise(i.hash(6) % 100).cast(pl.Float64),
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=2_000, help="records evaluated one at a time for the ratio")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--raw", action="store_true", help="REDCap export strings instead of typed columns")
    ap.add_argument("--quick", action="store_true", help="200,000 records, sample 500, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.records, args.sample, args.repeat = 200_000, 500, 2
    load0, cpu0 = os.getloadavg()[0], time.process_time()

    nodes = {name: parse(text) for name, text in EXPRESSIONS.items()}
    assert len(nodes) == 20
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    frame = synthetic(args.records, args.raw)
    gen = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    print(
        f"trialkit logic benchmark: {len(nodes)} expressions x {frame.height:,} records "
        f"({'raw strings' if args.raw else 'typed columns'}), {os.cpu_count()} CPUs, "
        f"polars {pl.__version__}, python {sys.version.split()[0]}"
    )
    print(
        f"data: {frame.estimated_size('mb'):.0f} MB in memory, generated in {gen:.2f} s; "
        f"peak RSS {rss0:.0f} MB before data, {rss_data:.0f} MB after"
    )

    results = {}
    for mode, explain in (("redcap", False), ("kleene", False), ("kleene", True)):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = evaluate_many(nodes, frame, mode=mode, as_of=AS_OF, fields=FIELDS, explain=explain)
            times.append(time.perf_counter() - t)
        label = f"{mode}{' + explain' if explain else ''}"
        results[label] = (min(times), statistics.median(times), out)
        print(
            f"columnar {label:16s}: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
            f"(all 20 expressions, {frame.height:,} records; compile included, parse done once before); "
            f"peak RSS now {peak_rss_mb():.0f} MB"
        )

    # Extension: the KAP I4 instance aggregate over an ATRQ table of 3.5 trials per record on average.
    atrq = synthetic_atrq(frame.height)
    i4 = {"I4": parse(I4)}
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        evaluate_many(i4, frame.select("record_id"), mode="kleene", fields=FIELDS, instances={"atrq": atrq})
        times.append(time.perf_counter() - t)
    print(
        f"instance aggregate I4 (count_distinct_instances over {atrq.height:,} atrq rows, kleene): "
        f"best {min(times):.3f} s, median {statistics.median(times):.3f} s (not part of the 20)"
    )

    # One record at a time: the same expressions compiled once, then one-row frames, one per record.
    sample = frame.head(args.sample)
    compiled = [
        compile_expr(nodes[n], sample.schema, mode="kleene", as_of=AS_OF, fields=FIELDS).value.alias(n) for n in nodes
    ]
    t = time.perf_counter()
    per_record = [sample.slice(k, 1).select(compiled) for k in range(sample.height)]
    per_time = time.perf_counter() - t
    per_record_full = per_time / sample.height * frame.height
    columnar_sample = sample.select(compiled)
    assert pl.concat(per_record).equals(columnar_sample), "per-record and columnar results differ"
    full = results["kleene"][2].head(args.sample).drop("record_id")
    assert full.equals(columnar_sample), "evaluate_many and compile_expr differ"
    best = results["kleene"][0]
    print(
        f"one record at a time (kleene): {per_time:.2f} s for a sample of {sample.height:,} records "
        f"= {per_time / sample.height * 1e3:.2f} ms/record, extrapolated to {frame.height:,} records: "
        f"{per_record_full:.0f} s (estimate, not run in full)"
    )
    print(f"ratio one-at-a-time / columnar (kleene, best): {per_record_full / best:,.0f}x")
    print(f"peak RSS of the process (ru_maxrss): {peak_rss_mb():.0f} MB")
    limit = 1.0 * frame.height / 1_000_000
    ok_time = best < limit
    ok_ratio = per_record_full / best >= 50
    print(f"targets: all 20 under {limit:g} s: {'met' if ok_time else 'NOT met'}; "
          f">= 50x: {'met' if ok_ratio else 'NOT met'}")
    load1 = os.getloadavg()[0]
    print(f"CPU time of the process {time.process_time() - cpu0:.2f} s (all threads); load {load0:.2f} -> {load1:.2f}")
    scaled = "" if frame.height == 1_000_000 else " (1M target scaled)"
    for figure in (
        {"name": f"20 expressions columnar (kleene, best), {frame.height:,} records", "value": round(best, 3),
         "unit": "s", "target": f"< {limit:g} s{scaled}", "peer": None, "ratio": None, "ok": ok_time},
        {"name": "columnar vs one record at a time (kleene)", "value": round(per_record_full / best),
         "unit": "x", "target": ">= 50x", "peer": "one record at a time (extrapolated)",
         "ratio": round(per_record_full / best), "ok": ok_ratio},
    ):
        print("FIGURE " + json.dumps({**figure, "load": [round(load0, 2), round(load1, 2)]}))


if __name__ == "__main__":
    main()
