"""Fan-out benchmark: Table 1 + Table 2 at the ``tiny`` profile, ``--launcher inline`` vs ``local``.

One invocation runs both experiments twice on the same synthetic dataset, each launcher with a cache
and an MLflow store of its own: first ``inline`` (one run after another in this process), then
``local`` with ``--workers`` processes. It prints the wall clock of each and their ratio, and the stages
each computed (``StageCache.computed_log``: one line per computation), which must be the same entries,
each computed once (the per-key lock makes a worker that needs a stage another one is computing wait
and reuse it); and it checks that every row's per-case scores are identical. Exit 1 if not.

    OMP_NUM_THREADS=1 python benchmarks/fanout_bench.py [--workers 2] [--cases 10] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clisc.cache import StageCache  # noqa: E402
from clisc.data.synth import synthesize_dataset  # noqa: E402
from clisc.pipeline.experiment import run_experiment  # noqa: E402
from clisc.pipeline.launch import LaunchOptions  # noqa: E402

EXPERIMENTS = ("table1", "table2")


def run_both(data: Path, work: Path, options: LaunchOptions) -> tuple[float, dict, Counter]:
    """(wall seconds, {experiment/method: per-case DSC}, Counter of computed stage entries)."""
    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    start = time.perf_counter()
    scores = {}
    for name in EXPERIMENTS:
        results = run_experiment(name, data, profile="tiny", cache_root=work / "cache", runs_root=work / "runs",
                                 tracking_uri=uri, echo=lambda _: None, launch=options)
        for r in results:
            scores[f"{name}/{r.method}"] = r.per_case.set_index("case_id")["dsc"].round(6).to_dict()
    return time.perf_counter() - start, scores, Counter(StageCache(work / "cache").computed_log())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="clisc-fanout-"))
    try:
        data = work / "data"
        if not (data / "SYNTHETIC").is_file():
            synthesize_dataset(data, args.cases, seed=0, shape=(96, 96, 64), progress=False)
        runs = {}
        for launcher in ("inline", "local"):
            options = LaunchOptions(launcher=launcher, workers=args.workers)
            runs[launcher] = run_both(data, work / launcher, options)
            wall, scores, computed = runs[launcher]
            workers = options.n_local if launcher == "local" else 1
            print(f"{launcher:<6} ({workers} process(es)): {wall:7.1f} s wall, {len(scores)} rows, "
                  f"{sum(computed.values())} stage computations of {len(computed)} entries", flush=True)
        (wi, si, ci), (wl, sl, cl) = runs["inline"], runs["local"]
        problems = []
        if sl != si:
            problems.append(f"per-case scores differ: {sorted(k for k in si if si[k] != sl.get(k))}")
        if ci != cl:
            problems.append(f"computed stages differ: inline only {sorted(ci - cl)}, local only {sorted(cl - ci)}")
        twice = sorted(k for k, n in cl.items() if n > 1)
        if twice:
            problems.append(f"computed more than once under local: {twice}")
        per_stage = Counter(k.split("/")[0] for k in cl)
        print("stages computed (each launcher): " + ", ".join(f"{k} {v}" for k, v in sorted(per_stage.items())))
        print(f"wall-clock ratio inline / local({args.workers}) = {wi / wl:.2f} ({os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("fanout-bench: " + ("FAILED" if problems else "passed: identical scores, identical stages, each once"))
        return 1 if problems else 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
