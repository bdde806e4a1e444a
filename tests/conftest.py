"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import intake_data  # tests/intake_data.py: a small classic study and clean REDCap-shaped rows
import pytest
from hypothesis import settings

from trialkit.definitions.loader import load_study

# CI (.ci/run) runs the property tests on the same examples every time (derandomize): a gate must not fail on
# a run's luck; developers' runs keep drawing new examples, and what they find becomes a fixed test.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("TRIALKIT_HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_dictionaries() -> Path:
    """The real REDCap dictionaries beside the project, when present; tests skip otherwise."""
    path = SHARED_DATA / "redcap-dictionaries"
    if not path.is_dir():
        pytest.skip("../shared/data/redcap-dictionaries is not present")
    return path


@pytest.fixture(scope="session")
def mini_study():
    return load_study(intake_data.MINI_DIR)


@pytest.fixture(scope="session")
def kap_study(repo_root):
    return load_study(repo_root)


@pytest.fixture
def clean_rows() -> list[dict]:
    return [dict(r) for r in intake_data.CLEAN_ROWS]


@pytest.fixture
def clean_csv(tmp_path, clean_rows) -> Path:
    return intake_data.write_csv(tmp_path / "intake.csv", clean_rows)
