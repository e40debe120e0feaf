from __future__ import annotations

from pathlib import Path

import pytest

from clisc.data.split import (SPLITS, case_id_from_image_path, import_public_split, load_or_create_split,
                              make_split, read_split_csv, write_split_csv)
from clisc.errors import DataError

IDS = [f"BraTS20_Training_{i:03d}" for i in range(1, 370)]


@pytest.mark.parametrize("n, counts", [(369, (258, 37, 74)), (12, (8, 1, 3)), (3, (2, 0, 1)), (1, (1, 0, 0))])
def test_counts_and_coverage(n, counts):
    split = make_split(IDS[:n], seed=0)
    assert tuple(len(split[name]) for name in SPLITS) == counts
    listed = [c for name in SPLITS for c in split[name]]
    assert sorted(listed) == sorted(IDS[:n])


def test_deterministic_and_independent_of_input_order():
    forward = make_split(IDS, seed=3)
    assert make_split(list(reversed(IDS)), seed=3) == forward
    assert make_split(set(IDS), seed=3) == forward
    assert make_split(IDS, seed=4) != forward


def test_bad_ratios_rejected():
    with pytest.raises(ValueError):
        make_split(IDS, seed=0, ratios=(0.5, 0.1, 0.1))


def test_csv_round_trip(tmp_path):
    split = make_split(IDS[:20], seed=1)
    path = write_split_csv(tmp_path / "deep" / "split.csv", split)
    assert path.read_text().splitlines()[0] == "case_id,split"
    assert read_split_csv(path) == split


@pytest.mark.parametrize("text, problem", [
    ("case,fold\na,train\n", "missing column"),
    ("case_id,split\na,train\nb,holdout\n", "unknown split"),
    ("case_id,split\na,train\na,test\n", "more than once"),
])
def test_bad_split_csv_raises(tmp_path, text, problem):
    path = tmp_path / "split.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_split_csv(path)
    assert err.value.path == path


@pytest.mark.parametrize("image_path, case_id", [
    ("../data/BraTS2020/image/BraTS20_Training_001.nii.gz", "BraTS20_Training_001"),
    ("/abs/BraTS20_Training_002/BraTS20_Training_002_flair.nii", "BraTS20_Training_002"),
    ("C:\\data\\BraTS20_Training_003\\flair.nii.gz", "BraTS20_Training_003"),
])
def test_case_id_from_public_image_path(image_path, case_id):
    assert case_id_from_image_path(image_path) == case_id


def _public_csv(path: Path, ids: list[str]) -> Path:
    rows = [f"../data/BraTS2020/image/{c}.nii.gz,../data/BraTS2020/label/{c}.nii.nii.gz" for c in ids]
    path.write_text("\n".join(["image_pth,mask_pth", *rows]) + "\n")
    return path


def test_import_public_split(tmp_path):
    csvs = [_public_csv(tmp_path / f"{n}.csv", ids) for n, ids in
            [("train", IDS[2:5]), ("valid", IDS[:1]), ("test", IDS[5:7] + IDS[1:2])]]
    split = import_public_split(*csvs)
    assert split == {"train": IDS[2:5], "valid": IDS[:1], "test": sorted(IDS[5:7] + IDS[1:2])}


def test_import_public_split_rejects_a_case_in_two_splits(tmp_path):
    csvs = [_public_csv(tmp_path / f"{n}.csv", IDS[:2]) for n in SPLITS]
    with pytest.raises(DataError, match="already listed") as err:
        import_public_split(*csvs)
    assert err.value.path == csvs[1]


def test_load_or_create_split_writes_then_reuses(tiny_brats_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split, path = load_or_create_split(tiny_brats_dir, seed=0)
    assert path.parent == Path("splits") and path.name.endswith("_seed0.csv") and path.is_file()
    assert sorted(c for part in split.values() for c in part) == [f"BraTS20_Training_00{i}" for i in (1, 2, 3)]
    write_split_csv(path, {"train": split["test"], "valid": split["train"], "test": split["valid"]})
    reused, same_path = load_or_create_split(tiny_brats_dir, seed=0)
    assert same_path == path and reused["train"] == split["test"]


def test_stale_split_file_raises(tiny_brats_dir, tmp_path):
    path = write_split_csv(tmp_path / "split.csv", make_split(["BraTS20_Training_001", "other"], seed=0))
    with pytest.raises(DataError, match="stale split") as err:
        load_or_create_split(tiny_brats_dir, seed=0, path=path)
    assert err.value.path == path
