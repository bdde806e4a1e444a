"""Shared fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

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
