"""MedCLIP-SAM's CRF wrapper (pulls a noisy saliency map onto the image's edges) and the box of the
largest region."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from baselines.crf import crf_unary, dense_crf, largest_region_box

needs_crf = pytest.mark.skipif(importlib.util.find_spec("pydensecrf") is None,
                               reason="pydensecrf2 not installed (pip install -e '.[crf]')")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_unary_energies_favour_the_salient_label() -> None:
    energy = crf_unary(np.array([[0.0, 0.5, 1.0]]))
    assert energy.shape == (2, 3) and energy.dtype == np.float32
    assert energy[1, 2] == pytest.approx(0.0, abs=1e-6) and energy[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert energy[0, 2] > 10 and energy[1, 0] > 10  # -log(eps) / (tau sigmoid(.)): large
    assert energy[0, 1] == pytest.approx(energy[1, 1])  # s = 0.5: no preference


@needs_crf
def test_crf_sharpens_a_noisy_shifted_map_toward_the_image_edges() -> None:
    truth = np.zeros((64, 64), bool)
    truth[20:44, 16:40] = True
    grey = np.where(truth, 200, 40).astype(np.uint8)
    image = np.repeat(grey[:, :, None], 3, axis=2)
    rng = np.random.default_rng(0)
    saliency = ndimage.gaussian_filter(np.roll(truth, (3, 3), axis=(0, 1)).astype(float), 4)
    saliency = np.clip(saliency + 0.15 * rng.standard_normal(saliency.shape), 0, 1)
    thresholded = saliency > 0.5
    refined = dense_crf(image, saliency)
    assert refined.shape == truth.shape and refined.dtype == bool
    assert _iou(refined, truth) > _iou(thresholded, truth) + 0.15
    assert (refined & ~truth).sum() < (thresholded & ~truth).sum()  # fewer pixels across the edge
    assert _iou(dense_crf(image, saliency, iterations=5), truth) >= _iou(refined, truth)


@needs_crf
def test_crf_checks_shapes() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        dense_crf(np.zeros((8, 8), np.uint8), np.zeros((8, 8)))


def test_largest_region_box_follows_the_bounding_rect_rule() -> None:
    mask = np.zeros((20, 30), bool)
    mask[2:4, 2:4] = True  # 4 pixels
    mask[10:15, 5:12] = True  # 35 pixels: the largest
    np.testing.assert_array_equal(largest_region_box(mask), [5, 10, 12, 15])  # [x, y, x + w, y + h]
    mask[:, :] = False
    mask[15:20, 25:30] = True  # touching the border: clipped to W - 1, H - 1
    np.testing.assert_array_equal(largest_region_box(mask), [25, 15, 29, 19])
    diagonal = np.eye(6, dtype=bool)  # 8-connected: one region
    np.testing.assert_array_equal(largest_region_box(diagonal), [0, 0, 5, 5])
    assert largest_region_box(np.zeros((5, 5), bool)) is None
