"""The one 2D input every model gets: background black, brain in [0, 1]; on synthetic slices and on
what CLIP, the classifier/CAM and SAM actually receive for a real BraTS case."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import clisc.stages.pseudo_labels as pseudo_labels
from clisc.data.discovery import discover_cases
from clisc.data.io import load_case
from clisc.data.preprocessing import PreprocessSettings, Volume, preprocess
from clisc.foundation.sam import load_sam
from clisc.pipeline.steps_cam import brain_slices, classifier_input
from clisc.pipeline.steps_seg import sam_volume
from clisc.stages.prompts import PromptSettings
from clisc.stages.pseudo_labels import SamSegmenter
from clisc.stages.slice_input import (
    SLICE_ORIENTATION,
    axial_slices,
    background_mask,
    brain_of,
    model_input_slices,
    model_input_volume,
    volume_from_slices,
)
from clisc.stages.slice_labels import SliceLabelSettings, label_volume


def _zscored_slices(background: float) -> tuple[np.ndarray, np.ndarray]:
    """Two 10x12 slices: a brain disc of N(0, 1) values (slice 1: shifted up by 3) on a constant
    ``background``; and the brain mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:10, :12]
    disc = (yy - 4.5) ** 2 + (xx - 5.5) ** 2 <= 16
    brain = np.stack([disc, disc])
    slices = np.where(brain, rng.normal(0, 1, brain.shape) + np.array([0.0, 3.0])[:, None, None], background)
    return slices.astype(np.float32), brain


def test_paper_background_becomes_black_and_the_brain_spans_the_range() -> None:
    slices, brain = _zscored_slices(background=0.0)  # paper preprocessing: background = brain mean
    plain = model_input_slices(slices)
    assert 0.2 < np.median(plain[0][~brain[0]]) < 0.8  # the defect: grey background
    x = model_input_slices(slices, brain)
    assert x.dtype == np.float32 and x.shape == slices.shape
    for s in range(2):
        assert (x[s][~brain[s]] == 0).all() and x[s].min() == 0 and x[s].max() == 1
        assert np.median(x[s][brain[s]]) > 0.3
    # slice 1's brain lies above the old background: background still 0 and darkest
    assert x[1][brain[1]].min() > 0


def test_official_background_is_already_the_minimum_so_nothing_changes() -> None:
    slices, brain = _zscored_slices(background=-4.0)  # whole-box z-score: background below the brain
    np.testing.assert_array_equal(model_input_slices(slices, brain), model_input_slices(slices))


def test_idempotent_constant_slices_and_shapes() -> None:
    slices, brain = _zscored_slices(background=0.0)
    x = model_input_slices(slices, brain)
    np.testing.assert_array_equal(model_input_slices(x), x)
    assert not model_input_slices(np.full((1, 4, 4), 2.5), np.zeros((1, 4, 4), bool)).any()
    with pytest.raises(ValueError, match="brain mask shape"):
        model_input_slices(slices, brain[:, :5])
    with pytest.raises(ValueError, match="NxHxW"):
        model_input_slices(slices[0])


def test_volume_form_and_derived_brain() -> None:
    slices, brain = _zscored_slices(background=0.0)
    image, mask = np.moveaxis(slices, 0, 2), np.moveaxis(brain, 0, 2)  # XxYxZ
    volume = model_input_volume(image, mask)
    assert volume.shape == image.shape
    np.testing.assert_array_equal(np.moveaxis(volume, 2, 0), model_input_slices(slices, brain))
    np.testing.assert_array_equal(model_input_volume(image, mask, [1])[:, :, 0], volume[:, :, 1])
    np.testing.assert_array_equal(background_mask(image), mask)  # no brain voxel is exactly 0 here
    hand_made = Volume("c", image, None, (1.0, 1.0, 1.0), np.eye(4), ((0, 10), (0, 12), (0, 2)), (10, 12, 2))
    np.testing.assert_array_equal(brain_of(hand_made), mask)


def test_a_model_sees_the_transposed_slice_and_its_output_goes_back_exactly() -> None:
    volume = np.arange(3 * 4 * 5).reshape(3, 4, 5)  # XxYxZ, every side different
    slices = axial_slices(volume, [1, 3])
    assert slices.shape == (2, 4, 3)  # NxHxW = NxYxX
    np.testing.assert_array_equal(slices[0], volume[:, :, 1].T)
    np.testing.assert_array_equal(volume_from_slices(axial_slices(volume)), volume)
    np.testing.assert_array_equal(volume_from_slices(slices), volume[:, :, [1, 3]])
    assert SLICE_ORIENTATION == "rows=y,cols=x"


# ------------------------------------------------- a real BraTS case, through the pipeline's calls
class RecordingClip:
    """CLIP stand-in that keeps every image batch it is given (``Nx3xSxS``)."""

    logit_scale = 1.0
    image_size = 224

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.eye(2)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.clone())
        return torch.nn.functional.normalize(torch.ones(len(images), 2), dim=1)


def _resized_masks(brain: np.ndarray, zs: np.ndarray, size: int) -> np.ndarray:
    """Brain masks of slices ``zs`` resized like the images (antialiased bilinear): ``NxSxS`` in [0, 1]."""
    from clisc.stages.slice_labels import resize_slices

    return resize_slices(axial_slices(brain, zs).astype(np.float32), size)[:, 0].numpy()


def _assert_black_background(images: np.ndarray, fraction_brain: np.ndarray, what: str) -> None:
    """Every ``NxHxW`` image: pixels with no brain at all are its darkest value (0), and the brain's
    median sits well above them."""
    for image, weight in zip(images, fraction_brain):
        background, inside = image[weight == 0], image[weight == 1]
        if background.size == 0 or inside.size < 50:
            continue
        assert background.max() == image.min() == 0, what
        assert np.median(inside) > 0.15, what


@pytest.fixture(scope="module")
def real_volume(brats_sample) -> Volume:
    return preprocess(load_case(discover_cases(brats_sample)[0]), PreprocessSettings(mode="paper"))


@pytest.mark.brats_sample
def test_clip_input_has_a_black_background(real_volume: Volume) -> None:
    clip = RecordingClip()
    label_volume(clip, real_volume.image, SliceLabelSettings(batch_size=256), real_volume.brain)
    images = torch.cat(clip.batches)[:, 0].numpy()
    zs = brain_slices(real_volume)
    assert len(images) == len(zs) > 100
    _assert_black_background(images, _resized_masks(real_volume.brain, zs, 224), "CLIP input")


@pytest.mark.brats_sample
def test_classifier_and_cam_input_has_a_black_background(real_volume: Volume) -> None:
    zs = brain_slices(real_volume)[::4]
    images = classifier_input(real_volume, zs, 224)[:, 0].numpy()
    _assert_black_background(images, _resized_masks(real_volume.brain, zs, 224), "classifier input")


@pytest.mark.brats_sample
@pytest.mark.parametrize("equalize", [False, True])
def test_sam_input_has_a_black_background(real_volume: Volume, monkeypatch, equalize: bool) -> None:
    seen: list[np.ndarray] = []
    real_prepare = pseudo_labels.prepare_slice

    def recording(image_slice, equalize=False):
        seen.append(real_prepare(image_slice, equalize))
        return seen[-1]

    monkeypatch.setattr(pseudo_labels, "prepare_slice", recording)
    torch.manual_seed(0)
    sam, _ = load_sam("tiny", "random")
    zs = brain_slices(real_volume)[::10]
    roi = np.zeros(real_volume.image.shape, bool)
    roi[100:120, 100:120, zs] = True  # one prompt on every 10th brain slice
    sam_volume(real_volume, roi, PromptSettings(), SamSegmenter(sam, batch_size=4, equalize=equalize), brain_only=True)
    assert len(seen) == len(zs)
    images = np.stack([s[:, :, 0] for s in seen]).astype(np.float32) / 255
    assert all((s[:, :, 0] == s[:, :, 2]).all() for s in seen)
    masks = axial_slices(real_volume.brain, zs).astype(np.float32)
    _assert_black_background(images, masks, "SAM input")


@pytest.fixture(scope="module")
def long_brain_volume(brats_sample) -> Volume:
    """A sample case whose brain is clearly longer front to back than side to side (not all are)."""
    cases = {c.case_id: c for c in discover_cases(brats_sample)}
    case = cases.get("Brats18_TCIA02_135_1") or pytest.skip("sample case Brats18_TCIA02_135_1 absent")
    return preprocess(load_case(case), PreprocessSettings(mode="paper"))


@pytest.mark.brats_sample
def test_a_2d_model_sees_the_anterior_brain_at_the_top(long_brain_volume: Volume) -> None:
    """What a model sees has rows = the anterior-posterior axis with anterior at the top (the
    radiological display, as the public code's ``image_3d[z, :, :]``): the brain is longer from front
    to back than from side to side, so its extent in rows exceeds its extent in columns; and the
    affine (BraTS: diag(-1, -1, 1)) sends a growing row index towards posterior (world y falls)."""
    real_volume = long_brain_volume
    zs = brain_slices(real_volume)
    z = int(zs[len(zs) // 2])
    image = axial_slices(model_input_volume(real_volume.image, real_volume.brain, [z]))[0]
    brain = axial_slices(real_volume.brain, [z])[0]
    assert image.shape == brain.shape == real_volume.image.shape[1::-1]  # rows = y, columns = x
    rows, cols = np.flatnonzero(brain.any(axis=1)), np.flatnonzero(brain.any(axis=0))
    assert rows[-1] - rows[0] > 1.1 * (cols[-1] - cols[0])  # front-to-back runs down the rows
    world = real_volume.affine @ np.array([[cols[0], rows[0], z, 1], [cols[0], rows[-1], z, 1]], float).T
    assert world[1, 0] > world[1, 1]  # the top row is the most anterior (RAS +y = anterior)
    # the brain's centre of mass sits in the same place in both layouts
    com_display = np.argwhere(brain).mean(axis=0)  # (row, column)
    com_volume = np.argwhere(real_volume.brain[:, :, z]).mean(axis=0)  # (x, y)
    np.testing.assert_allclose(com_display, com_volume[::-1])


@pytest.mark.brats_sample
def test_a_cam_drawn_on_the_display_slice_goes_back_to_the_same_voxels(real_volume: Volume) -> None:
    zs = brain_slices(real_volume)[::20]
    display = axial_slices(real_volume.brain, zs)  # NxYxX, as a CAM or SAM mask comes out
    cam = np.where(display, np.linspace(0, 1, display.shape[1])[None, :, None], 0.0)  # grows down the rows
    back = np.zeros(real_volume.image.shape, np.float32)
    back[:, :, zs] = volume_from_slices(cam)
    np.testing.assert_array_equal(back[:, :, zs] > 0, real_volume.brain[:, :, zs] & (back[:, :, zs] > 0))
    y = np.arange(real_volume.image.shape[1])
    inside = real_volume.brain[:, :, zs[0]]
    np.testing.assert_allclose(back[:, :, zs[0]][inside], np.broadcast_to(
        np.linspace(0, 1, len(y))[None, :], inside.shape)[inside])
