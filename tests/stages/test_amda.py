"""Stage 4: discriminative region, random blocks, masked copies, the shipped intensity fallback."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.stages.amda import (AmdaSettings, amda_augment, amda_training_set, discriminative_region,
                               official_intensity_mask, random_block_mask)


def blob_cam(shape: tuple[int, int] = (32, 32), centre: tuple[int, int] = (12, 18)) -> np.ndarray:
    """A Gaussian bump in [0, 1], cut to zero far from its centre (like a ReLU'd CAM)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    bump = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / 40.0)
    return np.where(bump > 0.05, bump, 0.0)


Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture
def batch() -> Batch:
    rng = np.random.default_rng(0)
    images = rng.normal(1.0, 0.2, (4, 32, 32)).astype(np.float32)
    cams = np.stack([blob_cam(), blob_cam(centre=(20, 8)), blob_cam(), np.zeros((32, 32))])
    return images, cams, np.array([1, 0, 1, 1])


def test_region_alpha_zero_is_empty_and_larger_alpha_is_a_superset() -> None:
    cam = blob_cam()
    assert not discriminative_region(cam, 0.0).any()
    regions = [discriminative_region(cam, a) for a in (10, 20, 30, 100)]
    for small, large in zip(regions, regions[1:]):
        assert np.all(large[small]) and large.sum() > small.sum()
    assert np.array_equal(regions[-1], cam > 0)
    assert cam[regions[1]].min() > cam[(cam > 0) & ~regions[1]].max()  # the most activated pixels


def test_region_is_the_top_alpha_percent_of_positive_pixels() -> None:
    rng = np.random.default_rng(3)
    cam = np.where(rng.random((40, 40)) < 0.5, 0.0, rng.random((40, 40)))  # distinct values, half zero
    positive = int((cam > 0).sum())
    for alpha in (10, 20, 30):
        assert abs(int(discriminative_region(cam, alpha).sum()) - alpha / 100 * positive) <= 1
    assert not discriminative_region(np.zeros((5, 5)), 50.0).any()


@pytest.mark.parametrize("shape, block", [((32, 32), 8), ((30, 21), 4), ((7, 9), 16)])
def test_random_block_mask_is_made_of_blocks(shape: tuple[int, int], block: int) -> None:
    mask = random_block_mask(shape, block, 0.5, np.random.default_rng(1))
    assert mask.shape == shape and mask.dtype == bool
    for r in range(0, shape[0], block):
        for c in range(0, shape[1], block):
            cell = mask[r:r + block, c:c + block]
            assert cell.all() or not cell.any()
    assert not random_block_mask(shape, block, 0.0, np.random.default_rng(1)).any()
    assert random_block_mask(shape, block, 1.0, np.random.default_rng(1)).all()


@pytest.mark.parametrize("masking", ["region", "random_blocks"])
def test_alpha_zero_is_no_amda_not_unmasked_duplicates(batch: Batch, masking: str) -> None:
    images, cams, labels = batch
    settings = AmdaSettings(alpha=0.0, masking=masking)
    copies, copy_labels = amda_augment(images, cams, labels, settings, np.random.default_rng(0))
    assert copies.shape == (0, 32, 32) and copy_labels.shape == (0,)
    out, out_labels = amda_training_set(images, cams, labels, settings, np.random.default_rng(0))
    assert np.array_equal(out, images) and out_labels.tolist() == labels.tolist()
    assert not settings.active and settings.read() == {"mode": "none"}


def test_region_masking_masks_exactly_the_region(batch: Batch) -> None:
    images, cams, labels = batch
    copies, copy_labels = amda_augment(images, cams, labels, AmdaSettings(alpha=20.0), np.random.default_rng(0))
    assert len(copies) == 3 and np.all(copy_labels == 1)
    for masked, source in zip(copies, np.flatnonzero(labels == 1)):
        region = discriminative_region(cams[source], 20.0)
        assert np.array_equal(masked != images[source], region)


@pytest.mark.parametrize("changes, reads", [
    ({}, {"mode": "paper", "alpha": 20.0, "copies": 1, "masking": "region"}),
    ({"masking": "random_blocks", "mask_block": 4},
     {"mode": "paper", "alpha": 20.0, "copies": 1, "masking": "random_blocks", "mask_block": 4, "mask_prob": 0.5}),
    ({"mode": "official", "alpha": 0.0}, {"mode": "official", "official_fraction": 0.8}),
    ({"mode": "none"}, {"mode": "none"}),
    ({"copies": 0}, {"mode": "none"}),
])
def test_settings_read_only_what_their_mode_uses(changes: dict, reads: dict) -> None:
    """The classifier_amda cache key: a field the mode ignores (mask_block under region masking)
    must not change it."""
    assert AmdaSettings(**changes).read() == reads
    assert AmdaSettings(**changes).active is (reads["mode"] != "none")


@pytest.mark.parametrize("masking", ["region", "random_blocks"])
@pytest.mark.parametrize("copies_per_slice", [1, 3])
def test_masked_pixels_lie_in_the_region_and_take_the_minimum(batch: Batch, copies_per_slice: int,
                                                              masking: str) -> None:
    images, cams, labels = batch
    settings = AmdaSettings(alpha=30.0, copies=copies_per_slice, masking=masking, mask_block=4, mask_prob=0.5)
    copies, copy_labels = amda_augment(images, cams, labels, settings, np.random.default_rng(2))
    sources = np.repeat(np.flatnonzero(labels == 1), copies_per_slice)
    assert copies.shape == (len(sources), 32, 32) and np.all(copy_labels == 1)
    for masked, source in zip(copies, sources):
        changed = masked != images[source]
        assert np.all(discriminative_region(cams[source], 30.0)[changed])
        assert np.all(masked[changed] == images[source].min())
    assert (copies[0] != images[0]).any()  # something was masked on the first tumour slice
    assert np.array_equal(copies[-copies_per_slice], images[3])  # zero CAM: nothing to mask


def test_seeded_determinism(batch: Batch) -> None:
    images, cams, labels = batch
    settings = AmdaSettings(alpha=30.0, masking="random_blocks", mask_block=2)
    first, _ = amda_augment(images, cams, labels, settings, np.random.default_rng(7))
    again, _ = amda_augment(images, cams, labels, settings, np.random.default_rng(7))
    other, _ = amda_augment(images, cams, labels, settings, np.random.default_rng(8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_no_tumour_slice_gives_an_empty_set(batch: Batch) -> None:
    images, cams, _ = batch
    copies, copy_labels = amda_augment(images, cams, np.zeros(4, int), AmdaSettings(),
                                       np.random.default_rng(0))
    assert copies.shape == (0, 32, 32) and copy_labels.shape == (0,)


def test_official_intensity_mask_on_a_hand_made_image() -> None:
    image = np.array([[[2.0, 3.0, 4.0], [9.0, 10.0, 12.0]]], dtype=np.float32)  # threshold 2 + 0.8 * 10 = 10
    assert official_intensity_mask(image).tolist() == [[[2, 3, 4], [9, 10, 2]]]
    assert official_intensity_mask(image, fill=0.0).tolist() == [[[2, 3, 4], [9, 10, 0]]]
    assert official_intensity_mask(image, fraction=0.5).tolist() == [[[2, 3, 4], [2, 2, 2]]]
    uint8_like = np.array([[[0.0, 100.0, 204.0, 205.0, 255.0]]])  # the code's 8-bit images: fill 0
    assert official_intensity_mask(uint8_like).tolist() == [[[0, 100, 204, 0, 0]]]


@pytest.mark.parametrize("mode, size, originals_kept", [("paper", 7, True), ("official", 4, False),
                                                        ("none", 4, True)])
def test_training_set_per_mode(batch: Batch, mode: str, size: int, originals_kept: bool) -> None:
    images, cams, labels = batch
    out, out_labels = amda_training_set(images, cams, labels, AmdaSettings(mode=mode),
                                        np.random.default_rng(0))
    assert out.shape == (size, 32, 32) and len(out_labels) == size
    assert np.array_equal(out[:4], images) == originals_kept
    assert out_labels[:4].tolist() == labels.tolist()


@pytest.mark.parametrize("changes", [{"mode": "cam"}, {"alpha": 120.0}, {"mask_prob": -0.1},
                                     {"copies": -1}, {"mask_block": 0}, {"masking": "blocks"}])
def test_settings_are_checked(changes: dict) -> None:
    with pytest.raises(ValueError):
        AmdaSettings(**changes)


@pytest.mark.parametrize("mode", ["paper", "official", "none"])
def test_training_set_keeps_a_half_precision_dtype(mode):
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16)).astype(np.float16)
    cams = rng.random((4, 16, 16)).astype(np.float32)
    out, labels = amda_training_set(images, cams, np.array([1, 0, 1, 0]), AmdaSettings(mode=mode), rng)
    assert out.dtype == np.float16 and len(out) == len(labels) == (6 if mode == "paper" else 4)
