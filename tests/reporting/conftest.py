"""Fixtures for the reporting tests: fake results (tests/tracking/fakes.py) and a temporary MLflow store."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "clisc_test_fakes", Path(__file__).resolve().parents[1] / "tracking" / "fakes.py"
)
_FAKES = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_FAKES)


@pytest.fixture(scope="session")
def fakes():
    """The fake-results helpers (tests/tracking/fakes.py)."""
    return _FAKES


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One empty SQLite store per test module, copied from the session's migrated template."""
    return _FAKES.fresh_store(tmp_path_factory)
