from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import clisc.cache
from clisc.data import preprocessing
from clisc.data.discovery import CaseFiles, discover_cases
from clisc.data.io import RawCase, load_case
from clisc.data.preprocessing import (PreprocessedStore, PreprocessSettings, brain_box, load_volumes,
                                      preprocess)
from clisc.errors import DataError

BOX = (slice(3, 23), slice(4, 26), slice(2, 20))  # the brain: 20 x 22 x 18 voxels


def _raw(spacing=(1.0, 1.0, 1.0), shape=(30, 30, 24), outlier: float | None = None) -> RawCase:
    rng = np.random.default_rng(0)
    flair = np.zeros(shape, dtype=np.float32)
    flair[BOX] = rng.normal(100, 10, size=flair[BOX].shape).clip(1)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[8:14, 10:16, 6:12] = 2
    seg[10:12, 12:14, 8:10] = 4
    if outlier is not None:
        flair[10, 10, 10] = outlier
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [5.0, 7.0, -2.0]
    return RawCase("case", flair, seg, affine, spacing, CaseFiles("case", Path("case_flair.nii.gz"), None))


@pytest.mark.parametrize("mode, size", [("paper", (20, 22, 18)), ("official", (19, 21, 17))])
def test_crop_box_inclusive_vs_exclusive(mode, size):
    raw = _raw()
    volume = preprocess(raw, PreprocessSettings(mode=mode))
    assert volume.image.shape == volume.label.shape == size
    assert volume.crop == tuple((s.start, s.start + n) for s, n in zip(BOX, size))
    assert volume.original_shape == (30, 30, 24) and volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(volume.affine[:3, 3], (raw.affine @ [3, 4, 2, 1])[:3])
    assert volume.image.dtype == np.float32 and volume.label.dtype == np.uint8
    assert set(np.unique(volume.label)) == {0, 1}


def test_paper_mode_zscores_brain_and_zeroes_background():
    raw = _raw(shape=(34, 30, 24))
    raw.flair[4:6, 5:7, 3:5] = 0  # background holes inside the box stay 0
    image = preprocess(raw).image
    brain = raw.flair[BOX] != 0
    assert abs(image[brain].mean()) < 1e-4 and abs(image[brain].std() - 1) < 1e-3
    assert np.all(image[~brain] == 0)


def test_official_mode_zscores_the_whole_box():
    raw = _raw()
    raw.flair[3:6, 4:7, 2:5] = 0  # a background corner inside the box
    image = preprocess(raw, PreprocessSettings(mode="official")).image
    assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    assert image[0, 0, 0] == image.min() < 0  # box corner is background, not left at 0


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_clipping_tames_a_single_outlier(mode):
    settings = PreprocessSettings(mode=mode)
    image = preprocess(_raw(outlier=1e6), settings).image
    unclipped = preprocess(_raw(outlier=1e6), PreprocessSettings(mode=mode, clip_percentile=100)).image
    assert unclipped.max() > 50 and image.max() < 6
    assert image[10 - 3, 10 - 4, 10 - 2] == image.max()


def test_resampling_to_target_spacing():
    raw = _raw(spacing=(1.0, 1.0, 2.0))
    volume = preprocess(raw, PreprocessSettings(target_spacing=2.0))
    assert volume.image.shape == volume.label.shape == (10, 11, 18)
    assert volume.spacing == (2.0, 2.0, 2.0)
    assert set(np.unique(volume.label)) == {0, 1}
    native = preprocess(raw)
    assert volume.label.sum() * 8 == pytest.approx(native.label.sum() * 2, rel=0.2)
    # the resampled grid covers the same extent: first new voxel centre sits half an old voxel in
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], native.affine @ [0.5, 0.5, 0, 1])
    np.testing.assert_allclose(np.abs(np.diag(volume.affine)[:3]), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("kwargs", [{"mode": "nnunet"}, {"clip_percentile": 0}, {"target_spacing": -1.0}])
def test_bad_settings_rejected(kwargs):
    with pytest.raises(ValueError):
        PreprocessSettings(**kwargs)


def test_brain_box_bounds():
    flair = np.zeros((5, 6, 7))
    flair[1, 2, 3] = flair[3, 4, 5] = 1
    assert brain_box(flair) == ((1, 4), (2, 5), (3, 6))
    assert brain_box(flair, inclusive=False) == ((1, 3), (2, 4), (3, 5))


def _forbid_reads(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("NIfTI read on a cached case")
    monkeypatch.setattr(preprocessing, "load_case", fail)
    monkeypatch.setattr(nib, "load", fail)


def test_store_second_run_reads_no_nifti(tiny_brats_dir, tmp_path, monkeypatch):
    cases = discover_cases(tiny_brats_dir)
    first = load_volumes(cases, PreprocessSettings(), tmp_path / "cache", progress=False)
    files = sorted((tmp_path / "cache" / "preprocessed").rglob("*.npz"))
    assert [f.name.split("-")[0] for f in files] == [c.case_id for c in cases]
    _forbid_reads(monkeypatch)
    second = load_volumes(cases, PreprocessSettings(), tmp_path / "cache", progress=False)
    for a, b in zip(first, second):
        assert a.case_id == b.case_id and a.crop == b.crop and a.spacing == b.spacing
        assert a.original_shape == b.original_shape
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.affine, b.affine)


def test_store_keys_on_settings_and_input_files(tiny_brats_dir, tmp_path):
    case = discover_cases(tiny_brats_dir)[0]
    paper, official = PreprocessedStore(tmp_path, PreprocessSettings()), PreprocessedStore(
        tmp_path, PreprocessSettings(mode="official"))
    assert paper.directory != official.directory
    before = paper.path(case)
    stat = case.flair.stat()
    os.utime(case.flair, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert paper.path(case) != before and paper.path(case).parent == before.parent


def test_store_leaves_nothing_after_a_failed_write(tiny_brats_dir, tmp_path, monkeypatch):
    case = discover_cases(tiny_brats_dir)[0]
    store = PreprocessedStore(tmp_path / "cache")

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(clisc.cache.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.load(case)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_store_leaves_nothing_after_a_bad_case(tiny_brats_dir, tmp_path):
    case = discover_cases(tiny_brats_dir)[0]
    case.flair.write_bytes(case.flair.read_bytes()[:100])
    with pytest.raises(DataError):
        PreprocessedStore(tmp_path / "cache").load(case)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_store_recomputes_a_corrupt_entry(tiny_brats_dir, tmp_path, caplog):
    case = discover_cases(tiny_brats_dir)[0]
    store = PreprocessedStore(tmp_path)
    good = store.load(case)
    store.path(case).write_bytes(b"not a zip")
    again = store.load(case)
    np.testing.assert_array_equal(good.image, again.image)
    assert "unreadable cache entry" in caplog.text


def test_load_volumes_without_cache_matches_direct_preprocessing(tiny_brats_dir):
    cases = discover_cases(tiny_brats_dir)
    volumes = load_volumes(cases, PreprocessSettings(mode="official"), None, progress=False)
    direct = preprocess(load_case(cases[1]), PreprocessSettings(mode="official"))
    np.testing.assert_array_equal(volumes[1].image, direct.image)


@pytest.mark.brats_sample
def test_real_case_paper_box_one_voxel_larger_than_official(brats_sample):
    raw = load_case(discover_cases(brats_sample)[0])
    paper, official = preprocess(raw), preprocess(raw, PreprocessSettings(mode="official"))
    assert np.subtract(paper.image.shape, official.image.shape).tolist() == [1, 1, 1]
    assert paper.label.sum() == official.label.sum() == np.count_nonzero(raw.seg)
