from __future__ import annotations

import pytest

from clisc.data.check import CaseCheck, check_dataset
from clisc.errors import DataError


def test_clean_dataset_all_good(tiny_brats_dir):
    checks = check_dataset(tiny_brats_dir)
    assert [(c.case_id, c.ok, c.reason) for c in checks] == [
        (f"BraTS20_Training_00{i}", True, "") for i in (1, 2, 3)]
    assert checks[0].path == tiny_brats_dir / "BraTS20_Training_001"


def test_every_bad_case_reported_without_raising(tiny_brats_dir):
    flair = tiny_brats_dir / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])
    seg = tiny_brats_dir / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz"
    seg.unlink()
    (tiny_brats_dir / "BraTS20_Training_004").mkdir()
    checks = {c.case_id: c for c in check_dataset(tiny_brats_dir)}
    assert checks["BraTS20_Training_001"].path == flair
    assert checks["BraTS20_Training_001"].reason.startswith("BraTS20_Training_001_flair.nii.gz: unreadable")
    assert "no segmentation file" in checks["BraTS20_Training_002"].reason
    assert checks["BraTS20_Training_003"] == CaseCheck(
        "BraTS20_Training_003", tiny_brats_dir / "BraTS20_Training_003", True, "", "brats2020")
    assert checks["BraTS20_Training_004"].reason == "no BraTS20_Training_004_flair.nii[.gz] file"
    assert [c.ok for c in checks.values()] == [False, False, True, False]


def test_seg_optional_when_asked(tiny_brats_dir):
    (tiny_brats_dir / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz").unlink()
    assert all(c.ok for c in check_dataset(tiny_brats_dir, require_seg=False))


def test_missing_root_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        check_dataset(tmp_path / "absent")

