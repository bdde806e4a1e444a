"""Fixtures for intake tests: a small classic study (tests/records/data/mini), the KAP-TRD study, and clean
intake rows in REDCap's raw flat-export shape (every cell text)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trialkit.definitions.loader import load_study


def _load_shared():
    spec = importlib.util.spec_from_file_location("intake_data", Path(__file__).with_name("intake_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shared = _load_shared()


@pytest.fixture(scope="session")
def mini_study():
    return load_study(shared.MINI_DIR)


@pytest.fixture(scope="session")
def kap_study(repo_root):
    return load_study(repo_root)


@pytest.fixture
def clean_rows() -> list[dict]:
    return [dict(r) for r in shared.CLEAN_ROWS]


@pytest.fixture
def clean_csv(tmp_path, clean_rows) -> Path:
    return shared.write_csv(tmp_path / "intake.csv", clean_rows)
