"""Screening benchmark: 1,000,000 synthetic candidates against eligibility_rules/kap_trd.yaml, read from Parquet.

    python benchmarks/bench_screening.py [--n 1000000] [--sample 300] [--keep DIR]

What it does and prints:
1. Makes N synthetic candidates (typed columns, realistic ranges, ~0.5% blanks per field) with 1 to 6 treatment-
   history (atrq) instances each, and writes them as two Parquet files (records + atrq instances). Not timed.
2. In a fresh child process (so peak memory is the screening's, not the generator's): reads both Parquet files,
   compiles the rules, screens every candidate in Kleene mode, and summarises (counts by disposition and reason,
   missing-field ranking). Prints wall time (read, screen, summarise, total) and peak RSS (ru_maxrss).
3. In the same child, one record at a time: the same compiled rules on one-row frames (with that candidate's
   instances), for a random sample of candidates; the mean per candidate is extrapolated to N (stated as such)
   and compared with the vectorised time. The median single-candidate time (screen, and screen + explanation)
   is the interactive figure.
Targets (issue 4): total < 3 s and peak < 3 GB on 2 cores; >= 50x faster than one at a time; one candidate < 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"
AS_OF = dt.date(2026, 11, 2)
MIN_DOSE = {
    "sertraline": 50,
    "fluoxetine": 20,
    "paroxetine": 20,
    "citalopram": 20,
    "escitalopram": 10,
    "venlafaxine": 150,
    "duloxetine": 60,
    "bupropion": 300,
    "mirtazapine": 30,
    "nortriptyline": 75,
    "vortioxetine": 10,
    "desvenlafaxine": 50,
}
DRUGS = list(MIN_DOSE)


# ---------------------------------------------------------------------------------------------------------------
# data


class _Rng:
    """Deterministic uniform numbers from polars hashing: fast at a million rows, no numpy needed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.calls = 0

    def random(self, n: int) -> pl.Series:
        self.calls += 1
        h = pl.select(pl.int_range(0, n, dtype=pl.UInt64).hash(self.seed * 1_000_003 + self.calls)).to_series()
        return (h % (1 << 32)).cast(pl.Float64) / float(1 << 32)

    def integers(self, lo: int, hi: int, n: int) -> pl.Series:
        """Uniform integers in [lo, hi)."""
        return (self.random(n) * (hi - lo)).floor().cast(pl.Int64) + lo

    def uniform(self, lo: float, hi: float, n: int) -> pl.Series:
        return self.random(n) * (hi - lo) + lo

    def choice(self, options: list, n: int) -> pl.Series:
        idx = self.integers(0, len(options), n)
        return pl.Series(options).gather(idx)


def _blank(rng: _Rng, s: pl.Series, rate: float = 0.005) -> pl.Series:
    mask = rng.random(len(s)) < rate
    return pl.select(pl.when(mask).then(None).otherwise(s).alias(s.name)).to_series()


def _yesno(rng: _Rng, n: int, name: str, p_yes: float, rate: float = 0.005) -> pl.Series:
    s = pl.select(pl.when(rng.random(n) < p_yes).then(pl.lit("1")).otherwise(pl.lit("0"))).to_series().alias(name)
    return _blank(rng, s, rate)


def _days_before(rng: _Rng, base: pl.Series, lo: int, hi: int, name: str, rate: float = 0.005) -> pl.Series:
    offs = rng.integers(lo, hi + 1, len(base))
    s = (base.cast(pl.Int32) - offs.cast(pl.Int32)).cast(pl.Date).alias(name)
    return _blank(rng, s, rate)


def make_data(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed candidate table and atrq instance table, with the dtypes intake gives those fields."""
    rng = _Rng(seed)
    as_of_days = (AS_OF - dt.date(1970, 1, 1)).days
    scr = (pl.lit(as_of_days) - rng.integers(0, 22, n)).alias("screening_date")
    scr = pl.select(scr).to_series().cast(pl.Int32).cast(pl.Date)
    cols: dict[str, pl.Series] = {
        "record_id": pl.select(pl.format("R{}", pl.int_range(1, n + 1).cast(pl.String).str.zfill(7)))
        .to_series()
        .alias("record_id"),
        "screening_date": _blank(rng, scr, 0.01),
    }
    age_days = (rng.uniform(17.5, 77, n) * 365.25).cast(pl.Int32)
    cols["dob"] = _blank(rng, (scr.cast(pl.Int32) - age_days).cast(pl.Date).alias("dob"))
    r1, r2 = rng.random(n), rng.random(n)
    sex = (
        pl.select(pl.when(r1 < 0.58).then(pl.lit("1")).when(r2 < 0.95).then(pl.lit("2")).otherwise(pl.lit("3")))
        .to_series()
        .alias("sex")
    )
    cols["sex"] = _blank(rng, sex, 0.01)
    cbp = pl.select(pl.when((sex == "1") & (rng.random(n) < 0.6)).then(pl.lit("1")).otherwise(pl.lit("0")))
    cols["childbearing_potential"] = _blank(rng, cbp.to_series().alias("childbearing_potential"))
    cols["consent_signed"] = _yesno(rng, n, "consent_signed", 0.97)
    cols["consent_date"] = _days_before(rng, scr, 0, 3, "consent_date")
    for name, p in [
        ("mini_mdd", 0.99),
        ("mini_mde_current", 0.98),
        ("mini_psychotic_features", 0.02),
        ("mini_bipolar_1", 0.01),
        ("mini_bipolar_2", 0.01),
        ("mini_schizophrenia", 0.005),
        ("mini_schizoaffective", 0.005),
        ("mini_other_psychotic", 0.005),
        ("ketamine_recreational_12m", 0.01),
        ("ketamine_use_disorder", 0.005),
        ("prior_ketamine_treatment", 0.08),
        ("prior_ketamine_nonresponse", 0.3),
        ("ect_current_episode", 0.02),
        ("tms_current_episode", 0.02),
        ("vns_current_episode", 0.005),
        ("hx_aneurysm", 0.003),
        ("hx_avm", 0.003),
        ("hx_ich", 0.003),
        ("ketamine_hypersensitivity", 0.005),
        ("current_ad", 0.7),
        ("maoi_past_month", 0.02),
        ("benzo_current", 0.25),
        ("pregnant", 0.005),
        ("breastfeeding", 0.01),
        ("cssrs_q2", 0.2),
        ("cssrs_q4", 0.05),
        ("cssrs_q5", 0.03),
        ("cssrs_q6_lifetime", 0.2),
        ("cssrs_q6_3m", 0.05),
        ("inv_unsafe", 0.01),
    ]:
        cols[name] = _yesno(rng, n, name, p)
    for name in ("aud_severity", "sud_severity"):
        cols[name] = _blank(rng, rng.choice(["0"] * 40 + ["1", "2", "3"], n).alias(name))
    cols["episode_start_date"] = _days_before(rng, scr, 14, 1500, "episode_start_date")
    cols["madrs_total"] = _blank(rng, rng.integers(18, 46, n).cast(pl.Float64).alias("madrs_total"))
    cols["madrs_date"] = _days_before(rng, scr, 0, 14, "madrs_date")
    cols["current_ad_stable_date"] = _days_before(rng, scr, 14, 300, "current_ad_stable_date")
    cols["preg_test_result"] = _blank(rng, rng.choice(["0"] * 99 + ["1"], n).alias("preg_test_result"))
    cols["preg_test_date"] = _days_before(rng, scr, 0, 3, "preg_test_date")
    cols["maoi_last_dose_date"] = _days_before(rng, scr, 1, 30, "maoi_last_dose_date")
    cols["benzo_lorazepam_eq"] = _blank(rng, rng.choice([0.5, 1.0, 1.0, 2.0, 2.0, 3.0], n).alias("benzo_lorazepam_eq"))
    for name, lo, hi in [("vs_sbp_1", 100, 162), ("vs_sbp_2", 100, 162), ("vs_dbp_1", 60, 91), ("vs_dbp_2", 60, 91)]:
        cols[name] = _blank(rng, rng.integers(lo, hi, n).alias(name))
    cols["vs_bmi"] = _blank(rng, rng.uniform(18, 37, n).round(1).alias("vs_bmi"))
    cols["inv_name"] = _blank(rng, rng.choice(["Investigator 1", "Investigator 2"], n).alias("inv_name"))
    cols["inv_date"] = _days_before(rng, scr, 0, 2, "inv_date")
    records = pl.DataFrame(list(cols.values()))

    k = rng.integers(1, 7, n)  # 1 to 6 treatment-history instances each
    owners = pl.DataFrame({"record_id": records["record_id"], "k": k}).select(
        pl.col("record_id").repeat_by("k").explode()
    )
    total = owners.height
    drug = rng.choice(DRUGS, total)
    min_dose = drug.replace_strict(MIN_DOSE, return_dtype=pl.Float64)
    atrq = owners.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("record_id").alias("redcap_repeat_instance"),
        drug.alias("atrq_drug"),
        (min_dose * rng.uniform(0.9, 2.0, total)).round(0).alias("atrq_dose"),
        min_dose.alias("atrq_min_dose"),
        rng.uniform(5, 20, total).round(1).alias("atrq_duration"),
        pl.select(pl.when(rng.random(total) < 0.92).then(pl.lit("1")).otherwise(pl.lit("0")))
        .to_series()
        .alias("atrq_current_episode"),
        rng.integers(0, 60, total).alias("atrq_improvement"),
    )
    atrq = atrq.with_columns(_blank(rng, atrq["atrq_improvement"], 0.01), _blank(rng, atrq["atrq_dose"], 0.005))
    return records, atrq


# ---------------------------------------------------------------------------------------------------------------
# the measured run (child process)


def run(data_dir: Path, sample: int, seed: int) -> dict:
    from trialkit.definitions.rules import load_ruleset
    from trialkit.screening.engine import compile_rules, screen
    from trialkit.screening.explain import candidates, summarise
    from trialkit.screening.run import resolve_study

    study = resolve_study(RULES)

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    c0 = cpu()
    t0 = time.perf_counter()
    records = pl.read_parquet(data_dir / "records.parquet")
    atrq = pl.read_parquet(data_dir / "atrq.parquet")
    t1 = time.perf_counter()
    rules = compile_rules(load_ruleset(RULES, study), study)
    t2 = time.perf_counter()
    c2 = cpu()
    result = screen(rules, records, as_of=AS_OF, instances={"atrq": atrq})
    t3 = time.perf_counter()
    c3 = cpu()
    summary = summarise(result)
    t4 = time.perf_counter()
    c4 = cpu()
    load = os.getloadavg()[0]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # One record at a time: same compiled rules, one-row frame plus that candidate's instances.
    picks = sorted(random.Random(seed + 1).sample(range(records.height), min(sample, records.height)))
    one_rows = [records.slice(i, 1) for i in picks]
    ids = [r["record_id"][0] for r in one_rows]
    per = atrq.filter(pl.col("record_id").is_in(ids)).partition_by("record_id", as_dict=True)
    inst = [{"atrq": per.get((rid,), atrq.clear())} for rid in ids]
    screen(rules, one_rows[0], as_of=AS_OF, instances=inst[0])  # warm-up (imports, first compile)
    times, explain_times, agree = [], [], 0
    for row, ins in zip(one_rows, inst, strict=True):
        a = time.perf_counter()
        single = screen(rules, row, as_of=AS_OF, instances=ins)
        b = time.perf_counter()
        list(candidates(single))
        c = time.perf_counter()
        times.append(b - a)
        explain_times.append(c - a)
        batch_row = result.frame.filter(pl.col("record_id") == row["record_id"][0])
        agree += int(single.frame.equals(batch_row))
    vector_screen = t3 - t2
    per_record = statistics.fmean(times)
    return {
        "n": records.height,
        "criteria": len(rules.criteria),
        "instances": atrq.height,
        "read_parquet_s": t1 - t0,
        "load_compile_rules_s": t2 - t1,
        "screen_s": vector_screen,
        "summarise_s": t4 - t3,
        "total_s": t4 - t0,
        "screen_cpu_s": c3 - c2,
        "total_cpu_s": c4 - c0,
        "load_average_1m": load,
        "peak_rss_mb": peak_kb / 1024,
        "dispositions": summary.by_disposition,
        "sample": len(times),
        "one_at_a_time_mean_ms": per_record * 1000,
        "one_at_a_time_extrapolated_s": per_record * records.height,
        "ratio_vs_one_at_a_time": per_record * records.height / vector_screen,
        "ratio_incl_read_and_summary": per_record * records.height / (t4 - t0),
        "single_candidate_median_ms": statistics.median(times) * 1000,
        "single_candidate_with_explanation_median_ms": statistics.median(explain_times) * 1000,
        "single_agrees_with_batch": f"{agree}/{len(times)}",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=300, help="candidates screened one at a time")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="keep the Parquet files in this folder (reused when present)")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.run:
        print(json.dumps(run(args.run, args.sample, args.seed)))
        return

    tmp = None
    data_dir = args.keep
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="trialkit-bench-")
        data_dir = Path(tmp.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "records.parquet").exists():
        t = time.perf_counter()
        records, atrq = make_data(args.n, args.seed)
        records.write_parquet(data_dir / "records.parquet")
        atrq.write_parquet(data_dir / "atrq.parquet")
        print(
            f"generated {records.height:,} candidates and {atrq.height:,} atrq instances in "
            f"{time.perf_counter() - t:.1f} s (not timed below)",
            file=sys.stderr,
        )
    proc = subprocess.run(
        [sys.executable, __file__, "--run", str(data_dir), "--sample", str(args.sample), "--seed", str(args.seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    cpus = os.cpu_count()
    print(
        f"screening benchmark: {r['n']:,} candidates, {r['instances']:,} treatment-history instances, "
        f"{RULES.name}, as of {AS_OF}, {cpus} CPU(s)"
    )
    print(f"  read Parquet          {r['read_parquet_s']:.3f} s")
    print(f"  load + compile rules  {r['load_compile_rules_s']:.3f} s")
    print(f"  screen ({r['criteria']} criteria)  {r['screen_s']:.3f} s")
    print(f"  summarise             {r['summarise_s']:.3f} s")
    print(f"  total wall time       {r['total_s']:.3f} s   (target < 3 s)")
    print(
        f"  CPU time              {r['total_cpu_s']:.3f} s total, {r['screen_cpu_s']:.3f} s screening "
        f"(all threads; load average during the run {r['load_average_1m']:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"  peak memory (RSS)     {r['peak_rss_mb']:.0f} MB (target < 3 GB)")
    print(f"  dispositions          {r['dispositions']}")
    print(
        f"  one at a time         {r['one_at_a_time_mean_ms']:.1f} ms per candidate (mean of {r['sample']} sampled,"
        f" extrapolated to {r['n']:,}: {r['one_at_a_time_extrapolated_s']:.0f} s)"
    )
    print(
        f"  ratio                 {r['ratio_vs_one_at_a_time']:.0f}x (screen vs screen), "
        f"{r['ratio_incl_read_and_summary']:.0f}x including read + summary (target >= 50x)"
    )
    print(
        f"  single candidate      {r['single_candidate_median_ms']:.1f} ms median screen, "
        f"{r['single_candidate_with_explanation_median_ms']:.1f} ms with explanation (target < 50 ms)"
    )
    print(f"  single == batch rows  {r['single_agrees_with_batch']}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
