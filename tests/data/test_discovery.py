from __future__ import annotations

from pathlib import Path

import pytest

from clisc.data.discovery import CaseFiles, dataset_fingerprint, discover_cases, scan_case_folders
from clisc.errors import DataError

SMALL = (8, 8, 6)


@pytest.mark.parametrize("case_id", ["Brats18_2013_3_1", "BraTS20_Training_001", "BraTS2021_00012", "patient7"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_each_naming_is_found(tmp_path, brats_case_writer, case_id, suffix):
    flair, seg = brats_case_writer(tmp_path, case_id, shape=SMALL, suffix=suffix)
    assert discover_cases(tmp_path) == [CaseFiles(case_id, flair, seg)]


def test_cases_sorted_and_nested_release_folder_found(tmp_path, brats_case_writer):
    release = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    for case_id in ["BraTS20_Training_010", "BraTS20_Training_002", "BraTS20_Training_001"]:
        brats_case_writer(release, case_id, shape=SMALL)
    ids = [c.case_id for c in discover_cases(tmp_path)]
    assert ids == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_010"]


def test_missing_seg_gives_none_and_segm_fallback(tmp_path, brats_case_writer):
    _, seg = brats_case_writer(tmp_path, "BraTS20_Training_001", shape=SMALL)
    seg.unlink()
    _, seg2 = brats_case_writer(tmp_path, "BraTS20_Training_355", shape=SMALL, suffix=".nii")
    renamed = seg2.with_name("W39_1998.09.19_Segm.nii")
    seg2.rename(renamed)
    cases = discover_cases(tmp_path)
    assert [c.seg for c in cases] == [None, renamed]


def test_folder_without_flair_is_reported(tmp_path, brats_case_writer):
    brats_case_writer(tmp_path, "BraTS20_Training_001", shape=SMALL)
    (tmp_path / "BraTS20_Training_002").mkdir()
    (tmp_path / ".hidden").mkdir()
    cases, without_flair = scan_case_folders(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS20_Training_001"]
    assert without_flair == [tmp_path / "BraTS20_Training_002"]


@pytest.mark.parametrize("make_root", [lambda p: p / "absent", lambda p: p])
def test_missing_root_or_no_case_raises(tmp_path, make_root):
    root = make_root(tmp_path)
    with pytest.raises(DataError) as err:
        discover_cases(root)
    assert err.value.path == root


def test_duplicate_case_id_raises(tmp_path, brats_case_writer):
    brats_case_writer(tmp_path / "a", "BraTS20_Training_001", shape=SMALL)
    brats_case_writer(tmp_path / "b", "BraTS20_Training_001", shape=SMALL)
    with pytest.raises(DataError, match="also found"):
        discover_cases(tmp_path)


def test_dataset_fingerprint_order_free_and_size_sensitive(tiny_brats_dir: Path):
    cases = discover_cases(tiny_brats_dir)
    before = dataset_fingerprint(cases)
    assert dataset_fingerprint(list(reversed(cases))) == before
    cases[0].flair.write_bytes(cases[0].flair.read_bytes() + b"\0")
    assert dataset_fingerprint(cases) != before
