"""Reliability, measured: kill -9 the pipeline in every stage and resume; two experiments at once.

    OMP_NUM_THREADS=1 python benchmarks/chaos.py [--kills 20] [--seed 0] [--work /tmp/clisc-chaos]

1. An uninterrupted ``clisc run clisc`` (tiny profile, 10 small synthetic cases, a few more epochs so
   that every stage takes a moment) gives the reference per-case CSV.
2. Chains of runs on a fresh cache: the i-th run of a chain is SIGKILLed at a random moment (seeded) of
   the i-th stage of the reference run, the next run resumes from what the killed one left, and so on
   through every stage; the chain's last run goes to the end, and its per-case CSV must equal the reference. After every kill,
   every published cache entry must still be complete (manifest present).
3. Two ``clisc experiment`` processes started at once on one cache and one MLflow store: both must
   finish, a third run must reuse every stage (no entry is corrupt), and all three must give the
   reference's per-case values.

Prints the kills survived and how many outputs were identical.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ["--profile", "tiny", "--weights", "random", "--set", "unet.epochs=10", "--set", "classifier.epochs=2"]
RUNNING = re.compile(r"^\[clisc\] (\S+)\s+running \.\.\.")
COMPUTED = re.compile(r"^\[clisc\] (\S+)\s+computed\s+([\d.]+) s")
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TQDM_DISABLE": "1"}


def clisc(*args: str) -> list[str]:
    return [sys.executable, "-m", "clisc.cli", *args]


def run_method(data: Path, cache: Path, out: Path, kill_after: dict[str, float] | None = None,
               rng: random.Random | None = None) -> tuple[int, str | None, list[str]]:
    """``clisc run clisc``; with ``kill_after`` (stage -> reference seconds), SIGKILL it a random moment
    into the first of those stages it computes. Returns (exit code, stage killed in or None, lines)."""
    argv = clisc("run", "clisc", "--data", str(data), "--cache", str(cache), "--out", str(out), *PROFILE)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    state = {"stage": None, "killed": None, "timer": None}

    def kill() -> None:
        state["killed"] = state["stage"]
        process.send_signal(signal.SIGKILL)

    for line in process.stdout:
        lines.append(line.rstrip())
        started = RUNNING.match(line)
        if started:
            state["stage"] = started.group(1)
            if kill_after is not None and state["timer"] is None and started.group(1) in kill_after:
                delay = rng.uniform(0.0, 1.0) * kill_after.get(started.group(1), 1.0)
                state["timer"] = threading.Timer(delay, kill)
                state["timer"].start()
    code = process.wait()
    if state["timer"] is not None:
        state["timer"].cancel()
    return code, state["killed"] if code == -signal.SIGKILL else None, lines


def incomplete_entries(cache: Path) -> list[Path]:
    """Published entries (``<stage>/<key>/``, not hidden) without their manifest: a corrupt cache."""
    return [p for p in cache.glob("*/*") if p.is_dir() and not p.name.startswith(".") and p.parent.name not in
            ("_work", "splits", "sam_embeddings", "preprocessed", "ground_truth") and not (p / "_entry.json").is_file()]


def per_case(folder: Path) -> pd.DataFrame:
    return pd.read_csv(next(folder.rglob("per_case.csv")))


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.shape == b.shape and bool((a.fillna(-1) == b.fillna(-1)).all().all())


def chaos_chains(data: Path, work: Path, reference: pd.DataFrame, durations: dict[str, float],
                 sequence: list[str], kills: int, seed: int) -> dict:
    """Chains of kills on fresh caches: the i-th kill of a chain hits the i-th stage of ``sequence``
    (the reference run's order; a stage already cached is skipped), each at a random moment."""
    rng = random.Random(seed)
    stats = {"kills": 0, "survived": 0, "by_stage": Counter(), "chains": 0, "identical": 0, "corrupt": 0,
             "late": 0}
    chain = 0
    while stats["kills"] < kills:
        chain += 1
        cache, out = work / f"chain{chain}" / "cache", work / f"chain{chain}" / "runs"
        target = 0
        while stats["kills"] < kills and target < len(sequence):
            allowed = {name: durations[name] for name in sequence[target:]}
            code, stage, lines = run_method(data, cache, out, allowed, rng)
            if stage is None:  # finished (or failed) before the kill: the chain is at its end
                if code != 0:
                    print("\n".join(lines[-20:]))
                    raise SystemExit(f"chain {chain}: a resumed run failed with exit code {code}")
                stats["late"] += 1
                break
            stats["kills"] += 1
            stats["by_stage"][stage] += 1
            target = next(i for i in range(target, len(sequence)) if sequence[i] == stage) + 1
            broken = incomplete_entries(cache)
            stats["corrupt"] += len(broken)
            print(f"[chaos] chain {chain}: kill {stats['kills']:2d} in {stage:<18} "
                  f"({len(broken)} incomplete entries)", flush=True)
        code, stage, lines = run_method(data, cache, out)  # resume to the end
        stats["survived"] = stats["kills"] if code == 0 else stats["survived"]
        if code != 0:
            print("\n".join(lines[-20:]))
            raise SystemExit(f"chain {chain}: the final resumed run failed with exit code {code}")
        stats["chains"] += 1
        stats["identical"] += same(per_case(out), reference)
        print(f"[chaos] chain {chain}: resumed to the end, per-case CSV identical: "
              f"{same(per_case(out), reference)}", flush=True)
    return stats


def concurrent_experiments(data: Path, work: Path, reference: pd.DataFrame) -> dict:
    spec = work / "concurrent.yaml"
    spec.write_text("name: concurrent\nmethods: [clisc]\nseeds: [0]\n")
    cache, store = work / "shared_cache", f"sqlite:///{work / 'shared_mlflow.db'}"

    def start(name: str) -> subprocess.Popen:
        argv = clisc("experiment", str(spec), "--data", str(data), "--cache", str(cache), "--out",
                     str(work / name), "--tracking-uri", store, *PROFILE)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)

    processes = {name: start(name) for name in ("runs_a", "runs_b")}
    outputs = {name: p.communicate()[0] for name, p in processes.items()}
    codes = {name: p.returncode for name, p in processes.items()}
    for name, code in codes.items():
        if code != 0:
            print(f"[chaos] {name} failed ({code}):\n" + "\n".join(outputs[name].splitlines()[-15:]))
    third = subprocess.run(clisc("experiment", str(spec), "--data", str(data), "--cache", str(cache), "--out",
                                 str(work / "runs_c"), "--tracking-uri", store, *PROFILE),
                           capture_output=True, text=True, env=ENV)
    recomputed = [line for line in third.stdout.splitlines() if COMPUTED.match(line)]
    results = {name: same(per_case(work / name), reference) if codes.get(name, third.returncode) == 0 else False
               for name in ("runs_a", "runs_b", "runs_c")}
    return {"both_finished": all(c == 0 for c in codes.values()), "third_ok": third.returncode == 0,
            "recomputed": recomputed, "incomplete": incomplete_entries(cache), "identical": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clisc-chaos"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    start = time.monotonic()
    from clisc.data.synth import synthesize_dataset

    data = args.work / "data"
    synthesize_dataset(data, 10, seed=0, shape=(96, 96, 64), progress=False)
    code, _, lines = run_method(data, args.work / "ref_cache", args.work / "ref_runs")
    if code != 0:
        print("\n".join(lines[-20:]))
        raise SystemExit("the uninterrupted reference run failed")
    durations: dict[str, float] = {}
    sequence = [m.group(1) for m in map(RUNNING.match, lines) if m]
    for line in lines:
        done = COMPUTED.match(line)
        if done:
            durations[done.group(1)] = max(durations.get(done.group(1), 0.0), float(done.group(2)))
    reference = per_case(args.work / "ref_runs")
    print(f"[chaos] reference run: stages {', '.join(f'{k} {v:.1f}s' for k, v in durations.items())}", flush=True)

    chains = chaos_chains(data, args.work, reference, durations, sequence, args.kills, args.seed)
    concurrent = concurrent_experiments(data, args.work, reference)
    print()
    print(f"kills survived:            {chains['survived']}/{chains['kills']} "
          f"(by stage: {', '.join(f'{s} {n}' for s, n in chains['by_stage'].items())})")
    print(f"incomplete cache entries:  {chains['corrupt']} seen after the kills")
    print(f"outputs identical:         {chains['identical']}/{chains['chains']} chains' final per-case CSV "
          "= the uninterrupted run's")
    print(f"two experiments at once:   both finished: {concurrent['both_finished']}; "
          f"third run reused every stage: {concurrent['third_ok'] and not concurrent['recomputed']} "
          f"(recomputed: {len(concurrent['recomputed'])}); incomplete entries: {len(concurrent['incomplete'])}; "
          f"identical results: {sum(concurrent['identical'].values())}/3")
    print(f"total time:                {time.monotonic() - start:.0f} s")
    ok = (chains["survived"] == chains["kills"] and chains["identical"] == chains["chains"] and not chains["corrupt"]
          and concurrent["both_finished"] and concurrent["third_ok"] and not concurrent["recomputed"]
          and all(concurrent["identical"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
