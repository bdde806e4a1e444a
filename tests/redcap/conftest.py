"""Sandbox fixtures: one real HTTP server per test module; each test gets a fresh project of its own.

Tests drive the real PyCap 2.7.0 `redcap.Project` against it over HTTP (no mocks).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sandbox_data import ADMIN_SECRET, Clock, classic_spec, longitudinal_spec

from trialkit.redcap.sandbox import Sandbox, running_sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox(admin_secret=ADMIN_SECRET) as sb:
        yield sb


@pytest.fixture
def clock(sandbox: Sandbox) -> Iterator[Clock]:
    c = Clock()
    sandbox.set_clock(c)
    yield c
    sandbox.set_clock(None)


@pytest.fixture
def classic(sandbox: Sandbox):
    """A fresh classic project (PyCap Project) on the module's server."""
    token = sandbox.create_project(classic_spec())
    yield sandbox.project(token)
    sandbox.drop_project(token)


@pytest.fixture
def longitudinal(sandbox: Sandbox):
    token = sandbox.create_project(longitudinal_spec())
    yield sandbox.project(token)
    sandbox.drop_project(token)
