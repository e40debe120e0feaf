"""Synthetic BraTS cases: one brain + one tumour per (seed, case index), written in the BraTS2020 layout.

``out/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz`` (int16, as BraTS) and ``..._seg.nii.gz``
(uint8 labels {0, 1, 2, 4}), 1 mm voxels, BraTS's affine. Case ``i`` depends only on ``(seed, i)``,
so a dataset of N cases is a prefix of one of N + 1. A case is written into a hidden temporary folder
and renamed into place when both files are complete, so an interrupted run leaves no partial case.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from clisc.data.synth.anatomy import FULL_SHAPE, add_rician_noise, bias_field, warp_brain
from clisc.data.synth.tumour import add_tumour, target_volume

log = logging.getLogger(__name__)

CASE_PREFIX = "BraTS20_Training_"
WM_LEVEL_RANGE = (100.0, 380.0)  # FLAIR white-matter intensity; BraTS scales differ between cases
NOISE_RANGE = (0.03, 0.06)  # Rician noise level relative to white matter


def case_id(case_index: int) -> str:
    """Folder name of case ``case_index`` (1-based): ``BraTS20_Training_001``."""
    return f"{CASE_PREFIX}{case_index:03d}"


def brats_affine(shape: tuple[int, int, int] = FULL_SHAPE) -> np.ndarray:
    """BraTS's voxel-to-world affine (4x4): 1 mm, x and y reversed (LPS voxel order)."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def synthesize_case(case_index: int, seed: int,
                    shape: tuple[int, int, int] = FULL_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """FLAIR ``XxYxZ`` float32 (integer-valued, 0 outside the brain) and BraTS labels ``XxYxZ`` uint8.

    ``case_index`` starts at 1. A ``shape`` smaller than 240x240x155 scales the anatomy down.
    """
    if case_index < 1:
        raise ValueError(f"case_index starts at 1, got {case_index}")
    rng = np.random.default_rng([seed, 0xB4A75, case_index])
    anatomy = warp_brain(rng, shape)
    seg = add_tumour(anatomy, target_volume(case_index, seed), rng)
    wm_level = float(np.exp(rng.uniform(*np.log(WM_LEVEL_RANGE))))
    flair = anatomy.flair
    flair *= bias_field(rng, shape)
    flair *= wm_level
    add_rician_noise(flair, anatomy.brain, rng.uniform(*NOISE_RANGE) * wm_level, rng)
    np.round(flair, out=flair)
    return flair, seg


def case_files(case_dir: Path) -> tuple[Path, Path]:
    """The FLAIR and segmentation paths of a case folder."""
    return case_dir / f"{case_dir.name}_flair.nii.gz", case_dir / f"{case_dir.name}_seg.nii.gz"


def _save(volume: np.ndarray, dtype: type, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(volume.astype(dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


def _write_case(case_dir: Path, flair: np.ndarray, seg: np.ndarray) -> None:
    """Write both files into a hidden sibling folder, then move them into ``case_dir`` atomically."""
    tmp = case_dir.with_name(f".{case_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        affine = brats_affine(flair.shape)
        names = [tmp / path.name for path in case_files(case_dir)]
        _save(flair, np.int16, affine, names[0])
        _save(seg, np.uint8, affine, names[1])
        if case_dir.exists():  # an incomplete folder from elsewhere: replace its files one by one
            for name in names:
                os.replace(name, case_dir / name.name)
        else:
            os.replace(tmp, case_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SYNTHETIC_MARKER = "SYNTHETIC"


def synthesize_dataset(out: str | Path, n_cases: int, seed: int,
                       shape: tuple[int, int, int] = FULL_SHAPE, progress: bool = True) -> list[Path]:
    """Write cases 1..``n_cases`` under ``out`` (skipping complete ones); returns the case folders.

    ``out/SYNTHETIC`` marks the folder as synthetic, so runs on it are tagged and reported as such.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(f"clisc synthetic BraTS-format dataset: seed {seed}, shape {shape}\n")
    folders = []
    for index in tqdm(range(1, n_cases + 1), desc="synthetic cases", disable=not progress):
        case_dir = out / case_id(index)
        folders.append(case_dir)
        if all(path.is_file() for path in case_files(case_dir)):
            continue
        flair, seg = synthesize_case(index, seed, shape)
        _write_case(case_dir, flair, seg)
        log.debug("wrote %s (%d tumour voxels)", case_dir, int((seg > 0).sum()))
    return folders
