"""Seeded train/valid/test split of case ids, its CSV file, and import of the public code's split.

Counts: ``n_train = round(0.7 n)``, ``n_valid = round(0.1 n)`` (halves round up), the test set takes
the rest; for BraTS 2020's 369 cases that is 258 / 37 / 74 (the public code's files hold
257 / 37 / 75). The split depends only on the set of case ids and the seed, not on their order.

Every split file lives in one folder, ``splits/`` under the current directory (``$CLISC_SPLITS_DIR``
overrides it): ``clisc data split`` writes there and the pipeline reads and creates its splits there.
Cross-validation folds (:func:`make_folds`) are split files too, one per fold.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from clisc.cache import atomic_write_bytes
from clisc.data.discovery import CaseFiles, dataset_fingerprint, discover_cases
from clisc.errors import CliscError, DataError

SPLITS = ("train", "valid", "test")
SPLITS_DIR_ENV = "CLISC_SPLITS_DIR"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def make_split(case_ids: Iterable[str], seed: int,
               ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """Shuffle the sorted unique ids with ``seed`` and cut them by ``ratios``; each list is sorted."""
    ids = sorted(set(case_ids))
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    n_train = _round_half_up(ratios[0] * len(ids))
    n_valid = min(_round_half_up(ratios[1] * len(ids)), len(ids) - n_train)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts = (shuffled[:n_train], shuffled[n_train:n_train + n_valid], shuffled[n_train + n_valid:])
    return {name: sorted(part) for name, part in zip(SPLITS, parts)}


def write_split_csv(path: str | Path, split: dict[str, list[str]]) -> Path:
    """Write ``case_id,split`` rows (train, then valid, then test); returns the path."""
    path = Path(path)
    rows = [(case_id, name) for name in SPLITS for case_id in split.get(name, [])]
    text = pd.DataFrame(rows, columns=["case_id", "split"]).to_csv(index=False)
    atomic_write_bytes(path, text.encode())
    return path


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise DataError(path, "split file not found") from err
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(path, f"unreadable CSV ({' '.join(str(err).split())})") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; found {list(table.columns)}")
    return table


def read_split_csv(path: str | Path) -> dict[str, list[str]]:
    """Read a ``case_id,split`` CSV; DataError on unknown split names or repeated case ids."""
    path = Path(path)
    table = _read_csv(path, ("case_id", "split"))
    unknown = sorted(set(table["split"]) - set(SPLITS))
    if unknown:
        raise DataError(path, f"unknown split name(s) {unknown}; expected {SPLITS}")
    repeated = sorted(table["case_id"][table["case_id"].duplicated()].unique())
    if repeated:
        raise DataError(path, f"case(s) listed more than once: {repeated[:5]}")
    return {name: sorted(table.loc[table["split"] == name, "case_id"]) for name in SPLITS}


def case_id_from_image_path(image_path: str) -> str:
    """Case id of a public-code image path: ``.../BraTS20_Training_001.nii.gz`` -> ``BraTS20_Training_001``
    (also ``<case>_flair.nii[.gz]``; a file named only ``flair``/``image`` takes its folder's name)."""
    path = Path(image_path.replace("\\", "/"))
    name = path.name
    while name.lower().endswith(NIFTI_SUFFIXES):
        name = name[: -len(next(s for s in NIFTI_SUFFIXES if name.lower().endswith(s)))]
    if name.lower().endswith("_flair"):
        name = name[: -len("_flair")]
    if name.lower() in ("", "flair", "image", "img"):
        name = path.parent.name
    return name


def import_public_split(train_csv: str | Path, valid_csv: str | Path,
                        test_csv: str | Path) -> dict[str, list[str]]:
    """Split from the public code's three CSVs (header ``image_pth,mask_pth``)."""
    split: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name, csv_path in zip(SPLITS, (train_csv, valid_csv, test_csv)):
        csv_path = Path(csv_path)
        ids = [case_id_from_image_path(p) for p in _read_csv(csv_path, ("image_pth",))["image_pth"]]
        for case_id in ids:
            if case_id in seen:
                raise DataError(csv_path, f"case {case_id} already listed in the {seen[case_id]} split")
            seen[case_id] = name
        split[name] = sorted(ids)
    return split


def check_split_matches(split: dict[str, list[str]], case_ids: Iterable[str], path: str | Path) -> None:
    """DataError (stale split) unless ``split`` names exactly ``case_ids``."""
    listed = {c for part in split.values() for c in part}
    wanted = set(case_ids)
    if listed != wanted:
        missing, extra = sorted(wanted - listed), sorted(listed - wanted)
        raise DataError(path, f"stale split: {len(missing)} dataset case(s) not in it {missing[:3]}, "
                              f"{len(extra)} listed case(s) not in the dataset {extra[:3]}; "
                              "delete it or choose another split file")


def default_split_dir() -> Path:
    """The one split folder: ``$CLISC_SPLITS_DIR``, else ``splits`` relative to the current directory."""
    return Path(os.environ.get(SPLITS_DIR_ENV) or "splits")


def default_split_path(cases: list[CaseFiles], seed: int) -> Path:
    """``<split folder>/<dataset fingerprint>_seed<seed>.csv`` (see :func:`default_split_dir`)."""
    return default_split_dir() / f"{dataset_fingerprint(cases)}_seed{seed}.csv"


def split_digest(path: str | Path) -> str:
    """SHA-256 of a split file's bytes (logged with every run that used it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _included_cases(data_root: str | Path, exclude: Iterable[str]) -> list[CaseFiles]:
    skipped = set(exclude)
    return [c for c in discover_cases(data_root) if c.case_id not in skipped]


def load_split(path: str | Path, case_ids: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    """Read an existing split file, drop the ``exclude``d cases from it, and check that it then names
    exactly ``case_ids`` (DataError otherwise, naming the file)."""
    path = Path(path)
    skipped = set(exclude)
    split = {name: [c for c in part if c not in skipped] for name, part in read_split_csv(path).items()}
    check_split_matches(split, case_ids, path)
    return split


def load_or_create_split(data_root: str | Path, seed: int, path: str | Path | None = None,
                         exclude: Iterable[str] = (), must_exist: bool = False) -> tuple[dict[str, list[str]], Path]:
    """The split of the cases under ``data_root`` less ``exclude``: read from ``path`` when it exists
    (checked against the cases), else made with ``seed`` and written there (DataError instead when
    ``must_exist``). ``path`` defaults to :func:`default_split_path` of the included cases (the data
    folder may be read-only)."""
    cases = _included_cases(data_root, exclude)
    case_ids = [c.case_id for c in cases]
    path = Path(path) if path is not None else default_split_path(cases, seed)
    if path.is_file():
        return load_split(path, case_ids, exclude), path
    if must_exist:
        raise DataError(path, "split file not found (make one with `clisc data split`)")
    split = make_split(case_ids, seed)
    return split, write_split_csv(path, split)


def make_folds(case_ids: Iterable[str], k: int, seed: int) -> list[dict[str, list[str]]]:
    """``k``-fold cross-validation splits: the sorted unique ids shuffled with ``seed`` and cut into
    ``k`` near-equal test sets (every case is tested exactly once); in each fold the other cases are
    split 7:1 into train/valid (:func:`make_split` with ratios 7/8, 1/8, 0 and the same seed)."""
    ids = sorted(set(case_ids))
    if not 2 <= k <= len(ids):
        raise CliscError(f"--folds {k}: needs 2 <= K <= the number of cases ({len(ids)})")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = []
    for part in np.array_split(order, k):
        test = sorted(ids[i] for i in part)
        rest = make_split(sorted(set(ids) - set(test)), seed, ratios=(0.875, 0.125, 0.0))
        folds.append({"train": rest["train"], "valid": rest["valid"], "test": test})
    return folds


def fold_path(cases: list[CaseFiles], seed: int, fold: int, k: int) -> Path:
    """``<split folder>/<dataset fingerprint>_seed<seed>_fold<fold>of<k>.csv`` (``fold`` from 1)."""
    return default_split_dir() / f"{dataset_fingerprint(cases)}_seed{seed}_fold{fold}of{k}.csv"


def load_or_create_folds(data_root: str | Path, k: int, seed: int, exclude: Iterable[str] = ()) -> list[Path]:
    """The ``k`` fold split files of the cases under ``data_root`` less ``exclude`` (fold 1 first):
    reused when they all exist and still test every case exactly once, else (re)written."""
    cases = _included_cases(data_root, exclude)
    case_ids = [c.case_id for c in cases]
    paths = [fold_path(cases, seed, i, k) for i in range(1, k + 1)]
    if all(p.is_file() for p in paths):
        tested = [c for p in paths for c in load_split(p, case_ids)["test"]]
        if sorted(tested) != sorted(case_ids):
            raise DataError(paths[0].parent, f"the {k} fold files {paths[0].name}.. do not test every case "
                                             "exactly once; delete them to make new ones")
        return paths
    for path, split in zip(paths, make_folds(case_ids, k, seed)):
        write_split_csv(path, split)
    return paths
