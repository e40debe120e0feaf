"""The search tests' toy objectives (tests/search), importable by spawned search workers."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

SEARCH_TESTS = Path(__file__).resolve().parents[1] / "search"


@pytest.fixture(scope="module")
def toy() -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SEARCH_TESTS))
        yield importlib.import_module("clisc_search_toy_objective")
