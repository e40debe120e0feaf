"""benchmarks/cost_model.py: the unit counts behind the paper-scale projection."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from clisc.pipeline.settings import resolve_settings

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "cost_model.py"


@pytest.fixture(scope="module")
def cm():
    spec = importlib.util.spec_from_file_location("cost_model", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_model"] = module
    spec.loader.exec_module(module)
    return module


def test_brats2020_counts_at_the_papers_settings(cm) -> None:
    s, w = resolve_settings(), cm.Workload()
    assert w.split == {"train": 258, "valid": 37, "test": 74}
    units = cm.stage_units(s, w)
    assert units["unet_round1"]["unet_step"] == 400 * 129  # 400 epochs x ceil(258 / 2)
    assert units["unet_round2"]["unet_step"] == 400 * math.ceil(math.ceil(258 * 0.8) / 2)
    assert units["classifier_raw"]["cls_step"] == 200 * math.ceil(258 * math.ceil(w.brain_slices) / 8)
    assert units["sam_pseudo_labels train"]["sam_encode"] == pytest.approx(258 * w.tumour_slices)
    assert units["predictions test"]["unet_window"] == 74 * 4  # 8 windows of 128^3 in 2 batches of 2


@pytest.mark.parametrize("shape, patch, overlap, expected", [
    ((139, 164, 138), (128, 128, 128), 0.5, 8),
    ((100, 100, 100), (128, 128, 128), 0.5, 1),
    ((64, 64, 64), (16, 16, 16), 0.5, 7 ** 3),
    ((200, 128, 128), (128, 128, 128), 0.0, 2),
])
def test_windows_per_volume(cm, shape, patch, overlap, expected) -> None:
    assert cm.windows_per_volume(shape, patch, overlap) == expected


def test_plans_share_cached_stages(cm) -> None:
    s, w = resolve_settings(), cm.Workload()
    plans = cm.plans(s, w, trials=50)
    table1, table2, alpha, beta, search = plans.values()
    # SAM encodes each slice once: Table 1 pays for train and test, nothing later does
    assert sum(u.get("sam_encode", 0) for _, u in table1) == pytest.approx((258 + 74) * w.tumour_slices)
    for plan in (table2, alpha, beta, search):
        assert sum(u.get("sam_encode", 0) for _, u in plan) == 0
    assert len(alpha) == 3 and len(beta) == 3  # alpha 20, beta 20 and beta 0 come from the tables
    assert "44 trials" in search[0][0] and "6 trials" in search[1][0]  # 4 alphas x 11 thresholds
    assert not any(u.get("cls_step") for _, u in search)  # every alpha's classifier comes from the sweep


def test_costs_scale_with_cases(cm) -> None:
    s = resolve_settings()
    seconds = {name: 1.0 for name in cm.UNITS}
    small = sum(cm.cost(u, seconds) for plan in cm.plans(s, cm.Workload(cases=100)).values() for _, u in plan)
    large = sum(cm.cost(u, seconds) for plan in cm.plans(s, cm.Workload(cases=369)).values() for _, u in plan)
    assert 3.3 < large / small < 4.1
    assert cm.cost({"a": 2, "b": 3}, {"a": 1.5}) == 3.0
    assert cm.merge({"a": 1}, {"a": 2, "b": 1}) == {"a": 3, "b": 1}
