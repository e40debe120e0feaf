"""AMCons / GradCAMCons in the pipeline: slice preparation, histogram matching, the threshold rule,
and both rows end to end through the runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baselines.amcons import (
    brain_histogram, erode, healthy_threshold, match_histograms, reference_quantiles, resize_masks,
    resized_inputs,
)
from clisc.data.preprocessing import Volume
from clisc.pipeline.run import run_method


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    brain = np.zeros((40, 30, 6), bool)
    brain[5:35, 5:25, 1:5] = True
    image = np.where(brain, rng.normal(1.0, 0.1, brain.shape), 0.0).astype(np.float32)
    return Volume("case", image, None, (1.0, 1.0, 1.0), np.eye(4), ((0, 40), (0, 30), (0, 6)), (40, 30, 6), brain=brain)


def test_inputs_are_resized_in_unit_range_with_black_background() -> None:
    images, masks = resized_inputs(_volume(), np.array([1, 2]), 32)
    assert images.shape == masks.shape == (2, 32, 32)
    assert images.min() >= 0 and images.max() <= 1 and (images[~masks] == 0).all()
    assert masks[:, 16, 16].all() and not masks[:, 0, 0].any()


def test_masks_resize_and_erode() -> None:
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:6, 2:6] = True
    assert resize_masks(masks, 16).sum() == 64 and resize_masks(masks, (8, 4)).shape == (1, 8, 4)
    assert erode(masks, 3).sum() == 4 and erode(masks, 1).sum() == 16


def test_histogram_matching_maps_brain_to_the_reference_and_keeps_order() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 4:12, 4:12] = True
    reference_images = np.where(masks, rng.uniform(0.6, 0.8, masks.shape), 0.0)
    reference = reference_quantiles(brain_histogram(reference_images, masks))
    assert reference[0] == pytest.approx(0.6, abs=0.01) and reference[-1] == pytest.approx(0.8, abs=0.01)
    images = np.where(masks, rng.uniform(0.0, 0.3, masks.shape), 0.0).astype(np.float32)
    matched = match_histograms(images, masks, reference)
    assert (matched[~masks] == 0).all()
    inside = matched[0][masks[0]]
    assert inside.min() >= 0.59 and inside.max() <= 0.81
    order = np.argsort(images[0][masks[0]], kind="stable")
    assert (np.diff(inside[order]) >= -1e-6).all()  # monotone: the brightest stays the brightest


@pytest.mark.parametrize("percentile,expected", [(50.0, 49.5), (95.0, 94.05)])
def test_healthy_threshold_is_a_percentile(percentile: float, expected: float) -> None:
    assert healthy_threshold(np.arange(100, dtype=float), percentile) == pytest.approx(expected)


def test_healthy_threshold_needs_values() -> None:
    with pytest.raises(ValueError, match="no healthy"):
        healthy_threshold(np.zeros(0), 95.0)


@pytest.mark.parametrize("method", ["amcons", "gradcamcons"])
def test_runs_end_to_end(method: str, synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method(method, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.tags["gt_switches"] == "none"
    assert result.params[f"baselines.{method}.input_size"] == 32


def test_ground_truth_healthy_slices_are_tagged(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("amcons", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None, overrides={"baselines.healthy_source": "ground_truth"})
    assert result.tags["label_free"] == "false" and "healthy_source" in result.tags["gt_switches"]


@pytest.mark.brats_sample
def test_real_slices_keep_the_tumour_bright_and_maps_stay_in_the_brain(brats_sample: Path) -> None:
    """On a real case the prepared input keeps FLAIR's hyperintense tumour brighter than the brain
    after histogram matching, and an (untrained) VAE's mask never leaves the brain."""
    import torch

    from baselines.amcons import TrainedVae, prepare, segment_volume
    from baselines.constrained_vae import build_vae
    from baselines.settings import ConstrainedVaeSettings
    from clisc.data.discovery import discover_cases
    from clisc.data.preprocessing import load_volumes
    from clisc.stages.slice_input import axial_slices

    volume = load_volumes(discover_cases(brats_sample)[:1], progress=False)[0]
    z = int(np.argmax(volume.label.sum(axis=(0, 1))))
    settings = ConstrainedVaeSettings(input_size=64, brain_erosion=2)
    raw, masks = resized_inputs(volume, np.array([z]), 64)
    reference = reference_quantiles(brain_histogram(raw, masks))
    images, eroded = prepare(volume, np.array([z]), settings, reference)
    tumour = resize_masks(axial_slices(volume.label, [z]).astype(bool), 64) & eroded  # as the VAE sees it
    assert images[tumour].mean() > images[eroded & ~tumour].mean() + 0.1
    torch.manual_seed(0)
    trained = TrainedVae(build_vae(settings).eval(), reference)
    amap, mask = segment_volume(volume, trained, "amcons", settings, cut=0.0)
    assert amap.shape == volume.image.shape and not (mask & ~volume.brain).any() and mask.any()
