"""Find BraTS cases on disk in one of the layouts of :mod:`clisc.data.layouts`.

Per-case folders: BraTS 2018 (``Brats18_*``), 2020 (``BraTS20_Training_XXX``), 2021 (``BraTS2021_XXXXX``)
or any other ``<case>/<case>_flair.nii[.gz]`` folder (layout ``brats2020``), and BraTS 2023/2024 GLI
``BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-t2f.nii.gz`` (layout ``brats2023``). Case folders may sit
directly under the root or up to two levels deeper (BraTS2020 ships ``MICCAI_BraTS2020_TrainingData/<case>/``).
MSD Task01_BrainTumour: a folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` (layout ``msd``),
the root itself or a sub-folder of it; one channel of the 4D image is read (``CaseFiles.channel``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from clisc.cache import stable_hash
from clisc.data.layouts import LAYOUTS, check_modality
from clisc.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_DEPTH = 3  # root/<case>, root/<x>/<case>, root/<x>/<y>/<case>
# BraTS2020 case 355 ships its labels as "W39_1998.09.19_Segm.nii"
_SEG_FALLBACK = re.compile(r".*(_seg|segm)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CaseFiles:
    """The input files of one case; ``seg`` is None when the folder has no segmentation.

    ``flair`` is the image file of the chosen ``modality`` (FLAIR by default, named so for history);
    ``channel`` is the channel of a 4D image file to read (MSD), None for a 3D file.
    """

    case_id: str
    flair: Path
    seg: Path | None
    layout: str = "brats2020"
    modality: str = "FLAIR"
    channel: int | None = None


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


def _folder_case(folder: Path, modality: str) -> CaseFiles | None:
    """The case a per-case folder holds in one of the folder layouts, or None."""
    for layout in LAYOUTS.values():
        if layout.channels is not None or modality not in layout.images:
            continue
        image = _named_file(folder, layout.images[modality].format(case=folder.name))
        if image is None:
            continue
        if layout.name == "brats2020":
            seg = _find_seg(folder)
        else:
            seg = _named_file(folder, layout.seg.format(case=folder.name))
        return CaseFiles(folder.name, image, seg, layout.name, modality)
    return None


def _case_stem(path: Path) -> str:
    return path.name[: -len(next(s for s in NIFTI_SUFFIXES if path.name.endswith(s)))]


def _nifti_files(folder: Path) -> list[Path]:
    """Visible ``*.nii[.gz]`` files of ``folder`` (MSD archives carry macOS ``._*`` copies: skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.endswith(NIFTI_SUFFIXES))


def msd_cases(folder: Path, modality: str = "FLAIR") -> list[CaseFiles]:
    """The cases of an MSD Task01 folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``), sorted by id.

    The channel of ``modality`` comes from ``dataset.json``'s ``modality``; DataError (naming
    dataset.json) when it is unreadable, has no such channel, or lists a training image that is absent.
    """
    layout = LAYOUTS["msd"]
    manifest = folder / "dataset.json"
    try:
        spec = json.loads(manifest.read_text())
        names = {str(v).upper(): int(k) for k, v in spec["modality"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(manifest, f"unreadable dataset.json ({type(err).__name__}: {err})") from err
    if len(names) != layout.channels:
        raise DataError(manifest, f"'modality' names {len(names)} channels; {layout.name} has {layout.channels}")
    wanted = layout.images[modality].upper()
    if wanted not in names:
        raise DataError(manifest, f"no {wanted} channel in 'modality' ({', '.join(names)})")
    labels = {_case_stem(p): p for p in _nifti_files(folder / "labelsTr")}
    cases = [CaseFiles(_case_stem(p), p, labels.get(_case_stem(p)), "msd", modality, names[wanted])
             for p in _nifti_files(folder / "imagesTr")]
    present = {c.flair.name for c in cases}
    listed = [Path(str(item.get("image", ""))).name for item in spec.get("training", []) if isinstance(item, dict)]
    missing = [name for name in listed if name not in present]
    if missing:
        raise DataError(manifest, f"lists {len(missing)} training image(s) absent from imagesTr/, e.g. {missing[0]}")
    return cases


def _msd_root(root: Path) -> Path | None:
    for folder in [root] + _visible_dirs(root):
        if (folder / "dataset.json").is_file() and (folder / "imagesTr").is_dir():
            return folder
    return None


def scan_case_folders(root: str | Path, modality: str = "FLAIR") -> tuple[list[CaseFiles], list[Path]]:
    """Cases under ``root`` (sorted by case id) and the folders beside them that lack an image file.

    The second list is what ``clisc data check`` reports as broken cases; it holds the sibling
    folders of found cases (or the root's sub-folders when no case is found). Raises DataError when
    the root is missing or two folders hold the same case id.
    """
    root = Path(root)
    modality = check_modality(modality)
    if not root.is_dir():
        raise DataError(root, "data folder not found")
    msd = _msd_root(root)
    if msd is not None:
        return msd_cases(msd, modality), []
    cases: dict[str, CaseFiles] = {}
    parents: set[Path] = set()
    level = [root]
    for _ in range(MAX_DEPTH):
        next_level: list[Path] = []
        for parent in level:
            for folder in _visible_dirs(parent):
                case = _folder_case(folder, modality)
                if case is None:
                    next_level.append(folder)
                    continue
                if folder.name in cases:
                    raise DataError(folder, f"case id {folder.name} also found at {cases[folder.name].flair.parent}")
                cases[folder.name] = case
                parents.add(parent)
        level = next_level
    search = sorted(parents) if parents else [root]
    found = {c.flair.parent for c in cases.values()}
    without_flair = [d for p in search for d in _visible_dirs(p) if d not in found]
    return [cases[k] for k in sorted(cases)], without_flair


def dataset_layouts(cases: list[CaseFiles]) -> list[str]:
    """The layout names of ``cases`` (what ``clisc data check`` reports), sorted."""
    return sorted({c.layout for c in cases})


def discover_cases(root: str | Path, modality: str = "FLAIR") -> list[CaseFiles]:
    """All cases under ``root`` sorted by case id; DataError if the root is missing or holds none."""
    cases, _ = scan_case_folders(root, modality)
    if not cases:
        raise DataError(root, f"no {check_modality(modality)} case found (expected <case>/<case>_flair.nii[.gz], "
                              "<case>/<case>-t2f.nii.gz folders or an MSD dataset.json + imagesTr/)")
    return cases


def dataset_fingerprint(cases: list[CaseFiles]) -> str:
    """Short hash of the case ids and input file sizes: names a dataset in splits and run provenance.

    Not the input's identity: an edit at the same size keeps it (so a split file survives it); the
    stage keys are rooted in the files' contents, :func:`clisc.data.identity.dataset_content_key`.
    """
    entries = []
    for case in sorted(cases, key=lambda c: c.case_id):
        files = [case.flair] + ([case.seg] if case.seg is not None else [])
        try:
            sizes = [p.stat().st_size for p in files]
        except OSError as err:
            raise DataError(case.flair.parent, f"cannot read file sizes ({err.strerror})") from err
        entry = [case.case_id, sizes]
        if (case.layout, case.modality) != ("brats2020", "FLAIR"):  # additive: old fingerprints unchanged
            entry += [case.layout, case.modality]
        entries.append(entry)
    return stable_hash(entries, length=12)
