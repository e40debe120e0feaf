"""The synthetic cases written in the other layouts of :mod:`clisc.data.layouts` (BraTS 2023 GLI, MSD).

Case ``i`` is the same volume as :func:`clisc.data.synth.writer.synthesize_case` writes in the BraTS2020
layout, with the labels mapped back into the layout's values, so a run on either gives the same scores.
The synthetic data has one (FLAIR-like) contrast: the GLI ``t2w`` file and the MSD channels other than
FLAIR hold that volume scaled by ``1 + channel`` (MSD) or 2 (GLI), so a wrong channel choice is visible.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clisc.data.layouts import LAYOUTS
from clisc.data.synth.anatomy import FULL_SHAPE
from clisc.data.synth.writer import SYNTHETIC_MARKER, _save, brats_affine, synthesize_case

MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # MSD Task01's dataset.json order
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}


def layout_case_id(layout: str, index: int) -> str:
    """Case id of synthetic case ``index`` in ``layout``."""
    if layout == "brats2023":
        return f"BraTS-GLI-{index:05d}-000"
    if layout == "msd":
        return f"BRATS_{index:03d}"
    return f"BraTS20_Training_{index:03d}"


def _to_layout_labels(seg: np.ndarray, layout: str) -> np.ndarray:
    """BraTS labels ``XxYxZ`` -> the layout's own values (the inverse of its label map on tumour labels)."""
    table = np.zeros(256, dtype=np.uint8)
    for raw, brats in LAYOUTS[layout].label_map.items():
        if brats > 0:
            table[brats] = raw
    return table[seg]


def synthesize_in_layout(out: str | Path, n_cases: int, seed: int, layout: str,
                         shape: tuple[int, int, int] = FULL_SHAPE, progress: bool = True) -> list[Path]:
    """Write synthetic cases 1..``n_cases`` under ``out`` in ``layout`` (``brats2023`` or ``msd``);
    returns the image files written."""
    if layout not in ("brats2023", "msd"):
        raise ValueError(f"synthesize_in_layout writes brats2023 or msd, not {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(f"clisc synthetic dataset ({layout} layout): seed {seed}, shape {shape}\n")
    written = []
    training = []
    for index in tqdm(range(1, n_cases + 1), desc=f"synthetic {layout} cases", disable=not progress):
        flair, seg = synthesize_case(index, seed, shape)
        affine = brats_affine(flair.shape)
        labels = _to_layout_labels(seg, layout)
        case = layout_case_id(layout, index)
        if layout == "brats2023":
            folder = out / case
            folder.mkdir(exist_ok=True)
            _save(flair, np.int16, affine, folder / f"{case}-t2f.nii.gz")
            _save(flair * 2, np.int16, affine, folder / f"{case}-t2w.nii.gz")
            _save(labels, np.uint8, affine, folder / f"{case}-seg.nii.gz")
            written.append(folder / f"{case}-t2f.nii.gz")
        else:
            (out / "imagesTr").mkdir(exist_ok=True)
            (out / "labelsTr").mkdir(exist_ok=True)
            stack = np.stack([flair * (1 + c) for c in range(len(MSD_MODALITY))], axis=-1)
            _save(stack, np.int16, affine, out / "imagesTr" / f"{case}.nii.gz")
            _save(labels, np.uint8, affine, out / "labelsTr" / f"{case}.nii.gz")
            written.append(out / "imagesTr" / f"{case}.nii.gz")
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    if layout == "msd":
        spec = {"name": "BRATS (clisc synthetic)", "tensorImageSize": "4D", "modality": MSD_MODALITY,
                "labels": MSD_LABELS, "numTraining": len(training), "training": training, "test": []}
        (out / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")
    return written
