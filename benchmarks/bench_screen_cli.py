"""`trialkit screen` end to end on 1,000,000 KAP-TRD candidates from one typed Parquet file (issue 13).

    python benchmarks/bench_screen_cli.py [--n 1000000] [--cache DIR] [--formats csv,json,log,table,html] [--quick]

1. Makes (or reuses from --cache) one Parquet file in REDCap's flat export shape for the screening event:
   a non-repeating row per candidate and its treatment-history (atrq) instance rows, typed columns (dates,
   numbers), from bench_screening.make_data. Not timed.
2. Runs the CLI exactly as a user would, one child process per output: `--format csv|json|table|html --out FILE`
   and, for `log`, `--format table --limit 20 --log FILE` (the screening log is the point; the table is a few
   lines). Prints, per run, wall time, CPU time of the child (user + system, all its threads) and the child's
   peak RSS (its own rusage, from wait4: RUSAGE_CHILDREN's ru_maxrss would be the largest child so far), the
   load average before and after, and one FIGURE line each (see benchmarks/run_all.py).
3. One candidate (`--record`) from the same file: filtered before anything is computed. And `from-csv`: the same
   data as a CSV file (REDCap's own export format; written once beside the Parquet file, not timed) to a CSV
   report; no issue target, its peak not in the 2 GB figure (which is for Parquet).
4. The input/output floor, as the peer of the csv run: a child process that only starts Python, imports polars,
   reads the Parquet columns that `screen` reads (the candidates' rows with their columns, the treatment rows
   with theirs: the cells that hold data) and writes trialkit's own CSV output back out (read beforehand, not
   timed). Any tool that reads this file and writes this CSV pays it; the ratio says how much checking and
   screening add on top.
5. The phases of the csv run, each timed in one process (the library calls `screen` makes, one at a time):
   imports, the study and rule checks, reading and typing, the cell checks and calcs, the screening step, the
   result table, the CSV written. Not a figure with a target: where the time goes.

Targets: csv, json and log under 3 s wall and 2 GB peak; table and html under 5 s. Other processes on the
machine stretch wall times: read the CPU time and the load printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_screening import AS_OF, RULES, make_data  # noqa: E402

EVENT = "screening_arm_1"
TARGET_S = {"csv": 3.0, "json": 3.0, "log": 3.0, "table": 5.0, "html": 5.0, "record": 3.0, "from-csv": None}
TARGET_MB = 2048


def flat_export(n: int, seed: int) -> pl.DataFrame:
    """One frame in REDCap's flat export shape, typed: candidates' rows each followed by their atrq rows."""
    records, atrq = make_data(n, seed)
    rid = "record_id"
    records = records.with_columns(
        pl.lit(EVENT).alias("redcap_event_name"),
        pl.lit(None, dtype=pl.String).alias("redcap_repeat_instrument"),
        pl.lit(None, dtype=pl.Int64).alias("redcap_repeat_instance"),
        pl.int_range(pl.len()).alias("_owner"),
    )
    owner = records.select(rid, "_owner")
    atrq = atrq.join(owner, on=rid, how="left").with_columns(
        pl.lit(EVENT).alias("redcap_event_name"),
        pl.lit("atrq").alias("redcap_repeat_instrument"),
    )
    keys = [rid, "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
    head = keys + [c for c in records.columns if c not in keys and c != "_owner"]
    head += [c for c in atrq.columns if c not in head and c != "_owner"]
    frame = pl.concat([records, atrq], how="diagonal_relaxed").sort("_owner", maintain_order=True)
    return frame.select(head)


def ensure_data(n: int, seed: int, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"kap_trd_flat_{n}_{seed}.parquet"
    if not path.exists():
        t = time.perf_counter()
        frame = flat_export(n, seed)
        tmp = path.with_suffix(".tmp")
        frame.write_parquet(tmp)
        tmp.rename(path)
        print(f"generated {path.name}: {frame.height:,} rows x {frame.width} columns in "
              f"{time.perf_counter() - t:.1f} s (not timed)", file=sys.stderr)
    return path


def csv_twin(data: Path) -> Path:
    """The Parquet file's data as a CSV file beside it (made once, not timed): REDCap's own export format."""
    path = data.with_suffix(".csv")
    if not path.exists():
        tmp = path.with_suffix(".csv.tmp")
        pl.read_parquet(data).write_csv(tmp)
        tmp.rename(path)
    return path


def run_child(label: str, argv: list[str]) -> dict:
    """Run `argv` as a child: wall time, its CPU time (user + system, all threads) and its own peak RSS."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {
        "label": label,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
        "rc": proc.returncode,
        "out": stdout,
        "err": stderr,
        "load0": load0,
        "load1": os.getloadavg()[0],
    }


FLOOR = """
import sys, time
import polars as pl
data, plain, repeating, csv = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
t, c = time.perf_counter(), time.process_time()
written = pl.read_csv(csv, infer_schema=False)  # the output to write: its reading is taken off the figure
print(time.perf_counter() - t, time.process_time() - c)
kind = pl.col("redcap_repeat_instrument")
scan = pl.scan_parquet(data)
frames = pl.collect_all([scan.filter(kind.is_null()).select(plain), scan.filter(kind.is_not_null()).select(repeating)])
with open(csv + ".floor", "wb") as out:
    written.write_csv(out)
"""


PHASES = """
import datetime as dt, json, sys, time
from dataclasses import replace
from pathlib import Path
marks, last = [], [time.perf_counter(), time.process_time()]
def mark(name):
    t, c = time.perf_counter(), time.process_time()
    marks.append((name, t - last[0], c - last[1]))
    last[0], last[1] = t, c
import trialkit.cli  # first, as `trialkit` runs: it sets polars' allocator up before polars loads
import polars as pl
mark("import polars")
from trialkit.records import read_intake
from trialkit.screening.engine import screen
from trialkit.screening.reports import build_report, without_checklist_values, write_csv
from trialkit.screening.run import _with_site, load_rules, resolve_study, screen_columns
mark("import trialkit")
data, rules_path, root, as_of, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
as_of = dt.date.fromisoformat(as_of)
study = resolve_study(rules_path, root)
rules = load_rules(rules_path, study)
mark("study and rule checks")
# what trialkit.screening.run.screen_file does, a step at a time
intake = read_intake(data, study, columns=screen_columns(rules, study), keep_types=True)
mark("read and type the file")
intake = intake.for_screening(as_of=as_of, columns=rules.read_columns())
mark("cell checks and calcs")
result = screen(rules, intake, as_of=as_of)
mark("screening step")
result = without_checklist_values(replace(result, data=_with_site(result, intake.raw)))
del intake
report = build_report(result, checklists=0, study=study, source=str(data), labels=False)
mark("result table")
with open(out, "wb") as handle:
    write_csv(report, handle)
mark("CSV written")
print(json.dumps(marks))
"""


def phases_argv(data: Path, out: Path) -> list[str]:
    """The phases child (module docstring, 5.): the csv run's steps timed one by one in one process."""
    return [sys.executable, "-c", PHASES, str(data), str(RULES), str(ROOT), AS_OF.isoformat(), str(out)]


def show_phases(run: dict) -> None:
    """The phases child's split of a csv run: where the time goes (docs/screening-speed.md quotes it)."""
    if run["rc"] != 0:
        print("    phases run failed: " + (run["err"].strip().splitlines() or ["?"])[-1][:200])
        return
    marks = json.loads(run["out"].strip().splitlines()[-1])
    timed = sum(wall for _, wall, _ in marks)
    print(f"  {'phases':<7} the csv run a step at a time in one process (wall / CPU), load {run['load0']:.2f} -> "
          f"{run['load1']:.2f}:")
    print(f"            {'start and exit of Python':<26} {run['wall'] - timed:5.2f} s")
    for name, wall, cpu in marks:
        print(f"            {name:<26} {wall:5.2f} s / {cpu:5.2f} s")
    print(f"            {'in all':<26} {run['wall']:5.2f} s / {run['cpu']:5.2f} s, peak {run['peak_mb']:,.0f} MB")


def floor_argv(data: Path, csv: Path) -> list[str]:
    """The floor child (see the module's docstring, 4.): the columns `screen` reads from `data`, each row kind
    with its own columns (the cells that hold data, as screen reads them), then `csv` written."""
    sys.path.insert(0, str(ROOT))
    from trialkit.screening.run import load_rules, resolve_study, screen_columns

    study = resolve_study(RULES, ROOT)
    wanted = screen_columns(load_rules(RULES, study), study)
    keys = ["record_id", "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
    names = [n for n in pl.read_parquet_schema(data) if n in wanted and n not in keys]
    plain = keys + [n for n in names if not n.startswith("atrq_")]
    repeating = keys + [n for n in names if n.startswith("atrq_")]
    return [sys.executable, "-c", FLOOR, str(data), ",".join(plain), ",".join(repeating), str(csv)]


def cli(data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trialkit", "screen", str(data), "--rules", str(RULES), "--study", str(ROOT),
            "--as-of", AS_OF.isoformat(), *extra]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="candidates")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "trialkit-bench-cache",
                    help="folder for the generated Parquet file (reused when present)")
    ap.add_argument("--formats", default="csv,json,log,table,html,record,from-csv")
    ap.add_argument("--quick", action="store_true",
                    help="50,000 candidates (under a minute on 2 cores); the 1M targets are then not judged")
    args = ap.parse_args(argv)
    n = 50_000 if args.quick else args.n
    data = ensure_data(n, args.seed, args.cache)
    rows = pl.scan_parquet(data).select(pl.len()).collect().item()
    print(f"trialkit screen end to end: {n:,} candidates ({rows:,} rows, {data.stat().st_size / 1e6:.0f} MB typed "
          f"Parquet), {RULES.name}, as of {AS_OF}; {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"polars {pl.__version__}, load {os.getloadavg()[0]:.2f}")
    # The targets are for 1,000,000 candidates; each run also pays a fixed start (imports, study and rule
    # checks), so a smaller run is not judged against a scaled target: its `ok` is null.
    full = n >= 1_000_000
    failed = 0
    with tempfile.TemporaryDirectory(prefix="trialkit-screen-cli-") as tmp:
        out = Path(tmp)
        runs = []
        for fmt in args.formats.split(","):
            if fmt == "log":
                argv_ = cli(data, "--format", "table", "--limit", "20", "--out", str(out / "t.txt"),
                            "--log", str(out / "log.csv"))
            elif fmt == "record":
                argv_ = cli(data, "--record", "R0000123", "--format", "table")
            elif fmt == "from-csv":  # the same data as REDCap's own export format, CSV text, to a CSV report
                argv_ = cli(csv_twin(data), "--format", "csv", "--out", str(out / "screen.from-csv"))
            else:
                argv_ = cli(data, "--format", fmt, "--out", str(out / f"screen.{fmt}"))
            r = run_child(fmt, argv_)
            runs.append(r)
            written = out / ("log.csv" if fmt == "log" else f"screen.{fmt}")
            size = written.stat().st_size / 1e6 if written.exists() else 0.0
            status = "ok" if r["rc"] == 0 else f"EXIT {r['rc']}"
            print(f"  {fmt:<7} wall {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s  peak {r['peak_mb']:6,.0f} MB  "
                  f"output {size:6.1f} MB  load {r['load0']:.2f} -> {r['load1']:.2f}  {status}", flush=True)
            if r["rc"] != 0:
                failed += 1
                print("    " + (r["err"].strip().splitlines() or ["(no message)"])[-1][:200])
            peer = ratio = None
            if fmt == "csv" and r["rc"] == 0:
                floor = run_child("floor", floor_argv(data, written))
                if floor["rc"] == 0:
                    untimed_wall, untimed_cpu = (float(x) for x in floor["out"].split())
                    wall, cpu = floor["wall"] - untimed_wall, floor["cpu"] - untimed_cpu
                    peer, ratio = "I/O floor: python + polars, read the columns, write this CSV", r["wall"] / wall
                    print(f"  {'floor':<7} wall {wall:6.2f} s  CPU {cpu:6.2f} s  (start, import polars, read the "
                          "columns screen reads, each row kind with its own, write the same CSV; csv/floor "
                          f"{ratio:.1f}x)  load {floor['load0']:.2f} -> {floor['load1']:.2f}")
                else:
                    print("    floor run failed: " + (floor["err"].strip().splitlines() or ["?"])[-1][:200])
                show_phases(run_child("phases", phases_argv(data, out / "phases.csv")))
            target = TARGET_S[fmt]
            ok = r["rc"] == 0 and (target is None or r["wall"] < target) and (
                fmt in ("record", "from-csv") or r["peak_mb"] < TARGET_MB)
            what = {"record": "one candidate (--record)", "from-csv": "screen csv from the CSV export"}.get(
                fmt, f"screen {fmt}")
            print("FIGURE " + json.dumps({
                "name": f"{what} wall, {n:,} candidates",
                "value": round(r["wall"], 3),
                "unit": "s",
                "target": None if target is None else (
                    f"< {target:g} s at 1,000,000" + ("" if full else " (not judged at this size)")),
                "peer": peer,
                "ratio": None if ratio is None else round(ratio, 2),
                "ok": (ok if full or r["rc"] != 0 else None) if target is not None or r["rc"] != 0 else None,
                "cpu_s": round(r["cpu"], 3),
                "peak_mb": round(r["peak_mb"]),
                "load": [round(r["load0"], 2), round(r["load1"], 2)],
            }))
        peak = max((r["peak_mb"] for r in runs if r["label"] != "from-csv"), default=0.0)  # the target: Parquet
        print("FIGURE " + json.dumps({
            "name": f"screen peak RSS (largest run), {n:,} candidates",
            "value": round(peak),
            "unit": "MB",
            "target": f"< {TARGET_MB} MB at 1,000,000" + ("" if full else " (not judged at this size)"),
            "peer": None,
            "ratio": None,
            "ok": peak < TARGET_MB if full else None,
        }))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
