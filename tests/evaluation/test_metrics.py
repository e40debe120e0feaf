"""Dice, HD95 (against medpy) and the empty-mask rule of clisc.evaluation.metrics."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medpy.metric.binary import dc as medpy_dc
from medpy.metric.binary import hd95 as medpy_hd95
from scipy import ndimage

from clisc.errors import CliscError
from clisc.evaluation.metrics import (
    EMPTY_HD95_MM,
    CaseScore,
    bounding_box,
    dice,
    empty_rule,
    hd95,
    score_case,
    surface,
)

def _random_masks(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Two irregular non-empty masks of a random small shape and a random anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 18, size=3))
    masks = []
    for density in rng.uniform(0.05, 0.6, size=2):
        mask = rng.random(shape) < density
        if seed % 2:  # blobby rather than salt-and-pepper
            mask = ndimage.binary_opening(ndimage.binary_dilation(mask))
        mask.flat[rng.integers(mask.size)] = True
        masks.append(mask)
    spacing = tuple(float(s) for s in rng.uniform(0.3, 4.0, size=3))
    return masks[0], masks[1], spacing


@pytest.mark.parametrize("seed", range(24))
def test_hd95_equals_medpy_on_random_masks(seed: int) -> None:
    pred, gt, spacing = _random_masks(seed)
    assert hd95(pred, gt, spacing) == pytest.approx(medpy_hd95(pred, gt, voxelspacing=spacing), abs=1e-9)
    assert dice(pred, gt) == pytest.approx(medpy_dc(pred, gt), abs=1e-12)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 1.25, 3.0), (2.0, 0.7, 0.9)])
def test_hd95_equals_medpy_when_masks_touch_the_border(order: str, spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(7)
    gt = np.zeros((12, 10, 9), dtype=np.uint8, order=order)
    gt[0:5, 3:10, 0:4] = 1  # touches three faces: medpy counts the outside as background
    gt[8:12, 0:3, 6:9] = 1
    pred = np.asarray(gt.copy(order=order) | (rng.random(gt.shape) < 0.05), order=order)
    pred[0, :, :] = 1
    assert hd95(pred, gt, spacing) == pytest.approx(medpy_hd95(pred, gt, voxelspacing=spacing), abs=1e-9)


def test_hd95_far_blob_and_single_voxels() -> None:
    gt = np.zeros((30, 20, 15), dtype=bool)
    gt[3:8, 3:8, 3:8] = True
    pred = gt.copy()
    pred[28, 18, 13] = True  # a one-voxel false positive far away
    spacing = (1.0, 1.5, 2.5)
    assert hd95(pred, gt, spacing) == pytest.approx(medpy_hd95(pred, gt, voxelspacing=spacing), abs=1e-9)
    one, other = np.zeros_like(gt), np.zeros_like(gt)
    one[0, 0, 0], other[3, 4, 0] = True, True
    assert hd95(one, other, spacing) == pytest.approx(np.hypot(3 * 1.0, 4 * 1.5))


def test_hd95_identical_masks_is_zero_and_symmetric() -> None:
    pred, gt, spacing = _random_masks(3)
    assert hd95(gt, gt, spacing) == 0.0
    assert hd95(pred, gt, spacing) == pytest.approx(hd95(gt, pred, spacing), abs=1e-12)


def test_hd95_works_in_2d_with_scalar_spacing() -> None:
    rng = np.random.default_rng(1)
    pred, gt = rng.random((20, 25)) < 0.2, rng.random((20, 25)) < 0.1
    assert hd95(pred, gt, 0.8) == pytest.approx(medpy_hd95(pred, gt, voxelspacing=0.8), abs=1e-9)


@pytest.mark.parametrize(
    ("pred_on", "gt_on", "rule", "dsc", "distance"),
    [
        (False, False, "both", 100.0, 0.0),
        (False, True, "pred", 0.0, EMPTY_HD95_MM),
        (True, False, "gt", 0.0, EMPTY_HD95_MM),
        (True, True, "", 100.0, 0.0),
    ],
)
def test_empty_mask_rule(pred_on: bool, gt_on: bool, rule: str, dsc: float, distance: float) -> None:
    pred, gt = np.zeros((6, 6, 6), dtype=bool), np.zeros((6, 6, 6), dtype=bool)
    pred[2:4, 2:4, 2:4], gt[2:4, 2:4, 2:4] = pred_on, gt_on
    assert empty_rule(pred, gt) == rule
    assert score_case(pred, gt, (1.0, 1.0, 2.0)) == CaseScore(dsc=dsc, hd95=distance, empty=rule)
    assert dice(pred, gt) == dsc / 100.0


def test_empty_hd95_is_the_brats_diagonal_and_overridable() -> None:
    assert EMPTY_HD95_MM == pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.01)
    pred, gt = np.zeros((4, 4, 4), dtype=bool), np.ones((4, 4, 4), dtype=bool)
    assert hd95(pred, gt, 1.0, empty_hd95=374.0) == 374.0
    assert score_case(gt, pred, 1.0, empty_hd95=99.0).hd95 == 99.0


def test_dice_counts_overlap() -> None:
    pred, gt = np.zeros(10, dtype=bool), np.zeros(10, dtype=np.uint8)
    pred[0:4], gt[2:8] = True, 3  # any non-zero label is object
    assert dice(pred, gt) == pytest.approx(2 * 2 / (4 + 6))
    assert score_case(pred, gt, 1.0).dsc == pytest.approx(40.0)


@pytest.mark.parametrize(
    ("pred_shape", "spacing", "message"),
    [
        ((5, 5, 4), (1.0, 1.0, 1.0), "differs from ground-truth shape"),
        ((5, 5, 5), (1.0, 1.0), "has 2 values for a 3D mask"),
        ((5, 5, 5), (1.0, 0.0, 1.0), "finite and positive"),
        ((5, 5, 5), (1.0, float("nan"), 1.0), "finite and positive"),
    ],
)
def test_bad_input_raises_clisc_error(pred_shape: tuple[int, ...], spacing: tuple[float, ...], message: str) -> None:
    with pytest.raises(CliscError, match=message):
        hd95(np.ones(pred_shape, dtype=bool), np.ones((5, 5, 5), dtype=bool), spacing)


@pytest.mark.parametrize("order", ["C", "F"])
def test_bounding_box_and_surface(order: str) -> None:
    mask = np.zeros((7, 8, 9), dtype=bool, order=order)
    assert bounding_box(mask) is None
    mask[1:6, 2:5, 3:9] = True
    assert bounding_box(mask) == (slice(1, 6), slice(2, 5), slice(3, 9))
    expected = mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))
    np.testing.assert_array_equal(surface(mask), expected)


@pytest.mark.brats_sample
def test_hd95_equals_medpy_on_a_real_case(brats_sample: Path) -> None:
    case = brats_sample / "Brats18_2013_20_1"
    gt = np.asarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj) > 0
    pred = ndimage.binary_dilation(gt, iterations=2)
    pred[:, :, 70:74] = False
    pred[5:9, 200:206, 140:150] = True  # false-positive blob near the volume's edge
    expected = medpy_hd95(pred, gt, voxelspacing=(1.0, 1.0, 1.0))
    assert hd95(pred, gt, (1.0, 1.0, 1.0)) == pytest.approx(expected, abs=1e-6)
