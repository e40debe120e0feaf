from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clisc.data.discovery import CaseFiles, discover_cases
from clisc.data.io import VALID_LABELS, load_case, whole_tumour
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
