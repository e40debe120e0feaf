"""`make paper-smoke`: every row of Table 1 and Table 2 at the ``paper`` profile, random weights, 3 cases.

What runs: ``clisc data synth`` (3 synthetic BraTS cases, 240x240x155 at 1 mm), ``clisc experiment table1``
and ``table2`` with ``--profile paper --weights random --set foundation.offline=true`` (the paper's
architectures and input sizes: CLIP ViT-B/32 at 224, ResNet50 at 224, SAM ViT-B at 1024, the 16..256
U-Net on 128^3 patches with its sliding window, every baseline's paper-size network; no download) and
``clisc report`` on the MLflow store, each run through the CLI as a user would. The ONLY other settings are
the schedule-length overrides of ``experiments/paper_smoke/schedule.yaml`` (printed first; a key that is
not schedule length is refused) and, because random CLIP weights make zero-shot slice gates arbitrary,
``RANDOM_WEIGHT_GATES`` (SaLIP's and MedCLIP-SAM's gates open to every brain slice, printed apart). Then it prints every child run's stage times and fails (exit 1) when
a command fails, a row has no child run or no finite score for every test case, or a run is not tagged
``random_weights=true`` (``synthetic_data=true`` for a row with no foundation model; these runs are plumbing
checks, never results).

    python benchmarks/paper_smoke.py [--device cuda] [--work runs/paper_smoke] [--methods clisc raw_cam]

``--methods`` keeps only those rows (development); ``--official-unet`` adds one CLISC run with the
official U-Net and its whole-volume resize inference (``unet.network=official unet.inference=resize``).
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEDULE_FILE = ROOT / "experiments" / "paper_smoke" / "schedule.yaml"
# the last part of every key the smoke run may change: schedule length only
SCHEDULE_KEYS = ("epochs", "iterations_per_epoch", "test_steps", "test_refine_steps", "max_slices")
RANDOM = ("--weights", "random", "--set", "foundation.offline=true")
# Random CLIP weights make the zero-shot slice gates of SaLIP and MedCLIP-SAM arbitrary (BiomedCLIP's
# random gate here passes no slice at all, and its saliency path would never run): as the demo and
# tiny profiles do, the smoke run opens both gates to every brain slice (then capped by sam.max_slices).
# Not schedule length, so listed apart; with real weights drop them.
RANDOM_WEIGHT_GATES = {"baselines.salip.slices": "all", "baselines.medclip_sam.slices": "all"}
EXPERIMENTS = ("table1", "table2")


def schedule_overrides(path: Path = SCHEDULE_FILE) -> dict:
    """The schedule-length overrides, each key checked against ``SCHEDULE_KEYS``."""
    overrides = yaml.safe_load(path.read_text()) or {}
    bad = [k for k in overrides if k.rsplit(".", 1)[-1] not in SCHEDULE_KEYS]
    if bad:
        raise SystemExit(f"{path}: not schedule-length settings: {', '.join(bad)}")
    return overrides


def spec_for(name: str, methods: list[str] | None, folder: Path) -> str:
    """The shipped spec, or a copy with only ``methods`` (same name: `clisc report` finds it)."""
    if not methods:
        return name
    spec = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    spec["methods"] = [m for m in spec["methods"] if m in methods]
    if not spec["methods"]:
        return ""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def clisc(*args: str, log) -> float:
    """Run ``clisc ARGS`` (this checkout's) (output echoed and logged); its wall seconds; exit on failure."""
    command = [sys.executable, "-c", "import sys; from clisc.cli import main; sys.exit(main())", *args]
    print("$ clisc " + " ".join(args), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=ROOT) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            log.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"FAILED ({code}) after {seconds:.0f} s: clisc {' '.join(args)}")
    return seconds


def plumbing_problem(tags: dict) -> str:
    """Why a smoke child's tags could pass for a result ("" if they cannot): a row on foundation weights
    must be tagged ``random_weights=true``; a row that loads none (``weights=none``: the FLAIR threshold,
    the supervised U-Net) must be tagged ``synthetic_data=true``."""
    if tags.get("weights", "none") == "none":
        return "" if tags.get("synthetic_data") == "true" else "uses no foundation weights but is not tagged synthetic_data=true"
    if tags.get("random_weights") != "true":
        return f"not tagged random_weights=true ({tags.get('weights')})"
    return ""


def check_runs(names: list[str], specs: dict[str, list[str]], uri: str) -> list[str]:
    """Print each child's stage times; the problems found (no run, no score, not tagged random)."""
    from clisc.tracking.readback import load_experiment_results

    problems = []
    for name in names:
        results = {r.method: r for r in load_experiment_results(name, uri)}
        print(f"\n{name}: stage seconds per row (computed here; 0 = reused from the cache)")
        for method in specs[name]:
            result = results.get(method)
            if result is None:
                problems.append(f"{name}/{method}: no finished child run")
                continue
            dsc = result.per_case["dsc"].tolist()
            if not dsc or not all(math.isfinite(v) for v in dsc) or result.per_case["hd95"].isna().any():
                problems.append(f"{name}/{method}: scores {dsc}")
            problem = plumbing_problem(result.tags)
            if problem:
                problems.append(f"{name}/{method}: {problem}")
            times = ", ".join(f"{k} {v:.0f}" for k, v in sorted(result.stage_times.items(), key=lambda kv: -kv[1]) if v >= 0.5)
            print(f"  {method:<18} DSC {sum(dsc) / max(len(dsc), 1):6.2f}  total {sum(result.stage_times.values()):7.0f} s: {times}")
    return problems


def check_reports(names: list[str], reports: Path) -> list[str]:
    """Every row of each written table (``clisc report``) has a score: none says "not run"."""
    import pandas as pd

    problems = []
    for name in names:
        table = pd.read_csv(reports / f"{name}.csv", dtype=str, keep_default_na=False)
        missing = table.loc[~table["DSC"].str.match(r"^-?\d"), "method"].tolist()
        problems += [f"{name} report: row {m!r} has no score" for m in missing]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "paper_smoke", help="data, cache, MLflow store")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=None, help="only these rows (development)")
    parser.add_argument("--official-unet", action="store_true",
                        help="also CLISC with unet.network=official unet.inference=resize")
    parser.add_argument("--fresh", action="store_true", help="delete --work first (cache included)")
    args = parser.parse_args()
    overrides = schedule_overrides()
    print(f"paper-smoke: profile paper, protocol paper, random weights, {args.cases} synthetic cases at 1 mm, "
          f"device {args.device}; schedule-length overrides ({SCHEDULE_FILE.relative_to(ROOT)}):")
    for key, value in overrides.items():
        print(f"  {key} = {value}")
    print("and, for random weights only (the zero-shot slice gates of SaLIP and MedCLIP-SAM opened; see RANDOM_WEIGHT_GATES):")
    for key, value in RANDOM_WEIGHT_GATES.items():
        print(f"  {key} = {value}")
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    data, uri = args.work / "data", f"sqlite:///{(args.work / 'mlflow.db').resolve()}"
    sets = [a for k, v in {**overrides, **RANDOM_WEIGHT_GATES}.items() for a in ("--set", f"{k}={v}")]
    common = ["--data", str(data), "--profile", "paper", "--protocol", "paper", *RANDOM, *sets,
              "--device", args.device, "--cache", str(args.work / "cache"), "--out", str(args.work / "runs"),
              "--tracking-uri", uri]
    start = time.perf_counter()
    walls: dict[str, float] = {}
    with open(args.work / "paper_smoke.log", "a") as log:
        if not (data / "SYNTHETIC").is_file():
            walls["synth"] = clisc("data", "synth", "--out", str(data), "--cases", str(args.cases), "--seed", "0", log=log)
        specs, names = {}, []
        for name in EXPERIMENTS:
            spec = spec_for(name, args.methods, args.work)
            if spec:
                specs[name] = yaml.safe_load(Path(spec).read_text() if spec.endswith(".yaml")
                                             else (ROOT / "experiments" / f"{name}.yaml").read_text())["methods"]
                names.append(name)
                walls[name] = clisc("experiment", spec, *common, log=log)
        if args.official_unet:
            walls["official_unet"] = clisc("run", "clisc", *[a for a in common if a != "--tracking-uri" and a != uri],
                                           "--set", "unet.network=official", "--set", "unet.inference=resize", log=log)
        walls["report"] = clisc("report", "--experiments", *names, "--out", str(args.work / "reports"),
                                "--tracking-uri", uri, log=log)
    problems = check_runs(names, specs, uri)
    if not args.methods:  # a partial run leaves the other rows "not run" on purpose
        problems += check_reports(names, args.work / "reports")
    total = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("\nwall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items()) + f"; total {total:.0f} s "
          f"({total / 60:.1f} min); CPU seconds of the commands {used.ru_utime + used.ru_stime:.0f} (what other "
          f"users' load does not inflate); {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("paper-smoke: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
