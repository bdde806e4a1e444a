"""Wide logic expressions: evaluation time against expression size (issue 10, item 12).

Prints, for each shape and size (100, 1,000, 2,000, 5,000 terms where they fit the 100,000-character and
MAX_NODES limits), the parse and evaluation wall time, the CPU time of the process (polars threads included),
CPU per 1,000 tree nodes (constant when growth is linear), and the load average, over 1,000 records.

    python benchmarks/bench_wide_logic.py [--rows 1000] [--mode kleene] [--shapes or,sum] [--no-limit]
        [--sizes 100,1000] [--quick]

--quick: the or and sum shapes at 100, 1,000 and 2,000 terms, MAX_NODES lifted (so the growth is seen).
The headline figure (run_all.py's `FIGURE {json}` line) is the CPU per node at the largest size measured
against that at 1,000 terms (the worst shape): near 1 when growth is linear (at 100 terms fixed costs
dominate, so that size is not the baseline).

--no-limit lifts MAX_NODES to measure beyond it (how the limit was chosen).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date

import polars as pl

import trialkit.logic.parser as logic_parser
from trialkit.errors import LogicError
from trialkit.logic import MAX_LENGTH, evaluate, parse, walk

SIZES = (100, 1_000, 2_000, 5_000)
SHAPES = {
    "or": lambda n: " or ".join(f"[f{i}] = '3'" for i in range(n)),
    "and": lambda n: " and ".join(f"[f{i}] < 9" for i in range(n)),
    "sum": lambda n: "sum(" + ", ".join(f"[f{i}]" for i in range(n)) + ") > 5",
    "median": lambda n: "median(" + ", ".join(f"[f{i}]" for i in range(n)) + ") > 5",
    "contains": lambda n: " or ".join(f"contains([t{i % 50}], 'b{i}')" for i in range(n)),
    "datediff": lambda n: " or ".join(f"datediff([d{i % 50}], 'today', 'y') > {i}" for i in range(n)),
    "text_compare": lambda n: " or ".join(f"[t{i % 50}] = [f{i}]" for i in range(n)),
    "round_div": lambda n: "sum(" + ", ".join(f"round([f{i}] / 3, 1)" for i in range(n)) + ")",
}


def frame(fields: int, rows: int) -> pl.DataFrame:
    cols = {"record_id": [str(i) for i in range(rows)]}
    for i in range(fields):
        cols[f"f{i}"] = [str((i * 7 + r) % 10) if (i + r) % 5 else "" for r in range(rows)]
    for i in range(50):
        cols[f"t{i}"] = [("abc", "5", "", "Xyz")[(i + r) % 4] for r in range(rows)]
        cols[f"d{i}"] = [f"20{(i + r) % 24:02d}-0{1 + r % 9}-1{r % 9}" if r % 7 else "" for r in range(rows)]
    return pl.DataFrame(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000)
    ap.add_argument("--mode", default="kleene", choices=["redcap", "kleene"])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--no-limit", action="store_true")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="terms per expression")
    ap.add_argument("--quick", action="store_true", help="or and sum at 100, 1,000, 2,000 terms, no node limit")
    args = ap.parse_args()
    if args.quick:
        args.shapes, args.sizes, args.no_limit = "or,sum", "100,1000,2000", True
    sizes = [int(x) for x in args.sizes.split(",")]
    load0, cpu0 = os.getloadavg()[0], time.process_time()
    per_node: dict[str, list[float]] = {}
    if args.no_limit:
        logic_parser.MAX_NODES = 10**9
    data = frame(max(sizes), args.rows)
    print(f"rows {args.rows}, mode {args.mode}, cores {os.cpu_count()}, MAX_NODES {logic_parser.MAX_NODES:,}")
    print(f"{'shape':13s} {'terms':>6s} {'chars':>7s} {'nodes':>7s} {'parse s':>8s} {'eval s':>7s} {'cpu s':>6s}"
          f" {'cpu/1k nodes':>12s} {'load':>5s}")
    for shape in args.shapes.split(","):
        for n in sizes:
            text = SHAPES[shape](n)
            if len(text) > MAX_LENGTH:
                print(f"{shape:13s} {n:6d} {len(text):7d}  over the {MAX_LENGTH:,}-character limit")
                continue
            t0 = time.perf_counter()
            try:
                node = parse(text)
            except LogicError as exc:
                print(f"{shape:13s} {n:6d} {len(text):7d}  refused: {str(exc)[:70]}")
                continue
            t1, c1 = time.perf_counter(), time.process_time()
            evaluate(node, data, mode=args.mode, as_of=date(2024, 3, 1))
            t2, c2 = time.perf_counter(), time.process_time()
            nodes = sum(1 for _ in walk(node))
            per_node.setdefault(shape, []).append((c2 - c1) / nodes)
            print(
                f"{shape:13s} {n:6d} {len(text):7d} {nodes:7d} {t1 - t0:8.2f} {t2 - t1:7.2f} {c2 - c1:6.2f}"
                f" {1000 * (c2 - c1) / nodes:12.3f} {os.getloadavg()[0]:5.1f}",
                flush=True,
            )
    # Linear growth keeps CPU per node flat: the worst shape's largest size against 1,000 terms (at 100 terms
    # fixed costs dominate).
    growth = {s: v[-1] / v[1] for s, v in per_node.items() if len(v) > 2 and v[1] > 0}
    load1 = os.getloadavg()[0]
    print(f"CPU time of the process {time.process_time() - cpu0:.2f} s; load {load0:.2f} -> {load1:.2f}")
    if growth:
        worst = max(growth, key=growth.__getitem__)
        print("FIGURE " + json.dumps({
            "name": f"wide expressions: CPU per node, largest size vs 1,000 terms (worst shape: {worst})",
            "value": round(growth[worst], 2), "unit": "x", "target": "<= 3x (linear growth)", "peer": None,
            "ratio": None, "ok": growth[worst] <= 3, "load": [round(load0, 2), round(load1, 2)],
        }))


if __name__ == "__main__":
    main()
