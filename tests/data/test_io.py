from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clisc.data.discovery import CaseFiles, discover_cases
from clisc.data.io import BRATS_AXCODES, VALID_LABELS, load_case, missing_seg_path, require_segs, whole_tumour
from clisc.errors import DataError


@pytest.fixture
def case(tiny_brats_dir: Path) -> CaseFiles:
    return discover_cases(tiny_brats_dir)[0]


def _resave(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    old = nib.load(path)
    nib.save(nib.Nifti1Image(data, old.affine if affine is None else affine), path)


def _truncate(files: CaseFiles) -> Path:
    data = files.flair.read_bytes()
    files.flair.write_bytes(data[: len(data) // 2])
    return files.flair


def _random_bytes(files: CaseFiles) -> Path:
    files.seg.write_bytes(np.random.default_rng(0).bytes(4000))
    return files.seg


def _empty_file(files: CaseFiles) -> Path:
    files.flair.write_bytes(b"")
    return files.flair


def _shape_mismatch(files: CaseFiles) -> Path:
    _resave(files.seg, np.zeros((32, 32, 23), dtype=np.uint8))
    return files.seg


def _affine_mismatch(files: CaseFiles) -> Path:
    affine = nib.load(files.seg).affine.copy()
    affine[0, 3] += 1.0
    _resave(files.seg, np.asarray(nib.load(files.seg).dataobj), affine)
    return files.seg


def _with_value(value: float) -> Callable[[CaseFiles], Path]:
    def damage(files: CaseFiles) -> Path:
        flair = nib.load(files.flair).get_fdata(dtype=np.float32)
        flair[16, 16, 12] = value
        _resave(files.flair, flair)
        return files.flair
    return damage


def _all_zero(files: CaseFiles) -> Path:
    _resave(files.flair, np.zeros((32, 32, 24), dtype=np.int16))
    return files.flair


def _four_d(files: CaseFiles) -> Path:
    flair = np.asarray(nib.load(files.flair).dataobj)
    _resave(files.flair, np.stack([flair, flair], axis=-1))
    return files.flair


def _with_label(value: float, dtype: type) -> Callable[[CaseFiles], Path]:
    def damage(files: CaseFiles) -> Path:
        seg = np.asarray(nib.load(files.seg).dataobj).astype(dtype)
        seg[0, 0, 0] = value
        _resave(files.seg, seg)
        return files.seg
    return damage


def _flair_deleted(files: CaseFiles) -> Path:
    files.flair.unlink()
    return files.flair


@pytest.mark.parametrize("damage, problem", [
    (_truncate, "unreadable"),
    (_random_bytes, "unreadable"),
    (_empty_file, "unreadable"),
    (_flair_deleted, "not found"),
    (_shape_mismatch, "shape"),
    (_affine_mismatch, "affine"),
    (_with_value(np.nan), "NaN"),
    (_with_value(np.inf), "infinite"),
    (_all_zero, "all zeros"),
    (_four_d, "3D"),
    (_with_label(3, np.uint8), "unknown label"),
    (_with_label(-1, np.int16), "unknown label"),
    (_with_label(1.5, np.float32), "non-integer"),
    (_with_label(np.nan, np.float32), "NaN"),
])
def test_bad_input_raises_one_line_error_naming_the_file(case, damage, problem):
    bad_file = damage(case)
    with pytest.raises(DataError) as err:
        load_case(case)
    assert err.value.path == bad_file
    assert problem in err.value.problem
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(bad_file))


def test_missing_seg_raises_only_when_required(case):
    no_seg = CaseFiles(case.case_id, case.flair, None)
    with pytest.raises(DataError, match="no segmentation file") as err:
        load_case(no_seg)
    assert err.value.path == case.flair.parent
    assert load_case(no_seg, require_seg=False).seg is None


def test_good_case_keeps_types_grid_and_labels(case):
    affine = np.array([[-1.5, 0, 0, 10.0], [0, -1.5, 0, 40.0], [0, 0, 2.0, -3.0], [0, 0, 0, 1]])
    for path in (case.flair, case.seg):
        _resave(path, np.asarray(nib.load(path).dataobj), affine)
    raw = load_case(case)
    assert raw.flair.dtype == np.float32 and raw.flair.shape == (32, 32, 24)
    assert raw.seg.dtype == np.uint8 and set(np.unique(raw.seg)) <= set(VALID_LABELS)
    assert raw.spacing == (1.5, 1.5, 2.0)
    np.testing.assert_allclose(raw.affine, affine)
    assert raw.case_id == case.case_id and raw.files == case


def test_trailing_singleton_axis_is_accepted(case):
    flair = np.asarray(nib.load(case.flair).dataobj)
    _resave(case.flair, flair[..., None])
    assert load_case(case).flair.shape == flair.shape


def test_whole_tumour_merges_labels():
    seg = np.array([0, 1, 2, 4, 0], dtype=np.uint8).reshape(5, 1, 1)
    mask = whole_tumour(seg)
    assert mask.dtype == np.uint8 and mask.ravel().tolist() == [0, 1, 1, 1, 0]


# ------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("S", "R", "A"), ("P", "L", "I")])
def test_other_orientations_load_as_brats(case, tmp_path, reoriented_case_writer, axcodes):
    brats = load_case(case)
    assert brats.axcodes == BRATS_AXCODES
    copy = discover_cases(reoriented_case_writer(case.flair.parent, tmp_path / "copy", axcodes).parent)[0]
    assert nib.aff2axcodes(nib.load(copy.flair).affine) == axcodes
    stored = load_case(copy, reorient=False)  # as stored: another voxel order
    assert stored.axcodes == axcodes and not np.array_equal(stored.flair, brats.flair)
    loaded = load_case(copy)
    assert loaded.axcodes == axcodes
    np.testing.assert_array_equal(loaded.flair, brats.flair)
    np.testing.assert_array_equal(loaded.seg, brats.seg)
    np.testing.assert_allclose(loaded.affine, brats.affine, atol=1e-6)
    assert loaded.spacing == brats.spacing


def test_anisotropic_spacing_follows_the_axes(case, tmp_path, reoriented_case_writer):
    for path in (case.flair, case.seg):
        image = nib.load(path)
        affine = image.affine @ np.diag([1.0, 2.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine), path)
    brats = load_case(case)
    assert brats.spacing == (1.0, 2.0, 3.0)
    copy = discover_cases(reoriented_case_writer(case.flair.parent, tmp_path / "copy", ("S", "A", "R")).parent)[0]
    assert load_case(copy, reorient=False).spacing == (3.0, 2.0, 1.0)
    loaded = load_case(copy)
    assert loaded.spacing == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(loaded.flair, brats.flair)


@pytest.mark.parametrize("matrix, problem", [
    ([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]], "degenerate"),
    ([[1.0, -1, 0], [1, 1, 0], [0, 0, 1]], "45 degrees oblique"),
])
def test_an_affine_without_clear_axes_is_refused(case, matrix, problem):
    affine = np.eye(4)
    affine[:3, :3] = matrix
    for path in (case.flair, case.seg):
        nib.save(nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj), affine), path)
    with pytest.raises(DataError, match=f"no clear voxel axes.*{problem}") as err:
        load_case(case)
    assert str(case.flair) in str(err.value) and "\n" not in str(err.value)


def test_a_slightly_oblique_scan_is_reoriented_to_its_nearest_axes(case):
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.0, -1.0, 1.0])
    for path in (case.flair, case.seg):
        nib.save(nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj), affine), path)
    assert load_case(case).axcodes == BRATS_AXCODES


def test_require_segs_names_the_missing_file(case):
    require_segs([case], "anything")
    bare = CaseFiles(case.case_id, case.flair, None)
    with pytest.raises(DataError, match="the fully supervised U-Net needs ground truth") as err:
        require_segs([case, bare], "the fully supervised U-Net")
    assert err.value.path == case.flair.with_name(f"{case.case_id}_seg.nii.gz") == missing_seg_path(bare)
