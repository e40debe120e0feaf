"""Fixture for the search tests: the toy objective module (importable by spawned workers)."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def toy(request: pytest.FixtureRequest) -> ModuleType:
    """``clisc_search_toy_objective``, imported by name with this folder on sys.path (spawn children
    inherit the parent's sys.path, so they unpickle its functions)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(HERE))
        yield importlib.import_module("clisc_search_toy_objective")
