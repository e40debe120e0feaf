"""SAM pseudo-label stage: batched, cached SamSegmenter vs the public code's per-slice loop.

On N synthetic slices with random elliptic ROIs, prints slices/s of
  - the public code's loop (``SamPredictor.set_image`` + ``predict`` per slice),
  - ``SamSegmenter`` (one image_encoder forward and one prompt/mask decoder forward per batch,
    embeddings cached in memory and on disk),
the largest mask disagreement between the two, and the cost of a second "S3F" pass (new prompts on
the same slices) re-encoding, with the in-memory cache, and from the disk cache in a later run,
with how many times cheaper than re-encoding each is.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sam_stage_bench.py --slices 32
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sam_stage_bench.py --arch vit_b --slices 2 --batch-size 2
    .venv/bin/python benchmarks/sam_stage_bench.py --arch vit_b --device cuda --slices 256 --batch-size 16 --precision bf16
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from clisc.foundation.sam import SAM_ARCHS, load_sam, model_tag
from clisc.stages.prompts import PromptSettings, SamPrompt, prompts_from_mask
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter, prepare_slice


def synthetic_slices(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` ``size x size`` noisy slices with a bright random ellipse each, and the ellipses (ROIs)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    slices, rois = [], []
    for _ in range(n):
        centre = rng.uniform(0.3, 0.7, 2) * size
        radii = rng.uniform(0.05, 0.2, 2) * size
        roi = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1
        slices.append((rng.normal(100, 10, (size, size)) + 80 * roi).astype(np.float32))
        rois.append(roi)
    return slices, rois


def public_code_loop(sam: Sam, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt], equalize: bool
                     ) -> np.ndarray:
    """The public code's way: one ``set_image`` + one ``predict`` per slice, ``NxHxW`` bool."""
    predictor = SamPredictor(sam)
    masks = []
    for image_slice, prompt in zip(slices, prompts):
        predictor.set_image(prepare_slice(image_slice, equalize))
        with torch.inference_mode():
            mask, _, _ = predictor.predict(
                point_coords=prompt.points if prompt.has_points else None,
                point_labels=prompt.point_labels if prompt.has_points else None,
                box=prompt.box,
                multimask_output=False,
            )
        masks.append(mask[0])
    return np.stack(masks)


def timed(sam: Sam, run: Callable[[], Any]) -> tuple[Any, float, int, int]:
    """(result, seconds, image_encoder forwards, images encoded) of ``run()``."""
    batches: list[int] = []
    handle = sam.image_encoder.register_forward_hook(lambda _m, args, _o: batches.append(args[0].shape[0]))
    if sam.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        result = run()
        if sam.device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        handle.remove()
    return result, time.perf_counter() - start, len(batches), sum(batches)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=sorted(SAM_ARCHS))
    parser.add_argument("--weights", default="random", help="random | pretrained | <checkpoint path>")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--size", type=int, default=240, help="slice side in pixels (BraTS: 240)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="image encoder autocast (CUDA only); the public code's loop stays fp32")
    parser.add_argument("--equalize", action="store_true", help="the public code's histogram equalisation")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    sam, record = load_sam(args.arch, args.weights, device=args.device)
    tag = model_tag(sam, record)
    slices, rois = synthetic_slices(args.slices, args.size, args.seed)
    prompts = [prompts_from_mask(roi, PromptSettings("box+points")) for roi in rois]
    s3f_prompts = [prompts_from_mask(roi, PromptSettings("box+points", box_dilation=3)) for roi in rois]
    n = len(slices)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"SAM {args.arch} ({record.tag}) on {args.device} ({where}); {n} slices {args.size}x{args.size}, "
          f"batch {args.batch_size}, encoder {args.precision}, equalize {args.equalize}")

    def segmenter(cache: EmbeddingCache | None) -> SamSegmenter:
        return SamSegmenter(sam, batch_size=args.batch_size, equalize=args.equalize, cache=cache,
                            device=args.device, model_tag=tag, precision=args.precision)

    public_code_loop(sam, slices[:1], prompts[:1], args.equalize)  # warm-up
    with tempfile.TemporaryDirectory() as cache_dir:
        loop_masks, loop_s, loop_calls, _ = timed(sam, lambda: public_code_loop(sam, slices, prompts, args.equalize))
        cached = segmenter(EmbeddingCache(cache_dir))  # memory + disk; this first pass fills both
        ours, ours_s, ours_calls, _ = timed(sam, lambda: cached.segment(slices, prompts))
        disagreement = (loop_masks != ours).reshape(n, -1).sum(1)
        print(f"{'first pass':36s} {'seconds':>8s} {'slices/s':>9s} {'encoder forwards':>17s}")
        print(f"{'public code loop (set_image+predict)':36s} {loop_s:8.2f} {n / loop_s:9.3g} {loop_calls:17d}")
        print(f"{'SamSegmenter (batched encode+decode)':36s} {ours_s:8.2f} {n / ours_s:9.3g} {ours_calls:17d}")
        print(f"speed-up {loop_s / ours_s:.2f}x; max mask disagreement with the loop: {disagreement.max()} pixels "
              f"in one slice ({disagreement.max() / args.size ** 2:.2e} of it); {int((disagreement > 0).sum())}/{n} "
              f"slices differ; mean mask area {ours.reshape(n, -1).mean():.3f}")

        _, none_s, none_calls, none_images = timed(sam, lambda: segmenter(None).segment(slices, s3f_prompts))
        s3f_mem, mem_s, mem_calls, mem_images = timed(sam, lambda: cached.segment(slices, s3f_prompts))
        later = segmenter(EmbeddingCache(cache_dir))  # a later run: memory empty, disk kept
        s3f_disk, disk_s, disk_calls, disk_images = timed(sam, lambda: later.segment(slices, s3f_prompts))
        assert (s3f_mem == s3f_disk).all()
        print(f"\n{'S3F pass: new prompts, same slices':36s} {'seconds':>8s} {'slices/s':>9s} "
              f"{'encoder forwards':>17s} {'images encoded':>15s} {'cheaper':>8s}")
        for label, seconds, calls, images in [
            ("no cache (re-encoding)", none_s, none_calls, none_images),
            ("in-memory cache", mem_s, mem_calls, mem_images),
            ("disk cache (a later run)", disk_s, disk_calls, disk_images),
        ]:
            print(f"{label:36s} {seconds:8.2f} {n / seconds:9.3g} {calls:17d} {images:15d} "
                  f"{none_s / seconds:7.1f}x")


if __name__ == "__main__":
    main()
