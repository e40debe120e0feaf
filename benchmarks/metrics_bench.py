"""HD95: ``clisc.evaluation.metrics.hd95`` vs ``medpy.metric.binary.hd95`` on real BraTS volumes.

For every case of the dataset (default: the shared 12-case sample) and every perturbation kind, a
seeded perturbed copy of the whole-tumour mask plays the prediction; both implementations score the
same full-size bool arrays. Prints one row per (case, kind) and totals: medpy seconds, ours seconds,
speed ratio and the largest |difference| in mm.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_bench.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_bench.py --data DIR --kinds dilate blob --seed 1
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from medpy.metric.binary import hd95 as medpy_hd95
from scipy import ndimage

from clisc.data.discovery import discover_cases
from clisc.evaluation.metrics import hd95

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-sample"


def _dilate(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 4)))


def _erode(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=int(rng.integers(1, 3)))


def _shift(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shifted = mask
    for axis, step in enumerate(rng.integers(-4, 5, size=3)):
        shifted = np.roll(shifted, int(step), axis=axis)
    return shifted


def _drop_slab(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Remove 3-8 axial slices from inside the tumour's z range."""
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    start = int(rng.integers(z[0], max(z[0] + 1, z[-1] - 3)))
    dropped = mask.copy()
    dropped[:, :, start : start + int(rng.integers(3, 9))] = False
    return dropped


def _blob(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erode by one voxel and add a false-positive ball (radius 6-14 voxels) anywhere in the volume."""
    centre = [int(rng.integers(0, n)) for n in mask.shape]
    radius = int(rng.integers(6, 15))
    box = tuple(slice(max(c - radius, 0), min(c + radius + 1, n)) for c, n in zip(centre, mask.shape))
    grid = np.ogrid[box]
    ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    blobbed = ndimage.binary_erosion(mask)
    blobbed[box] |= ball
    return blobbed


PERTURBATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "dilate": _dilate,
    "erode": _erode,
    "shift": _shift,
    "drop_slab": _drop_slab,
    "blob": _blob,
}


def _timed(function: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def run(data: Path, kinds: list[str], seed: int) -> pd.DataFrame:
    """One row per (case, kind): gt voxels, both HD95 values and timings."""
    rows = []
    for index, case in enumerate(discover_cases(data)):
        if case.seg is None:
            continue
        image = nib.load(case.seg)
        gt = np.asarray(image.dataobj) > 0
        spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
        for kind_index, kind in enumerate(kinds):
            rng = np.random.default_rng([seed, index, kind_index])
            pred = PERTURBATIONS[kind](gt, rng)
            ref, ref_s = _timed(lambda: float(medpy_hd95(pred, gt, voxelspacing=spacing)))
            ours, ours_s = _timed(lambda: hd95(pred, gt, spacing))
            rows.append({
                "case": case.case_id, "kind": kind, "gt_voxels": int(gt.sum()), "hd95_mm": ours,
                "medpy_s": ref_s, "ours_s": ours_s, "ratio": ref_s / ours_s, "abs_diff_mm": abs(ours - ref),
            })
            print(
                f"{case.case_id:24s} {kind:9s} hd95 {ours:8.3f} mm  medpy {ref_s:6.3f} s  ours {ours_s:6.3f} s  "
                f"x{ref_s / ours_s:5.1f}  |diff| {abs(ours - ref):.1e} mm",
                flush=True,
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BraTS folder (default: shared sample)")
    parser.add_argument("--kinds", nargs="+", choices=sorted(PERTURBATIONS), default=list(PERTURBATIONS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = run(args.data, args.kinds, args.seed)
    if table.empty:
        raise SystemExit(f"{args.data}: no case with a segmentation")
    medpy_total, ours_total = table["medpy_s"].sum(), table["ours_s"].sum()
    print(
        f"\n{len(table)} volumes ({table['case'].nunique()} cases x {len(args.kinds)} perturbations): "
        f"medpy {medpy_total:.2f} s, ours {ours_total:.2f} s, speed ratio x{medpy_total / ours_total:.1f} "
        f"(per volume: median x{table['ratio'].median():.1f}, min x{table['ratio'].min():.1f}); "
        f"largest |difference| {table['abs_diff_mm'].max():.1e} mm"
    )


if __name__ == "__main__":
    main()
