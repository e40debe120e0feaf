"""Does the cost model's shape hold, and does memory stay flat? CLISC at 3 dataset sizes, measured.

Writes ``max(--sizes)`` synthetic BraTS-size cases (240x240x155) once, then for each size N runs
``clisc run clisc`` on the first N cases in a fresh process with a fresh cache (default: the ``tiny``
profile at native 1 mm resolution, so volumes are BraTS-sized, with 64^3 U-Net patches and one
whole-volume U-Net forward per prediction), and prints per stage: the measured seconds (CPU seconds
of the run's process by default, which other users' load on a shared machine does not inflate), the unit
count the cost model (``cost_model.py``) gives that stage for the run's settings and split, and the
time projected for the largest size from the two smaller ones (linear in that count: fixed cost +
cost per unit; preprocessing is in the wall time only); then each run's wall time and peak RSS
(the child process's ru_maxrss, taken when the run ends). ``--code DIR`` runs another source tree
(e.g. an older commit) for a before/after comparison of memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_bench.py --sizes 6 12 24
    git archive <commit> | tar -x -C /tmp/old && .venv/bin/python benchmarks/scale_bench.py --code /tmp/old
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model as cm  # noqa: E402

from clisc.data.synth import synthesize_dataset  # noqa: E402
from clisc.data.synth.writer import SYNTHETIC_MARKER  # noqa: E402
from clisc.pipeline.settings import parse_override, resolve_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SET = ["preprocess.target_spacing=null", "unet.patch_size=[64,64,64]", "unet.iterations_per_epoch=null",
               "unet.inference=resize"]

# the pipeline stage timed by RunContext -> (cost-model stages, the unit that dominates them)
STAGES = {
    "slice_labels": (["slice_labels"], "clip"),
    "classifier_raw": (["classifier_raw"], "cls_step"),
    "classifier_amda": (["classifier_amda"], "cls_step"),
    "cams": (["cams train"], "cam"),
    "sam_pseudo_labels": (["sam_pseudo_labels train"], "sam_encode"),
    "unet_round1": (["unet_round1"], "unet_step"),
    "predictions": (["predictions train", "predictions test"], "unet_window"),
    "s3f": (["s3f (decode; embeddings cached)"], "sam_decode"),
    "unet_round2": (["unet_round2"], "unet_step"),
}

ALIASES = {"cams": ("cams", "cam_rois", "cam_rois_amda")}  # the stage's names in older commits too


def stage_time(times: dict[str, float], stage: str) -> float:
    return sum(times.get(name, 0.0) for name in ALIASES.get(stage, (stage,)))


CHILD = """
import json, resource, sys, time, types
from pathlib import Path
import numpy as np
import clisc.pipeline.context
from clisc.pipeline.run import run_method
from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings
data, cache, profile, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if sys.argv[5] == "cpu":  # stage times in CPU seconds of this process: what other users' load does not inflate
    clisc.pipeline.context.time = types.SimpleNamespace(perf_counter=time.process_time)
start = time.perf_counter()
result = run_method("clisc", data, profile=profile, overrides=overrides, cache_root=cache, progress=False,
                    echo=lambda line: None)
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak of the run, before counting below
ctx = RunContext(Path(data), resolve_settings("paper", profile, overrides), cache_root=Path(cache), progress=False,
                 echo=lambda line: None)
brain, tumour, shapes = [], [], []
for volume in ctx.volumes("train"):
    flat = volume.image.reshape(-1, volume.image.shape[2])
    brain.append(int((flat.max(0) > flat.min(0)).sum()))
    tumour.append(int(volume.label.reshape(-1, volume.label.shape[2]).any(0).sum()))
    shapes.append(volume.image.shape)
print("RESULT " + json.dumps({"wall": wall, "stage_times": result.stage_times, "dsc": float(result.per_case.dsc.mean()),
      "split": {k: len(v) for k, v in ctx.split.items()}, "brain": float(np.mean(brain)),
      "tumour": float(np.mean(tumour)), "shape": np.mean(shapes, axis=0).round().astype(int).tolist(),
      "rss": rss}))
"""


def run_child(code: Path, data: Path, cache: Path, profile: str, overrides: dict, threads: int, clock: str) -> dict:
    """The child's RESULT json (stage times, split, slice counts, its own peak RSS in MiB)."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(cache), profile, json.dumps(overrides), clock],
                          env=env, capture_output=True, text=True, cwd=code)
    if done.returncode:
        raise SystemExit(f"size run failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def subset(all_data: Path, n: int, root: Path) -> Path:
    """``root/data_n``: links to the first ``n`` case folders of ``all_data`` (and its synthetic marker)."""
    folder = root / f"data_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for case in sorted(p for p in all_data.iterdir() if p.is_dir())[:n]:
        link = folder / case.name
        if not link.exists():
            link.symlink_to(case.resolve())
    shutil.copyfile(all_data / SYNTHETIC_MARKER, folder / SYNTHETIC_MARKER)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=None,
                        help=f"KEY=VALUE overrides (default: {' '.join(DEFAULT_SET)})")
    parser.add_argument("--code", type=Path, default=REPO, help="source tree to run (default: this one)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clisc-scale-bench",
                        help="synthetic data (kept between runs) and caches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="stage times in CPU seconds of the run's process (default: robust to other users' "
                             "load on a shared machine, exact with one thread) or wall seconds")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    overrides = dict(parse_override(o) for o in (args.overrides or DEFAULT_SET))
    all_data = args.work / "synthetic"
    if len(sizes) < 3:
        parser.error("give at least 3 sizes: two to fit, one to check")
    start = time.perf_counter()
    synthesize_dataset(all_data, sizes[-1], seed=0, progress=False)
    print(f"{sizes[-1]} synthetic cases ready in {time.perf_counter() - start:.0f} s under {all_data}")
    print(f"code {args.code}; profile {args.profile}; overrides {overrides}; {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.1f}")

    runs = {}
    for n in sizes:
        cache = args.work / f"cache_{n}_{os.getpid()}"
        shutil.rmtree(cache, ignore_errors=True)
        runs[n] = run_child(args.code, subset(all_data, n, args.work), cache, args.profile, overrides, args.threads,
                            args.clock)
        shutil.rmtree(cache, ignore_errors=True)
        print(f"  {n:3d} cases: {runs[n]['wall']:6.1f} s, peak RSS {runs[n]['rss']:6.0f} MiB, "
              f"split {runs[n]['split']}, "
              f"per case {runs[n]['brain']:.0f} brain / {runs[n]['tumour']:.0f} tumour slices, "
              f"volume {runs[n]['shape']}", flush=True)

    settings = resolve_settings("paper", args.profile, overrides)
    units = {}
    for n in sizes:
        r = runs[n]
        w = cm.Workload(cases=n, brain_slices=r["brain"], tumour_slices=r["tumour"], crop_shape=tuple(r["shape"]),
                        split=r["split"])
        model = cm.stage_units(settings, w)
        units[n] = {stage: sum(model[m].get(unit, 0) for m in parts) for stage, (parts, unit) in STAGES.items()}
    a, b, c = sizes[0], sizes[1], sizes[-1]
    print(f"\nper stage: {args.clock} seconds measured, the cost model's unit count, and {c} cases projected from "
          f"{a} and {b} (fixed + per-unit cost)")
    header = "".join(f"{f'{n} cases':>22s}" for n in sizes)
    print(f"{'stage':18s} {'unit':11s}{header} {'projected ' + str(c):>14s} {'measured/proj':>14s}")
    total_projected = 0.0
    for stage, (_, unit) in STAGES.items():
        t = {n: stage_time(runs[n]["stage_times"], stage) for n in sizes}
        x = {n: units[n][stage] for n in sizes}
        slope = (t[b] - t[a]) / (x[b] - x[a]) if x[b] != x[a] else 0.0
        projected = t[b] + slope * (x[c] - x[b])
        total_projected += projected
        cells = "".join(f"{t[n]:9.1f} s {x[n]:9.0f}u" for n in sizes)
        ratio = t[c] / projected if projected > 0 else float("nan")
        print(f"{stage:18s} {unit:11s}{cells} {projected:12.1f} s {ratio:14.2f}")
    totals = {n: sum(stage_time(runs[n]["stage_times"], stage) for stage in STAGES) for n in sizes}
    cells = "".join(f"{totals[n]:9.1f} s {'':10s}" for n in sizes)
    print(f"{'sum of stages':30s}{cells} {total_projected:12.1f} s {totals[c] / total_projected:14.2f}")
    print(f"\npeak RSS (MiB): " + ", ".join(f"{n} cases {runs[n]['rss']:.0f}" for n in sizes)
          + f"; growth {runs[c]['rss'] - runs[a]['rss']:+.0f} MiB from {a} to {c} cases "
          f"({(runs[c]['rss'] - runs[a]['rss']) / (c - a):+.1f} MiB per case)")


if __name__ == "__main__":
    main()
