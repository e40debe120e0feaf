"""Outputs back in the stored file's grid: crop, resampling and reorientation undone; NIfTI masks;
the native ground truth runs and ``clisc eval`` score against."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import clisc.data.native as native
from clisc.data.discovery import CaseFiles, discover_cases
from clisc.data.io import BRATS_AXCODES, load_case, whole_tumour
from clisc.data.native import native_ground_truth, save_native_mask, to_native
from clisc.data.preprocessing import PreprocessSettings, preprocess
from clisc.errors import DataError
from clisc.evaluation.cli import load_prediction
from clisc.evaluation.evaluate import evaluate_case
from clisc.evaluation.metrics import dice

OTHER_ORIENTATION = ("S", "R", "A")  # every axis moved, two flipped


@pytest.fixture
def case(tiny_brats_dir: Path) -> CaseFiles:
    return discover_cases(tiny_brats_dir)[0]


def _stored_seg(files: CaseFiles) -> np.ndarray:
    return whole_tumour(np.asanyarray(nib.load(files.seg).dataobj))


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_uncropping_gives_back_the_stored_labels(case, mode):
    volume = preprocess(load_case(case), PreprocessSettings(mode=mode))
    back = to_native(volume, volume.label)
    assert back.dtype == np.uint8 and back.shape == nib.load(case.flair).shape
    np.testing.assert_array_equal(back, _stored_seg(case))  # the tumour lies inside either box
    brain = np.asanyarray(nib.load(case.flair).dataobj) != 0
    if mode == "official":  # its box drops the last slice, row and column of the brain
        brain &= np.pad(np.ones(volume.image.shape, bool), [(a, n - b) for (a, b), n in zip(volume.crop, brain.shape)])
    np.testing.assert_array_equal(to_native(volume, volume.brain), brain)


@pytest.mark.parametrize("target", [2.0, 3.0])
def test_resampling_is_undone_by_nearest_neighbour(tmp_path, brats_case_writer, target):
    brats_case_writer(tmp_path, "case", seed=1, shape=(64, 64, 48))  # tumour radius ~8 voxels
    case = discover_cases(tmp_path)[0]
    volume = preprocess(load_case(case), PreprocessSettings(target_spacing=target))
    assert volume.image.shape != tuple(b - a for a, b in volume.crop)
    back = to_native(volume, volume.label)
    truth = _stored_seg(case)
    assert back.shape == truth.shape and dice(back, truth) > 0.85
    # voxel extents stay aligned: the round trip does not shift the mask
    shift = np.subtract(ndimage.center_of_mass(back), ndimage.center_of_mass(truth))
    assert np.abs(shift).max() < 0.5


def test_a_reoriented_copy_preprocesses_identically_and_maps_back_to_its_own_grid(
        case, tmp_path, reoriented_case_writer):
    copy = discover_cases(reoriented_case_writer(case.flair.parent, tmp_path / "copy", OTHER_ORIENTATION).parent)[0]
    for settings in (PreprocessSettings(), PreprocessSettings(target_spacing=3.0)):
        original, reoriented = (preprocess(load_case(c), settings) for c in (case, copy))
        assert reoriented.axcodes == OTHER_ORIENTATION and original.axcodes == BRATS_AXCODES
        for name in ("image", "label", "brain"):
            np.testing.assert_array_equal(getattr(reoriented, name), getattr(original, name))
        assert reoriented.crop == original.crop and reoriented.spacing == original.spacing
        np.testing.assert_allclose(reoriented.affine, original.affine, atol=1e-6)
        back = to_native(reoriented, reoriented.label)
        assert back.shape == nib.load(copy.flair).shape
        if settings.target_spacing is None:
            np.testing.assert_array_equal(back, _stored_seg(copy))
        # the same voxels in the world: reorienting the original's native mask gives the copy's
        expected = nib.Nifti1Image(to_native(original, original.label), nib.load(case.flair).affine)
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(expected.affine),
                                               nib.orientations.axcodes2ornt(OTHER_ORIENTATION))
        np.testing.assert_array_equal(back, np.asanyarray(expected.as_reoriented(ornt).dataobj))


def test_saved_masks_are_uint8_on_the_flair_grid(case, tmp_path, reoriented_case_writer):
    copy = discover_cases(reoriented_case_writer(case.flair.parent, tmp_path / "copy", OTHER_ORIENTATION).parent)[0]
    volume = preprocess(load_case(copy), PreprocessSettings(target_spacing=2.0))
    mask = to_native(volume, volume.label)
    path = save_native_mask(tmp_path / "out" / f"{copy.case_id}.nii.gz", mask, copy, "clisc test")
    saved, flair = nib.load(path), nib.load(copy.flair)
    assert saved.get_data_dtype() == np.uint8 and np.asanyarray(saved.dataobj).dtype == np.uint8
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), mask)
    np.testing.assert_array_equal(saved.affine, flair.affine)
    assert saved.header.get_zooms() == flair.header.get_zooms()
    assert nib.aff2axcodes(saved.affine) == OTHER_ORIENTATION
    assert saved.header["descrip"].tobytes().startswith(b"clisc test")
    np.testing.assert_array_equal(load_prediction(path, mask.shape, flair.affine), mask.astype(bool))
    with pytest.raises(ValueError, match="mask shape"):
        save_native_mask(tmp_path / "bad.nii.gz", mask[:-1], copy)


def test_native_ground_truth_is_cached_and_read_back_exactly(case, tmp_path, monkeypatch):
    truth, spacing = native_ground_truth(case)
    np.testing.assert_array_equal(truth, _stored_seg(case).astype(bool))
    assert native_ground_truth(case, tmp_path)[0].dtype == bool
    monkeypatch.setattr(native, "load_case", lambda *a, **k: pytest.fail("read the NIfTI again"))
    cached, cached_spacing = native_ground_truth(case, tmp_path)
    np.testing.assert_array_equal(cached, truth)
    assert cached_spacing == spacing


def test_native_ground_truth_without_a_seg_names_the_file(case):
    case.seg.unlink()
    with pytest.raises(DataError, match="no segmentation file"):
        native_ground_truth(discover_cases(case.flair.parent.parent)[0])


@pytest.mark.brats_sample
def test_real_case_reoriented_copy_gives_the_same_preprocessed_arrays(brats_sample, tmp_path, reoriented_case_writer):
    case = discover_cases(brats_sample)[1]
    copy = discover_cases(reoriented_case_writer(case.flair.parent, tmp_path, ("R", "A", "S")).parent)[0]
    original, reoriented = (preprocess(load_case(c)) for c in (case, copy))
    np.testing.assert_array_equal(reoriented.image, original.image)
    np.testing.assert_array_equal(reoriented.label, original.label)
    np.testing.assert_array_equal(to_native(reoriented, reoriented.label), _stored_seg(copy))


@pytest.mark.brats_sample
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_real_case_native_scores_equal_cropped_scores_without_resampling(brats_sample, mode):
    """The paper profile (no resampling): scoring in the stored grid is uncropping only and gives
    the very numbers of scoring on the crop."""
    case = discover_cases(brats_sample)[2]
    volume = preprocess(load_case(case), PreprocessSettings(mode=mode))
    pred = ndimage.binary_dilation(volume.label, iterations=2)
    pred[:, :, : pred.shape[2] // 2] = False  # a wrong half: HD95 far from 0
    cropped = evaluate_case(case.case_id, pred, volume.label.astype(bool), volume.spacing)
    truth, spacing = native_ground_truth(case)
    uncropped = evaluate_case(case.case_id, to_native(volume, pred).astype(bool), truth, spacing)
    assert cropped == uncropped and cropped["hd95"] > 5
