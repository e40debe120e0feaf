"""benchmarks/sim2real_synthetic.py: Dice of Sim2Real on tumours pasted into the held-out volumes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "sim2real_synthetic.py"


def test_one_dice_per_paste_and_test_case(synthetic_dataset: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("sim2real_synthetic", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim2real_synthetic"] = module
    spec.loader.exec_module(module)
    settings = resolve_settings(profile="tiny", overrides={"baselines.sim2real.host_slices": "all"})
    ctx = RunContext(synthetic_dataset, settings, cache_root=tmp_path, progress=False, echo=lambda _: None)
    rows = module.synthetic_dice(ctx, pastes=2)
    assert [(case, paste) for case, paste, *_ in rows] == [(c, p) for c in ctx.split["test"] for p in (0, 1)]
    assert all(0.0 <= dice <= 1.0 and predicted >= 0 and truth > 0 for _, _, dice, predicted, truth in rows)
    assert rows == module.synthetic_dice(ctx, pastes=2)  # seeded pastes, cached network
