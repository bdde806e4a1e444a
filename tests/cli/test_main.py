from __future__ import annotations

import subprocess
import sys


def test_help_lists_commands_and_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "trialkit", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "Usage" in proc.stdout


def test_unknown_command_is_usage_error_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "trialkit", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
