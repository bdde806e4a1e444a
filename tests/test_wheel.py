"""`pip install trialkit` from a built wheel, then `trialkit demo`: the demo's study, rules and example data must
ship inside the package, not be read from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("trialkit-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    assert (target / "trialkit" / "_demo" / "examples" / "kap_trd_intake.csv").is_file()

    # Run from a folder that is not the checkout, with the wheel's copy first on the path: the editable install's
    # checkout must play no part.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import trialkit; print(trialkit.__file__)"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(target)
    run = subprocess.run(
        [sys.executable, "-m", "trialkit", "demo", "--offline", "--out-dir", "out"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "screened 300 candidates" in run.stdout
    for name in ("report.html", "screening.json", "screening_log.csv", "validation_findings.csv"):
        assert (workdir / "out" / name).is_file(), name
        assert f"out/{name}" in run.stdout, f"the demo does not list {name}"
