"""Paper-scale cost model: time one or a few units of every stage at the ``paper`` profile, project BraTS2020.

Builds each model with the real architecture and random weights (CLIP ViT-B/32, ResNet50 at 224 px,
SAM ViT-B, the 16..256 U-Net at 128^3), times a few units of each stage on ``--device`` after one
warm-up (a unit whose first call takes over 10 s, e.g. a SAM encoder pass or a U-Net step on a CPU, is
timed by that call), records the peak RSS (sampled every 10 ms) and peak CUDA memory of each, and prints:
per-unit cost; the units of each stage for BraTS2020 at the paper's settings (``cost_model.py``:
369 cases, split 258/37/74, per-case slice counts of the real sample); projected hours per stage
for Table 1, Table 2, both sweeps and a 50-trial search (what each adds given the stage cache);
totals for 10, 100 and 369 cases; host memory and disk the big arrays need.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/paper_scale.py --device cpu     # ~5 min on 2 cores
    .venv/bin/python benchmarks/paper_scale.py --device cuda --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model as cm  # noqa: E402

from clisc.compute import as_channels_last, autocast, channels_last, cuda_peak, grad_scaler  # noqa: E402
from clisc.pipeline.settings import Settings, resolve_settings  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-sample"


class RssPeak:
    """Peak resident set size (MiB) of this process while inside, sampled from /proc every 10 ms."""

    def __enter__(self) -> RssPeak:
        self.peak, self._stop = _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, per_call: float, run: Callable[[], object], device: torch.device, repeats: int,
            results: dict[str, dict], slow_s: float = 10.0) -> None:
    """Seconds per unit of ``run`` (``per_call`` units per call): one warm-up call, then ``repeats``
    timed calls; a warm-up slower than ``slow_s`` is itself the measurement (marked "first call")."""
    with RssPeak() as rss, cuda_peak(device) as gpu:
        start, cpu_start = time.perf_counter(), time.process_time()
        run()  # warm-up: allocations, cuDNN autotuning, lazy init
        _sync(device)
        seconds, cpu, calls, note = time.perf_counter() - start, time.process_time() - cpu_start, 1, "first call"
        if seconds <= slow_s:
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                run()
            _sync(device)
            seconds, cpu = (time.perf_counter() - start) / repeats, (time.process_time() - cpu_start) / repeats
            calls, note = repeats, "after a warm-up"
    results[name] = {"seconds": seconds / per_call, "cpu_seconds": cpu / per_call, "per_call": per_call,
                     "calls": calls, "note": note, "rss_mib": rss.peak, "cuda_mib": gpu["cuda_peak_mib"]}
    print(f"  {name:12s} {seconds / per_call:10.4f} s/unit, CPU {cpu / per_call:10.4f} s/unit  ({calls} x "
          f"{per_call:g} units, {note}; peak RSS {rss.peak:6.0f} MiB, CUDA {gpu['cuda_peak_mib']:6.0f} MiB)",
          flush=True)


def sample_volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 image of the typical cropped BraTS shape with a bright ellipsoid, and that mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    tumour = (((grid - np.array([0.2, -0.1, 0.0])[:, None, None, None]) / 0.3) ** 2).sum(0) <= 1
    image = rng.normal(0, 1, shape).astype(np.float32) + 2.5 * tumour
    return image, tumour.astype(np.uint8)


def run_units(s: Settings, device: torch.device, repeats: int, results: dict[str, dict]) -> None:
    from clisc.data.preprocessing import PreprocessedStore
    from clisc.evaluation.metrics import score_case
    from clisc.foundation.clip import load_clip
    from clisc.foundation.resnet import build_resnet50
    from clisc.foundation.sam import load_sam
    from clisc.stages.cam import layer_cam
    from clisc.stages.classifier import predict_tumour_prob, slices_to_input
    from clisc.stages.prompts import prompts_from_mask
    from clisc.stages.pseudo_labels import SamSegmenter, prepare_slice
    from clisc.stages.slice_labels import tumour_probability
    from clisc.stages.unet3d import build_unet

    torch.manual_seed(0)
    image, tumour = sample_volume(cm.SAMPLE_CROP_SHAPE)
    zs = np.flatnonzero(tumour.any(axis=(0, 1)))
    slices = np.moveaxis(image[:, :, zs[:8]], 2, 0)  # 8 tumour slices HxW
    rois = np.moveaxis(tumour[:, :, zs[:8]], 2, 0).astype(bool)

    cases = sorted(p for p in SAMPLE.glob("*") if p.is_dir()) if SAMPLE.is_dir() else []
    if cases:  # preprocessing and HD95 on a real case; volume reads from the real cache entry
        import tempfile

        from clisc.data.discovery import discover_cases
        from clisc.data.io import load_case

        files = discover_cases(SAMPLE)[0]
        with tempfile.TemporaryDirectory() as tmp:
            store = PreprocessedStore(tmp, s.preprocess)

            def preprocess_case() -> None:
                store.path(files).unlink(missing_ok=True)
                store.load(files)

            measure("preprocess", 1, preprocess_case, torch.device("cpu"), repeats, results)
            measure("volume_read", 1, lambda: store.load(files), torch.device("cpu"), repeats, results)
        gt = load_case(files).seg > 0
        pred = np.roll(gt, 3, axis=0)
        measure("score", 1, lambda: score_case(pred, gt, (1.0, 1.0, 1.0)), torch.device("cpu"), repeats, results)
    else:
        print(f"  ({SAMPLE} absent: preprocess, volume_read and score not measured)")

    clip = load_clip(s.foundation.clip_arch, "random", device=device)
    batch = 8 if device.type == "cpu" else 64
    many = np.repeat(slices, batch // len(slices), axis=0)
    settings = s.slice_labels
    measure("clip", batch, lambda: tumour_probability(clip, many, settings), device, repeats, results)
    del clip

    cs = s.classifier
    model, _ = build_resnet50("random", "base", cs.head)
    model = channels_last(model.to(device), cs.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cs.lr)
    scaler = grad_scaler(device, cs.precision)
    x = slices_to_input(np.repeat(slices, cs.batch_size // len(slices) or 1, axis=0)[: cs.batch_size], cs.input_size)
    y = torch.tensor([0, 1] * (cs.batch_size // 2), device=device)

    def cls_step() -> None:
        model.train()
        optimizer.zero_grad()
        with autocast(device, cs.precision):
            loss = torch.nn.functional.cross_entropy(model(as_channels_last(x.to(device), cs.channels_last)), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    measure("cls_step", 1, cls_step, device, repeats, results)
    measure("cls_predict", len(x), lambda: predict_tumour_prob(model, x), device, repeats, results)
    measure("cam", len(x), lambda: layer_cam(model, x, s.cam.layers, out_size=slices.shape[1:]), device, repeats,
            results)
    del model, optimizer

    sam, _ = load_sam(s.sam.model, "random", device=device)
    segmenter = SamSegmenter(sam, s.sam.batch_size, s.sam.equalize, None, device, "bench", s.sam.precision)
    n_encode = 1 if device.type == "cpu" else s.sam.batch_size
    prepared = [prepare_slice(slices[i % len(slices)]) for i in range(n_encode)]
    measure("sam_encode", n_encode, lambda: segmenter.embed(prepared), device, repeats, results)
    embeddings = segmenter.embed([prepare_slice(z) for z in slices[:1]]) * len(slices)
    prompts = [prompts_from_mask(roi, s.prompts) for roi in rois]
    measure("sam_decode", len(slices), lambda: segmenter._decode_batch(embeddings, prompts, slices.shape[1:]),
            device, repeats, results)
    del sam, segmenter, embeddings

    us = s.unet
    unet = channels_last(build_unet(us).to(device), us.channels_last, dims=3)
    sgd = torch.optim.SGD(unet.parameters(), lr=us.lr, momentum=us.momentum, weight_decay=us.weight_decay)
    unet_scaler = grad_scaler(device, us.precision)
    patch = torch.randn(us.batch_size, 1, *us.patch_size, device=device)
    target = (patch[:, 0] > 1).long()

    def unet_step() -> None:
        unet.train()
        with autocast(device, us.precision):
            loss = torch.nn.functional.cross_entropy(unet(as_channels_last(patch, us.channels_last)), target)
        sgd.zero_grad(set_to_none=True)
        unet_scaler.scale(loss).backward()
        unet_scaler.step(sgd)
        unet_scaler.update()

    def unet_window() -> None:
        unet.eval()
        with torch.no_grad(), autocast(device, us.precision):
            unet(as_channels_last(patch, us.channels_last))

    measure("unet_step", 1, unet_step, device, repeats, results)
    measure("unet_window", 1, unet_window, device, repeats, results)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:10.1f}"


def report(s: Settings, results: dict[str, dict], device: str, trials: int) -> None:
    seconds = {name: r["seconds"] for name, r in results.items()}
    w = cm.Workload()
    print(f"\nUnits for BraTS2020 at the paper's settings: {w.cases} cases, split {w.split}; per case "
          f"{w.brain_slices:.1f} brain slices, {w.tumour_slices:.1f} tumour slices, crop {w.crop_shape} "
          f"(means of the 12 real cases in ../shared/data/brats-sample); classifier {s.classifier.epochs} epochs "
          f"x batch {s.classifier.batch_size}, U-Net {s.unet.epochs} epochs x batch {s.unet.batch_size} at "
          f"{s.unet.patch_size[0]}^3, {cm.windows_per_volume(w.crop_shape, s.unet.patch_size, s.unet.sw_overlap)} "
          f"sliding windows per volume, AMDA {s.amda.copies} copy per tumour slice, S3F beta {s.s3f.beta:g}.")
    print("Assumptions: every 'tumour slice' count (CLIP, classifier, CAM ROI, prediction and ground-truth "
          "prompts) is the sample's ground-truth count; a slice is SAM-encoded once for all prompt variants, S3F "
          "and later runs (embedding cache); volume reads of U-Net training overlap the GPU in loader workers "
          "(on a CPU they add to the step). Not counted: model loading, MLflow, reports, baselines.\n")
    print("Per unit: wall seconds (what the projections use) and CPU seconds of this process, all threads (what "
          "other users' load on a shared machine does not inflate).")
    print(f"{'unit':12s} {'s/unit':>10s} {'CPU s/unit':>10s} {'timed':>16s} {'peak RSS MiB':>13s} {'CUDA MiB':>9s}"
          f"  what")
    for name, what in cm.UNITS.items():
        r = results.get(name)
        if r is None:
            print(f"{name:12s} {'n/a':>10s} {'':10s} {'':16s} {'':13s} {'':9s}  {what}")
        else:
            timed = f"{r['calls']} x {r['per_call']:g} ({'1st' if r['note'] == 'first call' else 'warm'})"
            print(f"{name:12s} {r['seconds']:10.4f} {r['cpu_seconds']:10.4f} {timed:>16s} {r['rss_mib']:13.0f} "
                  f"{r['cuda_mib']:9.0f}  {what}")

    grand = 0.0
    for plan, stages in cm.plans(s, w, trials=trials).items():
        print(f"\n{plan}: projected hours on {device}")
        print(f"  {'stage':64s} {'hours':>10s}  units")
        total = 0.0
        for label, units in stages:
            cost = cm.cost(units, seconds)
            total += cost
            shown = ", ".join(f"{k} {v:,.0f}" for k, v in units.items() if v)
            print(f"  {label:64s} {_hours(cost)}  {shown}")
        print(f"  {'total':64s} {_hours(total)}")
        grand += total
    print(f"\nAll of the above, one seed: {grand / 3600:,.1f} hours = {grand / 86400:,.1f} days on {device}")

    print("\nScaling with the number of cases (hours; every count above is proportional to the case counts):")
    print(f"  {'cases':>6s} {'Table 1':>10s} {'Table 2':>10s} {'sweeps':>10s} {'search':>10s} {'total':>10s}")
    for n in (10, 100, 369):
        sums = [sum(cm.cost(u, seconds) for _, u in stages)
                for stages in cm.plans(s, cm.Workload(cases=n), trials=trials).values()]
        print(f"  {n:6d} {_hours(sums[0])} {_hours(sums[1])} {_hours(sums[2] + sums[3])} {_hours(sums[4])} "
              f"{_hours(sum(sums))}")

    slices_gib, amda_gib = cm.classifier_set_gib(s, w)
    emb = cm.embeddings_on_disk_gib(w)
    print(f"\nMemory and disk at 369 cases: classifier training slices {slices_gib:.1f} GiB of host memory "
          f"(float16 {s.classifier.input_size}^2), AMDA stage peak ~{amda_gib:.1f} GiB (slices, CAMs, masked copies "
          f"and the augmented set); volumes, CAMs, masks and predictions are read per case (a few volumes in "
          f"memory); SAM "
          f"embedding cache on disk {emb:.0f} GiB in fp32 ({emb / 2:.0f} GiB with sam.precision bf16/fp16, "
          f"stored as float16); preprocessed cache ~{2.3 * w.cases / 1024:.1f} GiB.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed calls per unit after one warm-up (units over 10 s: the first call only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="for CLIP, classifier, SAM encoder and U-Net (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="classifier and U-Net in channels-last")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the unit costs there (benchmarks/fanout_projection.py --units reads it)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    overrides = {f"{section}.precision": args.precision for section in ("slice_labels", "classifier", "sam", "unet")}
    overrides.update({"classifier.channels_last": args.channels_last, "unet.channels_last": args.channels_last})
    s = resolve_settings("paper", "paper", overrides)
    s = dataclasses.replace(s, foundation=dataclasses.replace(s.foundation, weights="random"))
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    print(f"paper profile, random weights, on {args.device} ({name}); torch {torch.__version__}, "
          f"{args.threads} CPU threads of {os.cpu_count()}, load average {load:.1f} at start; precision "
          f"{args.precision}, channels-last {args.channels_last}")
    start = time.perf_counter()
    results: dict[str, dict] = {}
    run_units(s, device, args.repeats, results)
    print(f"measured in {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")
    report(s, results, args.device, args.trials)
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({"device": args.device, "device_name": name, "load": os.getloadavg()[0],
                                         "precision": args.precision, "threads": args.threads, "units": results},
                                        indent=1, default=str))
        print(f"\nunit costs written to {args.json}")


if __name__ == "__main__":
    main()
