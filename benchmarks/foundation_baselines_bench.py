"""SaLIP and MedCLIP-SAM per slice: where the time goes, and what reusing SAM embeddings saves.

On N FLAIR slices (the largest-tumour slice of the first cases of the shared BraTS sample, or
synthetic slices when it is absent) prints, side by side:
  - SaLIP with the generator's predictor fed by ``SamSegmenter`` (``CachedPredictor``: one encoder
    pass per slice serves the generator and the final box prompt) and without (segment_anything's own
    predictor in the generator, then the segmenter encodes the slice again): seconds per slice, SAM
    encoder passes per slice, and whether both give the same masks;
  - MedCLIP-SAM's stages: gScoreCAM, CRF, SAM box prompt (seconds per slice).
Random weights (the speed does not depend on them; masks say nothing).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foundation_baselines_bench.py --slices 4
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foundation_baselines_bench.py --sam vit_b \
        --clip ViT-B-32-quickgelu --slices 1 --points 8 --crop-layers 0 --channels 300
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor

from baselines.crf import dense_crf, largest_region_box
from baselines.gscorecam import gscorecam
from baselines.medclip_sam import text_embedding
from baselines.salip import mask_generator, prompt_embedding, salip_volume
from baselines.settings import SalipSettings
from clisc.foundation.clip import load_clip
from clisc.foundation.sam import load_sam
from clisc.stages.prompts import SamPrompt
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter, prepare_slice

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-sample"


def flair_slices(n: int, data: Path) -> list[np.ndarray]:
    """``n`` ``HxW`` float32 slices: the largest-tumour axial slice of the first ``n`` cases of
    ``data``, or seeded synthetic slices (noise + a bright ellipse) without it."""
    if data.is_dir():
        from clisc.data.discovery import discover_cases
        from clisc.data.preprocessing import load_volumes

        volumes = load_volumes(discover_cases(data)[:n], progress=False)
        return [v.image[:, :, int(v.label.reshape(-1, v.label.shape[2]).sum(0).argmax())] for v in volumes]
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:160, :140]
    return [(rng.normal(1, 0.1, (160, 140)) + (((rows - 80) / 20) ** 2 + ((cols - 60) / 25) ** 2 <= 1))
            .astype(np.float32) for _ in range(n)]


class EncoderCounter:
    """Counts the images that go through a SAM image encoder."""

    def __init__(self, encoder: torch.nn.Module):
        self.images = 0
        encoder.register_forward_hook(lambda _m, inputs, _o: setattr(self, "images", self.images + len(inputs[0])))


def time_salip(slices: list[np.ndarray], segmenter: SamSegmenter, reuse: bool, clip, settings: SalipSettings
               ) -> tuple[float, list[np.ndarray]]:
    """Seconds per slice and SaLIP's ``HxW`` mask of each slice (a one-slice volume each)."""
    generator = mask_generator(segmenter, settings)
    if not reuse:
        generator.predictor = SamPredictor(segmenter.sam)
    text = prompt_embedding(clip, settings.prompts)
    start = time.perf_counter()
    masks = [salip_volume(s[:, :, None], np.ones(s.shape + (1,), bool), np.array([True]), segmenter, generator,
                          clip, text, settings)[:, :, 0]
             for s in slices]
    return (time.perf_counter() - start) / len(slices), masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--sam", default="tiny", help="SAM architecture (tiny, vit_b, ...)")
    parser.add_argument("--clip", default="tiny", help="CLIP architecture (tiny, ViT-B-32-quickgelu, ...)")
    parser.add_argument("--points", type=int, default=8, help="SaLIP generator points per side")
    parser.add_argument("--crop-layers", type=int, default=0, help="SaLIP generator crop layers")
    parser.add_argument("--channels", type=int, default=300, help="gScoreCAM channels")
    args = parser.parse_args()
    torch.manual_seed(0)
    slices = flair_slices(args.slices, args.data)
    sam, _ = load_sam(args.sam, "random")
    clip = load_clip(args.clip, "random")
    counter = EncoderCounter(sam.image_encoder)
    settings = dataclasses.replace(SalipSettings(), points_per_side=args.points, crop_n_layers=args.crop_layers,
                                   pred_iou_thresh=0.0, stability_score_thresh=0.0)
    print(f"{len(slices)} slices of {slices[0].shape}, SAM {args.sam}, CLIP {args.clip}, random weights; SaLIP "
          f"{args.points} points per side, {args.crop_layers} crop layers")
    results = {}
    for reuse in (True, False):
        segmenter = SamSegmenter(sam, cache=EmbeddingCache() if reuse else None, model_tag="bench")
        before = counter.images
        seconds, masks = time_salip(slices, segmenter, reuse, clip, settings)
        results[reuse] = masks
        print(f"SaLIP {'reusing the segmenter embedding' if reuse else 'generator encodes on its own   '}: "
              f"{seconds:7.2f} s/slice, {(counter.images - before) / len(slices):.1f} encoder passes/slice")
    same = all(np.array_equal(a, b) for a, b in zip(results[True], results[False]))
    print(f"same masks both ways: {same} ({sum(int(m.sum()) for m in results[True])} mask pixels)")

    segmenter = SamSegmenter(sam, cache=None, model_tag="bench")
    text = text_embedding(clip, ["A medical brain MRI scan revealing a brain tumor."])
    totals = {"gScoreCAM": 0.0, "CRF": 0.0, "SAM box": 0.0}
    for s in slices:
        prepared = prepare_slice(s)
        start = time.perf_counter()
        cam = gscorecam(clip, torch.from_numpy(prepared).permute(2, 0, 1)[None].float() / 255, text,
                        channels=args.channels, out_size=s.shape).cam
        totals["gScoreCAM"] += time.perf_counter() - start
        start = time.perf_counter()
        box = largest_region_box(dense_crf(prepared, cam))
        totals["CRF"] += time.perf_counter() - start
        start = time.perf_counter()
        if box is not None:
            segmenter.segment([s], [SamPrompt(box=box, points=np.zeros((0, 2)), point_labels=np.zeros(0, np.int64))])
        totals["SAM box"] += time.perf_counter() - start
    print("MedCLIP-SAM per slice: " + ", ".join(f"{k} {v / len(slices):.2f} s" for k, v in totals.items())
          + f" ({args.channels} channels requested)")


if __name__ == "__main__":
    main()
