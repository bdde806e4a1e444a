"""Validation at scale: generate a KAP-TRD-like intake file of N rows (default 1,000,000; `--quick`: 100,000),
run `trialkit validate` on it and, in the same run and on the same file, plain pandera (polars backend) running
the same checks: the pandera schema trialkit declares for the study, run by pandera's own executor over the
whole file (check by check, as pandera does). Each runs in its own process; for each: wall time, CPU time,
peak memory (the child's ru_maxrss) and the load average around it, then the ratios and FIGURE lines (the
benchmarks protocol). The two findings tables must be byte-identical. A third run, pandera with only the
type/range/choice checks over the raw text (the peer of earlier sessions, far less work), is given for context.

Targets (issue 13): `trialkit validate` peak RSS < 1.5 GB; its wall time <= pandera's on the same checks.

The file is REDCap's flat export shape for the screening event: one non-repeating row per candidate with every
screening form, plus 0-3 `atrq` (treatment history) instance rows per candidate, every cell text. Values are
drawn per column with vectorised hashing (no Python loop per row); hidden fields are blanked and calculated
fields filled by evaluating the study's own branching logic and calculations, so a clean row is clean. A small
share of cells (--error-rate) is then made wrong in several ways (bad dates, out of range, unknown codes,
wrong calc, hidden value) so the findings table is exercised too.

Generation runs in a child process too. Other processes on the machine change wall times: read the CPU
times and the load average printed beside them.

    python benchmarks/bench_validation.py --quick         # 100,000 rows, about a minute
    python benchmarks/bench_validation.py                 # 1,000,000 rows x 162 columns, CSV
    python benchmarks/bench_validation.py --rows 200000 --format parquet --keep /tmp/intake.parquet
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
EVENT = "screening_arm_1"
AS_OF = dt.date(2026, 11, 26)


# ---- generation (child process) -----------------------------------------------------------------------------
def _rnd(n: int, seed: int, k: int) -> pl.Expr:
    """Pseudo-random integers 0..k-1, one per row, from a hash of the row number (vectorised, reproducible)."""
    return (pl.int_range(n, dtype=pl.UInt64).hash(seed) % max(k, 1)).cast(pl.Int64)


def _value_expr(col, n: int, seed: int) -> pl.Expr:  # type: ignore[no-untyped-def]
    """A valid raw value for one data column."""
    from trialkit.definitions.model import FieldType

    f = col.field
    name = col.name
    r = _rnd(n, seed, 1_000_000)
    if col.kind == "complete":
        return pl.lit("2")
    if col.kind == "checkbox":
        return (_rnd(n, seed, 4) == 0).cast(pl.Int8).cast(pl.String)
    if col.kind == "choice":
        return _pick(list(col.codes or ("0",)), n, seed)
    lo_hi = _bounds(f)
    if col.kind == "date":
        if name == "dob":
            base, span = dt.date(1952, 1, 1), 365 * 55
        else:
            base, span = AS_OF - dt.timedelta(days=200), 150
        return (pl.lit(base) + pl.duration(days=_rnd(n, seed, span))).dt.strftime("%Y-%m-%d")
    if col.kind == "datetime":
        seconds = f is not None and f.validation.startswith("datetime_seconds")
        stamp = pl.lit(dt.datetime(2026, 1, 5, 8, 0)) + pl.duration(minutes=_rnd(n, seed, 60 * 24 * 300))
        return stamp.dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    if col.kind == "time":
        return pl.format(
            "{}:{}",
            (8 + _rnd(n, seed, 10)).cast(pl.String).str.zfill(2),
            _rnd(n, seed + 1, 60).cast(pl.String).str.zfill(2),
        )
    if col.kind == "integer" and f is not None and f.type is not FieldType.CALC:
        lo, hi = lo_hi or (0, 100)
        return (int(lo) + _rnd(n, seed, int(hi - lo) + 1)).cast(pl.String)
    if col.kind == "number" and f is not None and f.type is not FieldType.CALC:
        lo, hi = lo_hi or (0, 1000)
        dp = int(f.validation[7]) if f.validation[:7] == "number_" and f.validation[7:8].isdigit() else 1
        scale = 10**dp
        units = int(lo * scale) + _rnd(n, seed, int((hi - lo) * scale) + 1)
        return pl.format("{}.{}", (units // scale).cast(pl.String), (units % scale).cast(pl.String).str.zfill(dp))
    if col.kind == "file":
        return pl.format("scan_{}.pdf", r)
    if f is not None and f.validation == "email":
        return pl.format("person{}@example.org", r)
    if f is not None and f.validation == "phone":
        return pl.format("615-555-{}", (1000 + _rnd(n, seed, 8999)).cast(pl.String))
    if f is not None and f.type is FieldType.CALC:
        return pl.lit(None, dtype=pl.String)  # filled by evaluating the calculation below
    return pl.format("{} {}", pl.lit(name), r)


def _pick(codes: list[str], n: int, seed: int) -> pl.Expr:
    mapping = dict(enumerate(codes))
    return _rnd(n, seed, len(codes)).replace_strict(mapping, return_dtype=pl.String)


def _bounds(f) -> tuple[float, float] | None:  # type: ignore[no-untyped-def]
    if f is None:
        return None
    try:
        return float(f.min), float(f.max)
    except ValueError:
        return None


def _fill_logic(frame: pl.DataFrame, study, fields, rid: str) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """Blank fields their branching logic hides and compute calculated fields, in dictionary order."""
    from trialkit import logic
    from trialkit.definitions.model import FieldType
    from trialkit.records import study_columns

    specs = study.field_specs()
    cols_by_field: dict[str, list[str]] = {}
    for c in study_columns(study):
        if c.field is not None:
            cols_by_field.setdefault(c.field.name, []).append(c.name)
    for f in fields:
        if f.type is FieldType.CALC and f.calculation.strip():
            node = logic.parse(f.calculation)
            value = logic.compile_expr(
                node, frame, mode="redcap", as_of=AS_OF, fields=specs, record_id=rid, missing_columns="blank"
            ).value
            formatted = value.cast(pl.Float64, strict=False).round(4).cast(pl.String).str.replace(r"\.0$", "")
            frame = frame.with_columns(formatted.alias(f.name))
        if f.show_if.strip():
            node = logic.parse(f.show_if)
            shown = logic.compile_expr(
                node, frame, mode="redcap", as_of=AS_OF, fields=specs, record_id=rid, missing_columns="blank"
            ).value
            frame = frame.with_columns(
                [
                    pl.when(shown).then(pl.col(c)).otherwise(None).alias(c)
                    for c in cols_by_field.get(f.name, [])
                    if c in frame.columns
                ]
            )
    return frame


def generate(path: Path, rows: int, fmt: str, error_rate: float) -> dict:
    from trialkit.definitions.loader import load_study
    from trialkit.records import study_columns

    study = load_study(ROOT)
    rid = study.record_id_field
    screening = study.event(EVENT)
    plain_forms = [f for f in screening.instruments if f not in screening.repeating]
    rep_form = "atrq"
    # 1 + (0..3) rows per candidate, mean 2.5: candidates = rows / 2.5
    candidates = max(1, int(rows / 2.5))
    columns = [c for c in study_columns(study) if c.name != rid]
    base_cols = [c for c in columns if c.form in plain_forms]
    rep_cols = [c for c in columns if c.form == rep_form]

    ids = pl.int_range(1, candidates + 1).cast(pl.String).str.zfill(7)  # leading zeros on purpose
    base = pl.select(
        ids.alias(rid), *[_value_expr(c, candidates, 11 + i).alias(c.name) for i, c in enumerate(base_cols)]
    )
    base = base.with_columns(pl.lit("1").alias("consent_signed"), pl.lit("1").alias("mini_mde_current"))
    base = _fill_logic(base, study, [f for inst in plain_forms for f in study.instrument(inst).fields], rid)

    # instance rows: candidate i gets (hash % 4) of them, cut or padded to reach exactly `rows` rows in all
    n_inst = rows - candidates
    counts = pl.select(_rnd(candidates, 7, 4).alias("k")).get_column("k")
    owners = pl.select(pl.int_range(candidates).repeat_by(counts).explode().drop_nulls().alias("o")).get_column("o")
    if owners.len() >= n_inst:
        owners = owners.head(n_inst)
    else:
        owners = pl.concat([owners, pl.Series("o", [candidates - 1] * (n_inst - owners.len()))])
    m = owners.len()
    rep = pl.select(
        owners.alias("_owner"),
        *[_value_expr(c, m, 501 + i).alias(c.name) for i, c in enumerate(rep_cols)],
    )
    rep = rep.with_columns(
        (pl.col("_owner") + 1).cast(pl.String).str.zfill(7).alias(rid),
        (pl.int_range(pl.len()).over("_owner") + 1).cast(pl.String).alias("redcap_repeat_instance"),
    )
    # instance calculations may read the record's own values (atrq_duration uses [screening_date])
    borrowed = [c for c in ("screening_date",) if c in base.columns]
    rep = rep.with_columns([base.get_column(c).gather(owners).alias(c) for c in borrowed])
    rep = _fill_logic(rep, study, study.instrument(rep_form).fields, rid).drop(borrowed)

    base = base.with_columns(
        pl.lit(EVENT).alias("redcap_event_name"),
        pl.lit(None, dtype=pl.String).alias("redcap_repeat_instrument"),
        pl.lit(None, dtype=pl.String).alias("redcap_repeat_instance"),
        pl.int_range(pl.len()).alias("_owner"),
        pl.lit(0).alias("_order"),
    )
    rep = rep.with_columns(
        pl.lit(EVENT).alias("redcap_event_name"),
        pl.lit(rep_form).alias("redcap_repeat_instrument"),
        pl.lit(1).alias("_order"),
    )
    header = [rid, "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"] + [
        c.name for c in columns if c.form in plain_forms or c.form == rep_form
    ]
    frame = pl.concat([base, rep], how="diagonal_relaxed").sort(["_owner", "_order"], maintain_order=True)
    frame = frame.select([pl.col(c) if c in frame.columns else pl.lit(None, dtype=pl.String).alias(c) for c in header])
    frame = _inject_errors(frame, error_rate)
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return {"rows": frame.height, "columns": frame.width, "candidates": candidates, "bytes": path.stat().st_size}


def _inject_errors(frame: pl.DataFrame, rate: float) -> pl.DataFrame:
    n = frame.height
    every = max(1, int(1 / rate)) if rate > 0 else 0
    if not every:
        return frame
    hit = lambda seed: (_rnd(n, seed, every) == 0) & pl.col("redcap_repeat_instrument").is_null()  # noqa: E731
    hit_rep = lambda seed: (_rnd(n, seed, every) == 0) & pl.col("redcap_repeat_instrument").is_not_null()  # noqa: E731
    return frame.with_columns(
        pl.when(hit(901)).then(pl.lit("2024-02-30")).otherwise(pl.col("screening_date")).alias("screening_date"),
        pl.when(hit(902)).then(pl.lit("300")).otherwise(pl.col("vs_sbp_1")).alias("vs_sbp_1"),
        pl.when(hit(903)).then(pl.lit("7")).otherwise(pl.col("sex")).alias("sex"),
        pl.when(hit(904)).then(pl.lit("99")).otherwise(pl.col("madrs_total")).alias("madrs_total"),
        pl.when(hit(905)).then(pl.lit("not-an-email")).otherwise(pl.col("email")).alias("email"),
        pl.when(hit(906)).then(pl.lit(None, dtype=pl.String)).otherwise(pl.col("phq9_3")).alias("phq9_3"),
        pl.when(hit_rep(907)).then(pl.lit("-5")).otherwise(pl.col("atrq_dose")).alias("atrq_dose"),
        pl.when(hit_rep(908)).then(pl.lit("zoloft")).otherwise(pl.col("atrq_drug")).alias("atrq_drug"),
    )


# ---- the peers (child processes) ----------------------------------------------------------------------------
def run_pandera_same_checks(path: Path, out: Path) -> None:
    """Plain pandera (polars backend) running the checks `trialkit validate` runs: the pandera schema trialkit
    declares for the study, validated lazily by pandera's own executor over the whole file read at once (no
    chunks), its failure cases mapped to the same findings table."""
    from trialkit.definitions.loader import load_study
    from trialkit.records import read_intake
    from trialkit.validation import validate

    study = load_study(ROOT)
    findings = validate(read_intake(path, study), as_of=AS_OF, engine="pandera")
    findings.to_csv(out)
    print(f"findings={len(findings)}")


def _plain_checks(study, columns: list[str]):  # type: ignore[no-untyped-def]
    """Per column of the file, the type, range and choice checks as plain pandera checks on the raw text."""
    import pandera.polars as pa

    from trialkit.records import study_columns

    def check(expr: pl.Expr, name: str) -> pa.Check:
        return pa.Check(lambda data: data.lazyframe.select(expr.fill_null(True).alias("ok")), name=name)

    out: dict[str, list] = {}
    for col in study_columns(study):
        if col.name not in columns:
            continue
        raw = pl.col(col.name)
        checks = []
        if col.codes is not None:
            checks.append(check(raw.is_in(list(col.codes)), "choice"))
        elif col.kind in ("integer", "number"):
            pattern = r"^[-+]?[0-9]+$" if col.kind == "integer" else r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)$"
            checks.append(check(raw.str.contains(pattern), "type"))
            bounds = _bounds(col.field)
            if bounds:
                value = raw.cast(pl.Float64, strict=False)
                checks.append(check(value.is_between(*bounds) | value.is_null(), "range"))
        elif col.kind == "date":
            value = raw.str.to_date("%Y-%m-%d", strict=False)
            checks.append(check(value.is_not_null() | raw.is_null(), "type"))
            checks.append(check(value <= pl.lit(AS_OF), "range"))
        elif col.kind == "datetime":
            checks.append(
                check(raw.str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$"), "type")
            )
        if checks:
            out[col.name] = checks
    return out


def run_pandera_subset(path: Path) -> None:
    """Plain pandera over the raw text with the type/range/choice checks alone (no typed values, required
    fields, branching logic, calculations, events or duplicates): the peer of earlier sessions."""
    import pandera.polars as pa
    from pandera.errors import SchemaErrors

    from trialkit.definitions.loader import load_study

    study = load_study(ROOT)
    frame = pl.read_csv(path, infer_schema=False, null_values=[""]) if path.suffix == ".csv" else pl.read_parquet(path)
    checks = _plain_checks(study, frame.columns)
    schema = pa.DataFrameSchema(
        {name: pa.Column(None, checks=checks.get(name, []), nullable=True) for name in frame.columns}
    )
    try:
        schema.validate(frame, lazy=True)
        failures = 0
    except SchemaErrors as exc:
        failures = exc.failure_cases.height
    print(f"checks={sum(len(c) for c in checks.values())} failures={failures}")


# ---- measurement (parent process) ---------------------------------------------------------------------------
def _measure(label: str, argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> dict:
    """Run `argv` as a child: its wall time, its CPU time and its peak memory (the child's own ru_maxrss, from
    wait4), with the load average before and after. Output goes to files, so no pipe needs draining."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().strip()
    cpu = usage.ru_utime + usage.ru_stime
    peak_gb = usage.ru_maxrss / 1024 / 1024  # KiB on Linux
    after = os.getloadavg()[0]
    print(
        f"{label:<34} wall {wall:7.2f} s  CPU {cpu:7.2f} s  peak {peak_gb:5.2f} GB  exit {proc.returncode}  "
        f"load {load:.2f} -> {after:.2f}"
    )
    if text:
        print("    " + text.splitlines()[-1][:160])
    if proc.returncode not in ok_codes:
        sys.exit(f"{label} failed (exit {proc.returncode}):\n{text[-2000:]}")
    return {"wall": wall, "cpu": cpu, "peak_gb": peak_gb, "load": max(load, after)}


def figure(name: str, value: float, unit: str, target: str | None, peer: str | None, ratio: float | None,
           ok: bool | None) -> None:
    """One machine-readable line of the benchmarks protocol (collected by benchmarks/run_all.py)."""
    print("FIGURE " + json.dumps({"name": name, "value": round(value, 3), "unit": unit, "target": target,
                                  "peer": peer, "ratio": None if ratio is None else round(ratio, 3), "ok": ok}))


PEER_SAME = "pandera (polars backend), same checks, whole file"
PEER_SUBSET = "pandera (polars backend), type/range/choice subset"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="data rows (default 1,000,000; --quick: 100,000)")
    ap.add_argument("--quick", action="store_true", help="a reduced size that runs in about a minute on 2 cores")
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    ap.add_argument("--error-rate", type=float, default=0.002, help="share of rows with each injected error")
    ap.add_argument("--keep", type=Path, help="write the generated file here and keep it (reused if present)")
    ap.add_argument("--no-subset", action="store_true", help="skip the type/range/choice pandera peer")
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pandera-same", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pandera-subset", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)

    if args.generate:
        info = generate(args.generate, rows, args.format, args.error_rate)
        print(" ".join(f"{k}={v}" for k, v in info.items()))
        return
    if args.pandera_same:
        run_pandera_same_checks(args.pandera_same, args.out)
        return
    if args.pandera_subset:
        run_pandera_subset(args.pandera_subset)
        return

    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        path = args.keep or tmpdir / f"kap_intake.{args.format}"
        if not path.exists():
            t0 = time.perf_counter()
            gen = [sys.executable, __file__, "--generate", str(path), "--rows", str(rows), "--format", args.format,
                   "--error-rate", str(args.error_rate)]
            proc = subprocess.run(gen, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"generation failed:\n{proc.stderr}")
            print(f"generated {path.name}: {proc.stdout.strip()} in {time.perf_counter() - t0:.1f} s")
        width = len(pl.scan_csv(path, n_rows=0).collect_schema()) if args.format == "csv" else len(
            pl.read_parquet_schema(path))
        height = rows if args.keep is None else None
        size = f"{height:,} rows x {width} columns" if height else f"{width} columns"
        print(f"file: {path} ({path.stat().st_size / 1e6:.0f} MB {args.format}, {size})")
        print(f"cores: {os.cpu_count()}, polars threads: {pl.thread_pool_size()}, load average: {os.getloadavg()}")

        # Each in its own process, so each peak memory is its own. Ours: `trialkit validate` exactly as a user
        # runs it. The peer: plain pandera running the same checks, i.e. the pandera schema trialkit declares,
        # run by pandera's executor over the whole file. Both write their findings, which must be identical.
        ours_csv, theirs_csv = tmpdir / "ours.csv", tmpdir / "pandera.csv"
        cli = [sys.executable, "-m", "trialkit", "validate", str(path), "--study", str(ROOT), "--as-of",
               AS_OF.isoformat(), "--format", "csv", "--out", str(ours_csv)]
        ours = _measure("trialkit validate", cli, ok_codes=(0, 1))  # 1: the data has errors (it has)
        same = _measure(
            "pandera, same checks, whole file",
            [sys.executable, __file__, "--pandera-same", str(path), "--out", str(theirs_csv)],
        )
        identical = ours_csv.read_bytes() == theirs_csv.read_bytes()
        print(f"findings identical (trialkit validate vs pandera's executor): {identical}")
        subset = None
        if not args.no_subset:
            subset = _measure("pandera, type/range/choice only", [sys.executable, __file__, "--pandera-subset",
                                                                  str(path)])

    print(f"ratio trialkit/pandera same checks: wall {ours['wall'] / same['wall']:.2f}, "
          f"CPU {ours['cpu'] / same['cpu']:.2f}, peak memory {ours['peak_gb'] / same['peak_gb']:.2f}")
    if subset:
        print(f"ratio trialkit/pandera subset:      wall {ours['wall'] / subset['wall']:.2f}, "
              f"CPU {ours['cpu'] / subset['cpu']:.2f}, peak memory {ours['peak_gb'] / subset['peak_gb']:.2f}")
    print(f"bench process: CPU {time.process_time() - cpu0:.2f} s, wall {time.perf_counter() - wall0:.1f} s, "
          f"load average {os.getloadavg()}")
    label = f"validate {rows:,} rows x {width} cols"
    ratio = ours["wall"] / same["wall"]
    figure(f"{label}: wall", ours["wall"], "s", "<= pandera same checks, same run", PEER_SAME, ratio, ratio <= 1.0)
    figure(f"{label}: CPU", ours["cpu"], "s", None, PEER_SAME, ours["cpu"] / same["cpu"], None)
    figure(f"{label}: wall ratio to pandera", ratio, "x", "<= 1.0", PEER_SAME, ratio, ratio <= 1.0)
    figure(f"{label}: peak RSS", ours["peak_gb"], "GB", "< 1.5 GB", None, None, ours["peak_gb"] < 1.5)
    figure(f"{label}: findings identical to pandera's executor", float(identical), "bool", "1", PEER_SAME, None,
           identical)
    if subset:
        ratio = ours["wall"] / subset["wall"]
        figure(f"{label}: wall ratio to pandera subset", ratio, "x", "<= 1.0", PEER_SUBSET, ratio, ratio <= 1.0)


if __name__ == "__main__":
    main()
