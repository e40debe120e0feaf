"""benchmarks/sim2real_synthetic.py: Dice of Sim2Real on tumours pasted into the held-out volumes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from baselines.tumour_simulator import simulate_tumour
from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings
from clisc.stages.slice_input import brain_of

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "sim2real_synthetic.py"


def _load():
    spec = importlib.util.spec_from_file_location("sim2real_synthetic", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim2real_synthetic"] = module
    spec.loader.exec_module(module)
    return module


def test_one_dice_per_paste_and_test_case(synthetic_dataset: Path, tmp_path: Path) -> None:
    module = _load()
    settings = resolve_settings(profile="tiny", overrides={"baselines.sim2real.host_slices": "all",
                                                          "unet.postprocess": "largest_component"})
    ctx = RunContext(synthetic_dataset, settings, cache_root=tmp_path, progress=False, echo=lambda _: None)
    rows = module.synthetic_dice(ctx, pastes=2)
    assert [(r.case_id, r.paste) for r in rows] == [(c, p) for c in ctx.split["test"] for p in (0, 1)]
    assert all(0.0 <= r.dice <= 1.0 and 0.0 <= r.dice_raw <= 1.0 and 0.0 <= r.dice_far <= 1.0 and r.pasted > 0
               for r in rows)
    assert all(0 <= r.predicted <= r.predicted_raw for r in rows)  # post-processing only removes voxels
    assert all(np.isfinite(r.contrast) for r in rows)
    sim2real = settings.baselines.sim2real
    assert all(sim2real.blend[0] <= r.blend <= sim2real.blend[1]
               and sim2real.intensity[0] <= r.intensity <= sim2real.intensity[1] for r in rows)
    assert rows == module.synthetic_dice(ctx, pastes=2)  # seeded pastes, cached network
    # the same pastes' contrasts without the network (--contrast-only)
    assert module.paste_contrasts(ctx, pastes=2) == [(r.case_id, r.paste, r.contrast) for r in rows]
    # a rim of 0 mm scores what the raw score scores
    assert [r.dice_far for r in module.synthetic_dice(ctx, pastes=2, rim_mm=0.0)] == [r.dice_raw for r in rows]
    # the training hosts instead (to choose an inference setting without the test fold)
    assert [r.case_id for r in module.synthetic_dice(ctx, pastes=1, split="train")] == list(ctx.split["train"])


def test_contrast_measures_how_far_a_paste_stands_above_its_surroundings() -> None:
    module = sys.modules.get("sim2real_synthetic") or _load()
    brain = np.ones((20, 20, 20), bool)
    image = np.random.default_rng(0).standard_normal(brain.shape).astype(np.float32)
    mask = np.zeros(brain.shape, bool)
    mask[8:12, 8:12, 8:12] = True
    contrasts = []
    for lift in (0.0, 2.0):
        pasted = np.where(mask, image + lift, image)
        sim = module.SimulatedTumour(pasted, mask, np.where(mask, pasted, 0), 1.0, 0.5, 1.0)
        contrasts.append(module.paste_contrast(sim, brain, (2.0, 2.0, 2.0)))
    assert abs(contrasts[0]) < 0.5 and 1.5 < contrasts[1] < 2.5
    assert np.isnan(module.paste_contrast(module.SimulatedTumour(image, ~brain, image, 1.0, 0.5, 1.0), brain,
                                          (2.0, 2.0, 2.0)))


def test_clear_pastes_keep_their_distance_from_the_real_tumour(synthetic_dataset: Path, tmp_path: Path) -> None:
    module = sys.modules.get("sim2real_synthetic") or _load()
    settings = resolve_settings(profile="tiny")
    ctx = RunContext(synthetic_dataset, settings, cache_root=tmp_path, progress=False, echo=lambda _: None)
    volume = ctx.volumes("test")[0]
    real = volume.label > 0
    assert real.any()
    distance = ndimage.distance_transform_edt(~real, sampling=volume.spacing)
    placed = [module.clear_paste(volume, real, 4.0, settings.baselines.sim2real, np.random.default_rng(seed))
              for seed in range(5)]
    assert any(sim is not None for sim in placed)
    assert all(distance[sim.mask].min() >= 4.0 for sim in placed if sim is not None)
    anywhere = module.clear_paste(volume, real, 0.0, settings.baselines.sim2real, np.random.default_rng(0))
    first = simulate_tumour(volume.image, brain_of(volume), volume.spacing, settings.baselines.sim2real,
                            np.random.default_rng(0))
    np.testing.assert_array_equal(anywhere.mask, first.mask)  # clearance 0: the simulator's first draw
    assert module.clear_paste(volume, np.ones_like(real), 1.0, settings.baselines.sim2real,
                              np.random.default_rng(0), tries=3) is None  # no healthy brain left: no paste
