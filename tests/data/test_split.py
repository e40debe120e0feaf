from __future__ import annotations

from pathlib import Path

import pytest

from clisc.data.split import (SPLITS, case_id_from_image_path, import_public_split, load_or_create_folds,
                              load_or_create_split, load_split, make_folds, make_split, read_split_csv,
                              write_split_csv)
from clisc.errors import CliscError, DataError

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
    monkeypatch.delenv("CLISC_SPLITS_DIR")  # the default folder: splits/ under the current directory
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


@pytest.mark.parametrize("n, k", [(12, 12), (12, 5), (12, 2), (369, 5), (10, 3)])
def test_folds_test_every_case_once_and_keep_train_test_disjoint(n, k):
    ids = IDS[:n]
    folds = make_folds(ids, k, seed=0)
    assert len(folds) == k
    tested = [c for fold in folds for c in fold["test"]]
    assert sorted(tested) == sorted(ids)  # every case tested exactly once
    assert max(len(f["test"]) for f in folds) - min(len(f["test"]) for f in folds) <= 1
    for fold in folds:
        train, valid, test = (set(fold[name]) for name in SPLITS)
        assert not (train & test or valid & test or train & valid)
        assert train | valid | test == set(ids)
        rest = len(train) + len(valid)
        assert len(valid) == int(rest / 8 + 0.5)  # 7:1, halves rounded up


def test_folds_are_deterministic_and_seeded():
    assert make_folds(list(reversed(IDS[:12])), 4, seed=1) == make_folds(IDS[:12], 4, seed=1)
    assert make_folds(IDS[:12], 4, seed=1) != make_folds(IDS[:12], 4, seed=2)


@pytest.mark.parametrize("k", [1, 4])
def test_bad_fold_count_is_one_line(k):
    with pytest.raises(CliscError, match=f"--folds {k}"):
        make_folds(IDS[:3], k, seed=0)


def test_fold_files_live_in_the_split_folder_and_are_reused(tiny_brats_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLISC_SPLITS_DIR", str(tmp_path / "splits"))
    paths = load_or_create_folds(tiny_brats_dir, 3, seed=0)
    assert [p.parent for p in paths] == [tmp_path / "splits"] * 3
    assert [p.name.split("_", 1)[1] for p in paths] == [f"seed0_fold{i}of3.csv" for i in (1, 2, 3)]
    assert sorted(c for p in paths for c in read_split_csv(p)["test"]) == [f"BraTS20_Training_00{i}" for i in (1, 2, 3)]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert load_or_create_folds(tiny_brats_dir, 3, seed=0) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    first, everyone = read_split_csv(paths[0]), sorted(c for part in read_split_csv(paths[1]).values() for c in part)
    write_split_csv(paths[1], {"train": sorted(set(everyone) - set(first["test"])), "valid": [],
                               "test": first["test"]})  # a hand-edited fold: a case tested twice, one never
    with pytest.raises(DataError, match="exactly once"):
        load_or_create_folds(tiny_brats_dir, 3, seed=0)


def test_excluded_cases_leave_the_split(tiny_brats_dir, tmp_path):
    path = write_split_csv(tmp_path / "given.csv", make_split([f"BraTS20_Training_00{i}" for i in (1, 2, 3)], 0))
    split = load_split(path, ["BraTS20_Training_001", "BraTS20_Training_003"], exclude=["BraTS20_Training_002"])
    assert sorted(c for part in split.values() for c in part) == ["BraTS20_Training_001", "BraTS20_Training_003"]
    made, made_path = load_or_create_split(tiny_brats_dir, seed=0, path=tmp_path / "new.csv",
                                           exclude=["BraTS20_Training_002"])
    assert "BraTS20_Training_002" not in {c for part in made.values() for c in part} and made_path.is_file()


def test_a_given_split_file_must_exist(tiny_brats_dir, tmp_path):
    with pytest.raises(DataError, match="split file not found") as err:
        load_or_create_split(tiny_brats_dir, seed=0, path=tmp_path / "typo.csv", must_exist=True)
    assert err.value.path == tmp_path / "typo.csv" and not (tmp_path / "typo.csv").exists()
