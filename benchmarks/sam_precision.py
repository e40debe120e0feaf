"""SAM masks with a bf16 / fp16 image encoder against fp32, on real BraTS slices (needs CUDA).

Takes ``--slices`` tumour slices spread over the cases of ``--data`` (default: the 12-case sample),
prompts SAM with box + points from each slice's ground-truth mask (the SAM-GT row's prompts), and
prints, per precision, the pixels whose mask differs from the fp32 mask: total, worst slice, and
the Dice between the two masks. Without CUDA it says so and exits 0 (nothing is measured).

    .venv/bin/python benchmarks/sam_precision.py --weights pretrained --slices 24
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-sample"


def real_tumour_slices(data: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` preprocessed ``HxW`` FLAIR slices with tumour, spread over the cases, and their GT masks.
    Slices of one case share a shape; they are returned grouped by case."""
    from clisc.data.discovery import discover_cases
    from clisc.data.io import load_case
    from clisc.data.preprocessing import preprocess

    cases = discover_cases(data)
    per_case = max(1, -(-n // len(cases)))
    slices, masks = [], []
    for files in cases:
        volume = preprocess(load_case(files))
        zs = np.flatnonzero(volume.label.reshape(-1, volume.label.shape[2]).any(axis=0))
        picks = np.linspace(0, len(zs) - 1, per_case + 2)[1:-1].round().astype(int)  # inside the tumour's extent
        for z in zs[picks] if len(zs) else []:
            slices.append(volume.image[:, :, z])
            masks.append(volume.label[:, :, z].astype(bool))
        if len(slices) >= n:
            break
    return slices[:n], masks[:n]


def mask_disagreement(sam, slices: Sequence[np.ndarray], masks: Sequence[np.ndarray], precision: str,
                      device: str = "cuda") -> dict[str, float]:
    """Pixels where the ``precision`` encoder's masks differ from fp32's, per slice and overall."""
    from clisc.stages.prompts import PromptSettings, prompts_from_mask
    from clisc.stages.pseudo_labels import SamSegmenter

    prompts = [prompts_from_mask(m, PromptSettings("box+points")) for m in masks]
    differ, pixels, dices = [], 0, []
    for shape in dict.fromkeys(s.shape for s in slices):  # SamSegmenter takes same-shaped slices
        index = [i for i, s in enumerate(slices) if s.shape == shape]
        group, group_prompts = [slices[i] for i in index], [prompts[i] for i in index]
        reference = SamSegmenter(sam, device=device).segment(group, group_prompts)
        half = SamSegmenter(sam, device=device, precision=precision).segment(group, group_prompts)
        differ.extend((reference != half).reshape(len(index), -1).sum(1).tolist())
        pixels += reference.size
        for a, b in zip(reference, half):
            union = a.sum() + b.sum()
            dices.append(1.0 if union == 0 else 2 * (a & b).sum() / union)
    return {"slices": len(differ), "pixels_differing": float(sum(differ)), "fraction": sum(differ) / pixels,
            "worst_slice_pixels": float(max(differ)), "min_dice": float(min(dices)), "mean_dice": float(np.mean(dices))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="vit_b")
    parser.add_argument("--weights", default="random", help="random | pretrained | <checkpoint path>")
    parser.add_argument("--slices", type=int, default=24)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: bf16/fp16 SAM is CUDA-only, nothing measured")
        return 0
    from clisc.foundation.sam import load_sam

    torch.manual_seed(0)
    sam, record = load_sam(args.arch, args.weights, device="cuda")
    slices, masks = real_tumour_slices(args.data, args.slices)
    print(f"SAM {args.arch} ({record.tag}) on {torch.cuda.get_device_name()}: {len(slices)} real tumour slices "
          f"of {args.data}, box + points from ground truth")
    for precision in ("bf16", "fp16"):
        r = mask_disagreement(sam, slices, masks, precision)
        print(f"{precision} vs fp32: {r['pixels_differing']:.0f} pixels differ ({r['fraction']:.2e} of all), "
              f"worst slice {r['worst_slice_pixels']:.0f} pixels; Dice between masks mean {r['mean_dice']:.4f}, "
              f"min {r['min_dice']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
