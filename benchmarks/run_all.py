"""Run every benchmarks/bench_*.py with --quick and print one table of their headline figures.

    python benchmarks/run_all.py [--timeout 90] [--budget 300] [--only screen,logic] [--strict]

Each script runs in its own process, one after another (never two heavy jobs at once), with a per-script
timeout and an overall budget. A script reports its figures as lines `FIGURE {json}` (one JSON object: name,
value, unit, target, peer, ratio, ok). The table has one row per figure, plus a row for a script that failed,
timed out or printed no FIGURE line; then the machine (cores, python, polars) and the load average before
and after. Exit status: 1 when any script failed, timed out or reported nothing (with --strict also when a
figure missed its target), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PREFIX = "FIGURE "
COLUMNS = ("benchmark", "figure", "value", "target", "peer", "ratio", "ok")


@dataclass
class Outcome:
    """One script's run: its exit status (None when it timed out), wall time and figures."""

    script: str
    returncode: int | None
    wall: float
    figures: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0
    tail: str = ""  # the last line of its error output, for a failed run
    skipped: bool = False  # not run: the overall budget was spent

    @property
    def problem(self) -> str | None:
        if self.skipped:
            return "not run: the overall budget was spent"
        if self.returncode is None:
            return f"timed out after {self.wall:.0f} s"
        if self.returncode != 0:
            return f"failed (exit {self.returncode})" + (f": {self.tail}" if self.tail else "")
        if not self.figures:
            return "no FIGURE line" + (f" ({self.malformed} malformed)" if self.malformed else "")
        return None


def parse_figures(text: str) -> tuple[list[dict[str, Any]], int]:
    """The FIGURE objects in a script's output, and how many FIGURE lines were not a JSON object with a name."""
    figures, malformed = [], 0
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            obj = json.loads(line[len(PREFIX):])
        except ValueError:
            malformed += 1
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            figures.append(obj)
        else:
            malformed += 1
    return figures, malformed


def run_script(script: Path, timeout: float, args: tuple[str, ...] = ("--quick",)) -> Outcome:
    """Run one benchmark; on timeout its whole process group (it may have children) is ended."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout ends its children too
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    wall = time.perf_counter() - t0
    figures, malformed = parse_figures(out or "")
    lines = (err or "").strip().splitlines()
    return Outcome(script.stem, code, wall, figures, malformed, lines[-1][:120] if lines else "")


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3g}"


def rows(outcomes: list[Outcome]) -> list[tuple[str, ...]]:
    """The table's rows: one per figure, one per script with a problem."""
    out = []
    for o in outcomes:
        for f in o.figures:
            ok = f.get("ok")
            value = _number(f.get("value"))
            unit = f.get("unit") or ""
            out.append((
                o.script,
                str(f["name"]),
                f"{value} {unit}".strip(),
                str(f.get("target") or ""),
                str(f.get("peer") or ""),
                f"{_number(f.get('ratio'))}x" if f.get("ratio") is not None else "",
                "yes" if ok is True else "NO" if ok is False else "",
            ))
        if o.problem:
            out.append((o.script, o.problem, "", "", "", "", "NO"))
    return out


def table(body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *body]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def machine() -> str:
    try:
        import polars

        pv = polars.__version__
    except ImportError:
        pv = "not installed"
    return f"{os.cpu_count()} cores, python {platform.python_version()}, polars {pv}"


def exit_status(outcomes: list[Outcome], strict: bool = False) -> int:
    if any(o.problem for o in outcomes):
        return 1
    if strict and any(f.get("ok") is False for o in outcomes for f in o.figures):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per script")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds for all scripts together")
    ap.add_argument("--only", help="comma-separated parts of script names to run (default: all)")
    ap.add_argument("--strict", action="store_true", help="also exit 1 when a figure misses its target")
    args = ap.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        scripts = [s for s in scripts if any(w in s.stem for w in wanted)]
    load0 = os.getloadavg()
    started = time.perf_counter()
    outcomes = []
    for script in scripts:
        left = args.budget - (time.perf_counter() - started)
        if left <= 1:
            outcomes.append(Outcome(script.stem, None, 0.0, skipped=True))
            continue
        print(f"running {script.name} --quick ...", file=sys.stderr, flush=True)
        o = run_script(script, min(args.timeout, left))
        print(f"  {o.wall:.1f} s, {len(o.figures)} figure(s){'; ' + o.problem if o.problem else ''}",
              file=sys.stderr, flush=True)
        outcomes.append(o)
    load1 = os.getloadavg()
    print(table(rows(outcomes)))
    print()
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{x:.2f}' for x in load0)}; "
          f"after {', '.join(f'{x:.2f}' for x in load1)}; {time.perf_counter() - started:.0f} s in all")
    missed = sum(f.get("ok") is False for o in outcomes for f in o.figures)
    if missed:
        print(f"{missed} figure(s) missed their target")
    return exit_status(outcomes, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
