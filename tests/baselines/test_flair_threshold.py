"""The FLAIR-threshold floor: the thresholding itself, on real cases, and end to end through the runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baselines.flair_threshold import ball, threshold_flair
from baselines.settings import FlairThresholdSettings
from clisc.evaluation.metrics import dice
from clisc.pipeline.run import run_method


def _phantom(tumour_radius: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40^3 brain ball of intensity ~1 with a bright sphere (tumour) and one bright voxel (noise)."""
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"))
    brain = ((grid - 20) ** 2).sum(0) <= 18 ** 2
    tumour = ((grid - np.array([24, 20, 20])[:, None, None, None]) ** 2).sum(0) <= tumour_radius ** 2
    image = np.where(brain, 1.0 + 0.01 * np.random.default_rng(0).standard_normal(brain.shape), 0.0)
    image[tumour] = 3.0
    image[10, 20, 20] = 5.0  # an isolated bright voxel: removed by the opening
    return image.astype(np.float32), brain, tumour


def test_ball_is_a_sphere() -> None:
    assert ball(1).sum() == 7 and ball(2).shape == (5, 5, 5) and ball(0).sum() == 1


def test_threshold_finds_the_bright_sphere_and_drops_noise() -> None:
    image, brain, tumour = _phantom()
    # the sphere (2.1 mL) is ~9 % of the brain: the 95th percentile cuts inside it
    mask = threshold_flair(image, brain, (1.0, 1.0, 1.0), FlairThresholdSettings(percentile=95.0))
    assert not mask[10, 20, 20] and not (mask & ~brain).any()
    assert dice(mask, tumour) > 0.8


@pytest.mark.parametrize("min_ml,kept", [(0.0, True), (10.0, False)])
def test_small_components_are_dropped_by_volume_in_ml(min_ml: float, kept: bool) -> None:
    image, brain, tumour = _phantom(tumour_radius=4)  # ~270 voxels = 0.27 mL at 1 mm
    settings = FlairThresholdSettings(percentile=98.0, opening_radius=1, min_component_ml=min_ml)
    assert bool(threshold_flair(image, brain, (1.0, 1.0, 1.0), settings).any()) is kept


def test_empty_brain_gives_an_empty_mask() -> None:
    image = np.zeros((8, 8, 8), np.float32)
    assert not threshold_flair(image, image > 0, (1.0, 1.0, 1.0), FlairThresholdSettings()).any()


@pytest.mark.brats_sample
def test_real_cases_beat_chance(brats_sample: Path) -> None:
    """On real FLAIR the hyperintense whole tumour is found: Dice over twice what a mask of the same
    size placed at random in the brain would score on average."""
    from clisc.data.discovery import discover_cases
    from clisc.data.preprocessing import load_volumes
    volume = load_volumes(discover_cases(brats_sample)[:1], progress=False)[0]
    brain = volume.brain
    mask = threshold_flair(volume.image, brain, volume.spacing, FlairThresholdSettings())
    predicted, true, total = mask.sum(), volume.label.sum(), brain.sum()
    chance = 2 * predicted * true / total / (predicted + true)
    assert dice(mask, volume.label.astype(bool)) > 2 * chance


def test_runs_end_to_end_label_free(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("flair_threshold", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.tags["gt_switches"] == "none"
    assert result.params["baselines.flair_threshold.percentile"] == 95.0
