"""Find BraTS cases on disk: one folder per case holding ``<case>_flair.nii[.gz]`` and ``<case>_seg``.

Covers the BraTS 2018 (``Brats18_*``), 2020 (``BraTS20_Training_XXX``) and 2021 (``BraTS2021_XXXXX``)
layouts and any other ``<case>/<case>_flair.nii[.gz]`` folder. Case folders may sit directly under the
root or up to two levels deeper (BraTS2020 ships ``MICCAI_BraTS2020_TrainingData/<case>/``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clisc.cache import stable_hash
from clisc.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_DEPTH = 3  # root/<case>, root/<x>/<case>, root/<x>/<y>/<case>
# BraTS2020 case 355 ships its labels as "W39_1998.09.19_Segm.nii"
_SEG_FALLBACK = re.compile(r".*(_seg|segm)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CaseFiles:
    """The input files of one case; ``seg`` is None when the folder has no segmentation."""

    case_id: str
    flair: Path
    seg: Path | None


def _named_file(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.nii.gz`` or ``folder/<stem>.nii`` (the compressed one first), if present."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _find_seg(folder: Path) -> Path | None:
    """``<case>_seg.nii[.gz]``, else the folder's single file whose name ends in ``_seg``/``Segm``."""
    seg = _named_file(folder, f"{folder.name}_seg")
    if seg is not None:
        return seg
    matches = sorted(p for p in folder.iterdir() if p.is_file() and _SEG_FALLBACK.match(p.name))
    return matches[0] if len(matches) == 1 else None


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_case_folders(root: str | Path) -> tuple[list[CaseFiles], list[Path]]:
    """Cases under ``root`` (sorted by case id) and the folders beside them that lack a FLAIR file.

    The second list is what ``clisc data check`` reports as broken cases; it holds the sibling
    folders of found cases (or the root's sub-folders when no case is found). Raises DataError when
    the root is missing or two folders hold the same case id.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder not found")
    cases: dict[str, CaseFiles] = {}
    parents: set[Path] = set()
    level = [root]
    for _ in range(MAX_DEPTH):
        next_level: list[Path] = []
        for parent in level:
            for folder in _visible_dirs(parent):
                flair = _named_file(folder, f"{folder.name}_flair")
                if flair is None:
                    next_level.append(folder)
                    continue
                if folder.name in cases:
                    raise DataError(folder, f"case id {folder.name} also found at {cases[folder.name].flair.parent}")
                cases[folder.name] = CaseFiles(folder.name, flair, _find_seg(folder))
                parents.add(parent)
        level = next_level
    search = sorted(parents) if parents else [root]
    found = {c.flair.parent for c in cases.values()}
    without_flair = [d for p in search for d in _visible_dirs(p) if d not in found]
    return [cases[k] for k in sorted(cases)], without_flair


def discover_cases(root: str | Path) -> list[CaseFiles]:
    """All cases under ``root`` sorted by case id; DataError if the root is missing or holds none."""
    cases, _ = scan_case_folders(root)
    if not cases:
        raise DataError(root, "no BraTS case found (expected <case>/<case>_flair.nii[.gz] folders)")
    return cases


def dataset_fingerprint(cases: list[CaseFiles]) -> str:
    """Short hash of the case ids and input file sizes: names a dataset in splits and run provenance."""
    entries = []
    for case in sorted(cases, key=lambda c: c.case_id):
        files = [case.flair] + ([case.seg] if case.seg is not None else [])
        try:
            sizes = [p.stat().st_size for p in files]
        except OSError as err:
            raise DataError(case.flair.parent, f"cannot read file sizes ({err.strerror})") from err
        entries.append([case.case_id, sizes])
    return stable_hash(entries, length=12)
