"""Fixtures for the tracking tests: fake results and a temporary SQLite MLflow store."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def load_fakes():
    """tests/tracking/fakes.py as a module (importable from every test folder, whatever sys.path is)."""
    spec = importlib.util.spec_from_file_location("clisc_test_fakes", Path(__file__).with_name("fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_FAKES = load_fakes()


@pytest.fixture(scope="session")
def fakes():
    """The fake-results helpers (tests/tracking/fakes.py)."""
    return _FAKES


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One empty SQLite store per test module, copied from the session's migrated template."""
    return _FAKES.fresh_store(tmp_path_factory)
