"""Seeded train/valid/test split of case ids, its CSV file, and import of the public code's split.

Counts: ``n_train = round(0.7 n)``, ``n_valid = round(0.1 n)`` (halves round up), the test set takes
the rest; for BraTS 2020's 369 cases that is 258 / 37 / 74 (the public code's files hold
257 / 37 / 75). The split depends only on the set of case ids and the seed, not on their order.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from clisc.cache import atomic_write_bytes
from clisc.data.discovery import CaseFiles, dataset_fingerprint, discover_cases
from clisc.errors import DataError

SPLITS = ("train", "valid", "test")
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


def default_split_path(cases: list[CaseFiles], seed: int) -> Path:
    """``splits/<dataset fingerprint>_seed<seed>.csv``, relative to the current directory."""
    return Path("splits") / f"{dataset_fingerprint(cases)}_seed{seed}.csv"


def load_or_create_split(data_root: str | Path, seed: int,
                         path: str | Path | None = None) -> tuple[dict[str, list[str]], Path]:
    """The split of the cases under ``data_root``: read from ``path`` when it exists (checked against
    the discovered cases), else made with ``seed`` and written there. ``path`` defaults to
    :func:`default_split_path` (the data folder may be read-only)."""
    cases = discover_cases(data_root)
    case_ids = [c.case_id for c in cases]
    path = Path(path) if path is not None else default_split_path(cases, seed)
    if path.is_file():
        split = read_split_csv(path)
        check_split_matches(split, case_ids, path)
        return split, path
    split = make_split(case_ids, seed)
    return split, write_split_csv(path, split)
