"""What `trialkit` does when its standard output stops taking text: a reader that leaves (`| head`) and a full
disk (`> file`). Run as the real process, since both are about the process's own output and exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREEN = ["screen", "examples/kap_trd_intake.csv", "--rules", "eligibility_rules/kap_trd.yaml", "--as-of",
          "2026-11-02"]


def _trialkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "trialkit", *args]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_reader_that_leaves_early_ends_the_command_quietly(fmt):
    # `trialkit screen ... --format csv | head -1`: polars writes the CSV (its error has no errno), Python the JSON
    proc = subprocess.Popen(_trialkit(*SCREEN, "--format", fmt), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.read(200)
    proc.stdout.close()  # the reader leaves; the report (300 candidates) is far more than a pipe holds
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first
    assert proc.returncode == 141, err  # as a shell reports any program stopped by SIGPIPE
    assert "internal error" not in err and "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [[*SCREEN, "--format", "csv"], ["dictionary", "export"]], ids=["polars", "python"])
def test_a_full_disk_behind_standard_output_is_said_not_an_internal_error(args):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(_trialkit(*args), cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2
    assert "No space left on device" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_process_leaves_all_of_its_output_and_its_exit_code(tmp_path):
    # the command ends without the interpreter's teardown: what it printed must still be all there
    from click.testing import CliRunner

    from trialkit.cli import cli

    expected = CliRunner().invoke(cli, [*SCREEN, "--format", "csv"])
    out = tmp_path / "out.csv"
    with out.open("wb") as handle:
        proc = subprocess.run(_trialkit(*SCREEN, "--format", "csv"), cwd=ROOT, stdout=handle,
                              stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == expected.exit_code == 0
    assert out.read_bytes() == expected.stdout_bytes
    assert b"87 eligible" in proc.stderr
