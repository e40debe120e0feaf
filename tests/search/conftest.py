"""Fixtures for the search tests: the toy objective module (importable by spawned workers) and a store."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("clisc_test_fakes", HERE.parent / "tracking" / "fakes.py")
_FAKES = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_FAKES)


@pytest.fixture(scope="module")
def toy(request: pytest.FixtureRequest) -> ModuleType:
    """``clisc_search_toy_objective``, imported by name with this folder on sys.path (spawn children
    inherit the parent's sys.path, so they unpickle its functions)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(HERE))
        yield importlib.import_module("clisc_search_toy_objective")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One empty SQLite store per test module, copied from the session's migrated template."""
    return _FAKES.fresh_store(tmp_path_factory)
