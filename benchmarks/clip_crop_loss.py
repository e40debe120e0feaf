"""How much of the brain and tumour CLIP's centre crop (``slice_labels.geometry=resize_crop``, the
code's ``preprocess``) cuts off each axial slice: per case, the share of brain / tumour pixels outside
the central square (shorter side x shorter side) of the slices a 2D model sees (rows = y, columns =
x). Resizing the shorter side to 224 first does not change which part is kept.

    .venv/bin/python benchmarks/clip_crop_loss.py ../shared/data/brats-sample [--mode official]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clisc.data.discovery import discover_cases
from clisc.data.io import load_case
from clisc.data.preprocessing import PreprocessSettings, preprocess
from clisc.stages.slice_input import axial_slices


def outside_crop(mask: np.ndarray) -> float:
    """Share of the ``True`` pixels of ``NxHxW`` slices outside each slice's central min(H, W) square."""
    height, width = mask.shape[1:]
    side = min(height, width)
    top, left = int(round((height - side) / 2)), int(round((width - side) / 2))
    inside = mask[:, top:top + side, left:left + side].sum()
    total = mask.sum()
    return float(1.0 - inside / total) if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--mode", default="official", choices=("paper", "official"))
    args = parser.parse_args()
    rows = []
    for case in discover_cases(args.data):
        volume = preprocess(load_case(case), PreprocessSettings(mode=args.mode))
        brain, tumour = axial_slices(volume.brain), axial_slices(volume.label > 0)
        rows.append((case.case_id, brain.shape[1:], outside_crop(brain), outside_crop(tumour)))
        print(f"{case.case_id:24s} HxW {brain.shape[1]}x{brain.shape[2]}  brain lost {100 * rows[-1][2]:5.2f} %  "
              f"tumour lost {100 * rows[-1][3]:5.2f} %")
    brain_lost, tumour_lost = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    taller = sum(hw[0] > hw[1] for _, hw, _, _ in rows)
    print(f"{len(rows)} cases: rows (y) longer than columns (x) in {taller}; brain lost {100 * brain_lost.min():.1f}"
          f"-{100 * brain_lost.max():.1f} % (mean {100 * brain_lost.mean():.1f}); tumour lost up to "
          f"{100 * tumour_lost.max():.1f} % (in {int((tumour_lost > 0).sum())} cases)")


if __name__ == "__main__":
    main()
