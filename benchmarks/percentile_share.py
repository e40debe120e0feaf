"""What a per-volume percentile threshold does to Dice: 3D IF (and the FLAIR floor before its clean-up)
mark the brain voxels at or above the volume's own 95th percentile, i.e. ~5 % of every brain whatever
its tumour. Prints each case's whole-tumour share of the brain (FLAIR > 0, native grid) and the best
Dice any mask holding exactly that share of the brain can reach: 2 min(t, q) / (t + q).

    .venv/bin/python benchmarks/percentile_share.py ../shared/data/brats-sample [--percentile 95]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clisc.data.discovery import discover_cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--percentile", type=float, default=95.0)
    args = parser.parse_args()
    share = 1.0 - args.percentile / 100.0
    rows = []
    for case in discover_cases(args.data):
        brain = np.asarray(nib.load(case.flair).dataobj) != 0
        tumour = (np.asarray(nib.load(case.seg).dataobj) > 0) & brain
        t = tumour.sum() / brain.sum()
        rows.append((case.case_id, 100 * t, 100 * 2 * min(t, share) / (t + share)))
    print(f"{'case':<24} tumour % of brain   best Dice % of a {100 * share:g} % mask")
    for case_id, t, dice in rows:
        print(f"{case_id:<24} {t:17.2f}   {dice:8.1f}")
    t, dice = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    print(f"{'range':<24} {t.min():8.2f}..{t.max():.2f}   {dice.min():5.1f}..{dice.max():.1f} (mean {dice.mean():.1f})")


if __name__ == "__main__":
    main()
