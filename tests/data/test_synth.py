"""Synthetic BraTS dataset: files on disk, determinism, prefix property, tumour sizes and contrast, atomicity."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from clisc.data.synth import compare, synthesize_case, synthesize_dataset, writer
from clisc.data.synth import anatomy
from clisc.data.synth.anatomy import FULL_SHAPE
from clisc.data.synth.tumour import VOLUME_RANGE, VOLUME_SKEW, target_volume
from clisc.errors import DataError

SMALL = (64, 64, 40)
SMALL_ZOOM = float(np.prod(np.array(SMALL) / np.array(FULL_SHAPE)))


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _size_fifth(volume: float) -> int:
    """Which fifth of the generator's sweep a full-grid whole-tumour volume falls in (0..4)."""
    low, high = np.log(VOLUME_RANGE)
    position = ((np.log(volume) - low) / (high - low)) ** (1.0 / VOLUME_SKEW)
    return min(4, int(position * 5))


def test_case_arrays() -> None:
    flair, seg = synthesize_case(1, seed=0, shape=SMALL)
    assert flair.shape == seg.shape == SMALL
    assert flair.dtype == np.float32 and seg.dtype == np.uint8
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}
    assert flair.min() == 0 and np.array_equal(flair, np.round(flair))
    brain = flair > 0
    assert 0.1 < brain.mean() < 0.5  # a skull-stripped brain in a BraTS-like field of view
    assert not (seg > 0)[~brain].any()  # the tumour lies inside the brain


def test_dataset_files_match_cases(tmp_path: Path) -> None:
    folders = synthesize_dataset(tmp_path, 2, seed=3, shape=SMALL, progress=False)
    assert [f.name for f in folders] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS20_Training_001", "BraTS20_Training_002", "SYNTHETIC"]
    for index, folder in enumerate(folders, start=1):
        flair_path, seg_path = folder / f"{folder.name}_flair.nii.gz", folder / f"{folder.name}_seg.nii.gz"
        flair_img, seg_img = nib.load(flair_path), nib.load(seg_path)
        for image in (flair_img, seg_img):
            assert image.shape == SMALL
            assert image.header.get_zooms() == (1.0, 1.0, 1.0)
            np.testing.assert_array_equal(image.affine, writer.brats_affine(SMALL))
        assert flair_img.get_data_dtype() == np.int16 and seg_img.get_data_dtype() == np.uint8
        flair, seg = synthesize_case(index, seed=3, shape=SMALL)
        np.testing.assert_array_equal(_load(flair_path), flair)
        np.testing.assert_array_equal(_load(seg_path), seg)


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    first, again, other = (synthesize_case(2, seed, SMALL) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[1], synthesize_case(3, 5, SMALL)[1])


def test_prefix_property_and_skip_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = synthesize_dataset(tmp_path / "short", 2, seed=1, shape=SMALL, progress=False)
    calls = []
    real_case = writer.synthesize_case
    monkeypatch.setattr(writer, "synthesize_case", lambda *a: calls.append(a[0]) or real_case(*a))
    synthesize_dataset(tmp_path / "short", 3, seed=1, shape=SMALL, progress=False)
    assert calls == [3]  # cases 1 and 2 were complete and skipped
    longer = synthesize_dataset(tmp_path / "long", 3, seed=1, shape=SMALL, progress=False)
    for a, b in zip(short, longer):
        for suffix in ("_flair.nii.gz", "_seg.nii.gz"):
            np.testing.assert_array_equal(_load(a / f"{a.name}{suffix}"), _load(b / f"{b.name}{suffix}"))


def test_target_volumes_cover_every_size_fifth() -> None:
    for seed in range(20):
        volumes = [target_volume(i, seed) for i in range(1, 40)]
        assert VOLUME_RANGE[0] <= min(volumes) and max(volumes) <= VOLUME_RANGE[1]
        for start in range(len(volumes) - 9):
            assert {_size_fifth(v) for v in volumes[start:start + 10]} == {0, 1, 2, 3, 4}


def test_tumours_span_sizes_and_are_bright() -> None:
    volumes = []
    for index in range(1, 11):
        flair, seg = synthesize_case(index, seed=0, shape=SMALL)
        tumour, brain = seg > 0, flair > 0
        volumes.append(int(tumour.sum()))
        # the generator hits its target volume exactly (the brain has room)
        assert volumes[-1] == round(target_volume(index, 0) * SMALL_ZOOM)
        around = ndi.binary_dilation(tumour, iterations=3) & brain & ~tumour
        assert flair[tumour].mean() > 1.2 * flair[around].mean()
        oedema, core = seg == 2, (seg == 1) | (seg == 4)
        assert oedema.sum() > core.sum() > 0
    assert max(volumes) > 20 * min(volumes)
    assert {_size_fifth(v / SMALL_ZOOM) for v in volumes} == {0, 1, 2, 3, 4}


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = nib.save
    saved = []

    def fail_on_second(image: nib.Nifti1Image, path: Path) -> None:
        saved.append(path)
        if len(saved) == 2:
            raise OSError("disk full")
        real_save(image, path)

    monkeypatch.setattr(nib, "save", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        synthesize_dataset(tmp_path, 1, seed=0, shape=SMALL, progress=False)
    # no case folder, no temporary folder, no half file: only the marker naming the folder synthetic
    assert [p.name for p in tmp_path.iterdir()] == ["SYNTHETIC"]
    monkeypatch.setattr(nib, "save", real_save)
    folder = synthesize_dataset(tmp_path, 1, seed=0, shape=SMALL, progress=False)[0]
    assert sorted(p.name for p in folder.iterdir()) == [f"{folder.name}_flair.nii.gz", f"{folder.name}_seg.nii.gz"]


def test_compare_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthesize_dataset(tmp_path / "a", 2, seed=0, shape=SMALL, progress=False)
    synthesize_dataset(tmp_path / "b", 2, seed=1, shape=SMALL, progress=False)
    stats = compare.dataset_stats(tmp_path / "a")
    assert list(stats["case_id"]) == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert (stats["contrast"] > 1.2).all() and (stats["p99"] > stats["p50"]).all()
    assert compare.main(["--synthetic", str(tmp_path / "a"), "--real", str(tmp_path / "b"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| quantity | synthetic | real |") and "contrast tumour/brain" in out
    assert compare.main(["--synthetic", str(tmp_path / "a"), "--real", str(tmp_path / "missing")]) == 1


@pytest.mark.brats_sample
def test_real_case_stats(brats_sample: Path) -> None:
    folder = brats_sample / "Brats18_CBICA_AQN_1"
    stats = compare.case_stats(folder / f"{folder.name}_flair.nii.gz", folder / f"{folder.name}_seg.nii.gz")
    assert stats["tumour_voxels"] == 26_500 and 1.2 < stats["contrast"] < 2.5


def test_missing_template_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anatomy.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="install nilearn"):
        anatomy.template_files()
