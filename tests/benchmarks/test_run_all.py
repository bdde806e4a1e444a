"""benchmarks/run_all.py: FIGURE parsing, the table, and what a failing, silent or slow script gives (tiny
stand-in scripts, never a real benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("run_all", None)


def test_parse_figures_takes_figure_lines_only_and_counts_malformed(run_all):
    text = "\n".join([
        "human table line",
        'FIGURE {"name": "screen csv", "value": 2.5, "unit": "s", "target": "< 3 s", "peer": null, "ratio": null,'
        ' "ok": true}',
        "FIGURE {not json",
        'FIGURE ["a list"]',
        '  FIGURE {"name": "indented is not a figure line"}',
        'FIGURE {"name": "ratio", "value": 120, "unit": "x", "peer": "one at a time", "ratio": 120, "ok": false}',
    ])
    figures, malformed = run_all.parse_figures(text)
    assert [f["name"] for f in figures] == ["screen csv", "ratio"]
    assert malformed == 2


def test_table_has_one_row_per_figure_and_a_row_per_problem(run_all):
    ok = run_all.Outcome("bench_a", 0, 1.0, [
        {"name": "wall", "value": 2.5, "unit": "s", "target": "< 3 s", "peer": None, "ratio": None, "ok": True},
        {"name": "vs peer", "value": 0.8, "unit": "s", "target": "< 1 s", "peer": "pandas", "ratio": 4.2,
         "ok": False},
    ])
    silent = run_all.Outcome("bench_b", 0, 1.0)
    failed = run_all.Outcome("bench_c", 3, 1.0, tail="ValueError: boom")
    slow = run_all.Outcome("bench_d", None, 60.0)
    body = run_all.rows([ok, silent, failed, slow])
    assert body[0] == ("bench_a", "wall", "2.5 s", "< 3 s", "", "", "yes")
    assert body[1] == ("bench_a", "vs peer", "0.8 s", "< 1 s", "pandas", "4.2x", "NO")
    assert body[2][:2] == ("bench_b", "no FIGURE line")
    assert body[3][:2] == ("bench_c", "failed (exit 3): ValueError: boom")
    assert body[4][:2] == ("bench_d", "timed out after 60 s")
    text = run_all.table(body)
    assert text.splitlines()[0].split() == list(run_all.COLUMNS)
    assert len(text.splitlines()) == 2 + len(body)
    assert run_all.exit_status([ok]) == 0
    assert run_all.exit_status([ok], strict=True) == 1
    assert run_all.exit_status([ok, silent]) == 1


def test_run_script_collects_figures_failures_and_timeouts(run_all, tmp_path):
    good = tmp_path / "bench_good.py"
    good.write_text(
        "import sys\nassert sys.argv[1:] == ['--quick']\n"
        'print(\'FIGURE {"name": "x", "value": 1, "unit": "s", "ok": true}\')\n'
    )
    bad = tmp_path / "bench_bad.py"
    bad.write_text("import sys\nprint('FIGURE {\"name\": \"partial\"}')\nsys.exit('broke')\n")
    slow = tmp_path / "bench_slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    g = run_all.run_script(good, timeout=20)
    assert (g.returncode, g.problem, [f["name"] for f in g.figures]) == (0, None, ["x"])
    b = run_all.run_script(bad, timeout=20)
    assert b.problem == "failed (exit 1): broke"
    assert [f["name"] for f in b.figures] == ["partial"]
    s = run_all.run_script(slow, timeout=0.5)
    assert s.returncode is None and s.problem.startswith("timed out") and s.wall < 10
