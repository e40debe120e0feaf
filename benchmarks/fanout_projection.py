"""Wall clock of Table 1 + Table 2 + both sweeps at the ``paper`` profile on 1, 4 and 8 devices.

Each child run of the four experiments is one job (``clisc experiment --launcher local|slurm``) and a
chain of stages; the stage cache shares a stage between every job whose chain holds its key (CLIP
labels, classifier, AMDA classifier, CAMs, SAM pseudo-labels, round-1 U-Net, ...). A job needing a
stage another job is computing waits for it on the per-key lock, holding its device (as the local
launcher's workers do), then reuses it. This simulates that: the jobs in the launcher's order
(``order_jobs``: long shared prefixes first), each device taking the next job when free. Stage costs
are ``cost_model.stage_units`` (BraTS2020: 369 cases, 258/37/74) times the unit seconds that
``paper_scale.py --json`` measured on one device; the critical path is the costliest chain of
dependent stages, the floor no number of devices goes under.

    python benchmarks/paper_scale.py --device cuda --json units_cuda.json     # measure the units
    python benchmarks/fanout_projection.py --units units_cuda.json [--write docs/PAPER_SCALE.md]
    python benchmarks/fanout_projection.py --units benchmarks/results/units_cpu.json --measure cpu_seconds

Not modelled (so the numbers are lower bounds): the Table-1 baselines (no cost model yet), model
loading, MLflow logging and reports. SAM test-split embeddings are modelled as one shared stage
(in the code they are a content-keyed cache without a lock: two prompt variants running at once may
both encode a slice).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model as cm  # noqa: E402

from clisc.pipeline.launch import order_jobs  # noqa: E402
from clisc.pipeline.settings import resolve_settings  # noqa: E402

BEGIN, END = "<!-- fanout-projection:begin -->", "<!-- fanout-projection:end -->"
DEVICES = (1, 4, 8)


@dataclass(frozen=True)
class Job:
    experiment: str
    method: str  # what order_jobs ranks by
    label: str
    chain: tuple[str, ...]  # stage keys in the order the job needs them


def stage_costs(units_seconds: dict[str, float], alphas=(0, 10, 20, 30), betas=(0, 10, 20, 30, 40)) -> dict[str, float]:
    """Seconds of every stage key the jobs use (``name[alpha,beta]`` where a setting changes its key)."""
    s = resolve_settings("paper", "paper")
    w = cm.Workload()
    u = cm.stage_units(s, w)

    def c(units) -> float:
        return cm.cost(units, units_seconds)

    train = w.split["train"]
    costs = {"preprocess": c(u["preprocess"]), "slice_labels": c(u["slice_labels"]),
             "classifier_raw": c(u["classifier_raw"]), "cams_test_raw": c(u["cams test"]),
             "unet_supervised": c(u["unet_supervised"]), "predictions_test_supervised": c(u["predictions test"]),
             "sam_gt_test": c(cm.merge(u["sam test (encode)"], u["sam test (decode, per variant)"]))}
    for a in alphas:
        sam_train = u["sam_pseudo_labels train"] if a == alphas[0] else {  # slices encoded once (content cache)
            "sam_decode": u["sam_pseudo_labels train"]["sam_decode"], "volume_read": train}
        costs.update({f"classifier_amda[{a}]": c(u["classifier_amda"]), f"cams_train[{a}]": c(u["cams train"]),
                      f"cams_test_amda[{a}]": c(u["cams test"]), f"sam_train[{a}]": c(sam_train),
                      f"unet_round1[{a}]": c(u["unet_round1"]), f"predictions_train[{a}]": c(u["predictions train"]),
                      f"s3f[{a}]": c(u["s3f (decode; embeddings cached)"]),
                      f"predictions_test_round1[{a}]": c(u["predictions test"])})
        for b in betas:
            steps = cm._unet_steps(s, -(-train * (100 - b) // 100))
            costs[f"unet_round2[{a},{b}]"] = c({"unet_step": steps, "volume_read": s.unet.batch_size * steps})
            costs[f"predictions_test_round2[{a},{b}]"] = c(u["predictions test"])
    costs["sam_test_encode[20]"] = c(u["sam test (encode)"])
    for variant in ("points", "box", "box+points"):
        costs[f"sam_test_decode[{variant}]"] = c(u["sam test (decode, per variant)"])
    return costs


def chain_to_round1(a: float) -> list[str]:
    return ["preprocess", "slice_labels", "classifier_raw", f"classifier_amda[{a}]", f"cams_train[{a}]",
            f"sam_train[{a}]", f"unet_round1[{a}]"]


def clisc_chain(a: float = 20, b: float = 20) -> list[str]:
    return chain_to_round1(a) + [f"predictions_train[{a}]", f"s3f[{a}]", f"unet_round2[{a},{b}]",
                                 f"predictions_test_round2[{a},{b}]"]


def jobs() -> list[Job]:
    """The child runs of table1 (CLISC and its reference rows), table2 and both sweeps, as stage chains."""
    amda = ["preprocess", "slice_labels", "classifier_raw", "classifier_amda[20]", "cams_test_amda[20]"]
    out = [
        Job("table1", "clisc", "table1/clisc", tuple(clisc_chain())),
        Job("table1", "fully_supervised", "table1/fully_supervised",
            ("preprocess", "unet_supervised", "predictions_test_supervised")),
        Job("table1", "sam_gt_prompts", "table1/sam_gt_prompts", ("preprocess", "sam_gt_test")),
        Job("table2", "raw_cam", "table2/raw_cam", ("preprocess", "slice_labels", "classifier_raw", "cams_test_raw")),
        Job("table2", "cam_amda", "table2/cam_amda", tuple(amda)),
        *[Job("table2", f"sam_{v.replace('+', '_')}", f"table2/sam_{v.replace('+', '_')}",
              tuple(amda + ["sam_test_encode[20]", f"sam_test_decode[{v}]"])) for v in ("points", "box", "box+points")],
        Job("table2", "no_self_training", "table2/no_self_training",
            tuple(chain_to_round1(20) + ["predictions_test_round1[20]"])),
        Job("table2", "no_s3f", "table2/no_s3f", tuple(clisc_chain(20, 0))),
        Job("table2", "clisc", "table2/clisc", tuple(clisc_chain())),
    ]
    out += [Job("sweep_alpha", "clisc", f"sweep_alpha/alpha{a}", tuple(clisc_chain(a, 20))) for a in (0, 10, 20, 30)]
    out += [Job("sweep_beta", "clisc", f"sweep_beta/beta{b}", tuple(clisc_chain(20, b))) for b in (0, 10, 20, 30, 40)]
    return out


def simulate(job_list: list[Job], costs: dict[str, float], devices: int) -> tuple[float, float]:
    """(wall seconds, busy device-seconds): devices take jobs in order; a stage is computed by the
    first job reaching it, a later job waits until it is done (holding its device) and reuses it."""
    free = [0.0] * devices
    done: dict[str, float] = {}  # stage -> time it is published
    busy = 0.0
    for job in order_jobs(job_list):
        d = min(range(devices), key=free.__getitem__)
        t = free[d]
        for stage in job.chain:
            if stage in done:
                t = max(t, done[stage])  # computed or being computed by another job: wait, reuse
            else:
                t += costs[stage]
                busy += costs[stage]
                done[stage] = t
        free[d] = t
    return max(free), busy


def critical_path(job_list: list[Job], costs: dict[str, float]) -> tuple[float, Job]:
    """The costliest single chain (every stage of it depends on the one before)."""
    return max(((sum(costs[s] for s in j.chain), j) for j in job_list), key=lambda x: x[0])


def report(units_file: Path, measure: str = "seconds") -> str:
    data = json.loads(units_file.read_text())
    seconds = {k: v[measure] for k, v in data["units"].items()}
    costs = stage_costs(seconds)
    job_list = jobs()
    total = sum(costs[s] for s in {s for j in job_list for s in j.chain})
    cp, cp_job = critical_path(job_list, costs)
    what = ("wall seconds" if measure == "seconds" else
            f"CPU seconds of the process ({data.get('threads', '?')} thread(s); what other users' load does not inflate)")
    lines = [f"Generated by `python benchmarks/fanout_projection.py --units {units_file} --measure {measure} "
             f"--write docs/PAPER_SCALE.md` from unit costs ({what}) measured by `benchmarks/paper_scale.py --json` on "
             f"{data['device']} ({data['device_name']}, load average {data['load']:.1f}). {len(job_list)} jobs "
             f"(Table 1's CLISC and reference rows, Table 2's 8 rows, 4 alpha and 5 beta values), "
             f"{len({s for j in job_list for s in j.chain})} distinct stages, each computed once "
             f"({total / 3600:,.0f} device-hours of work); baselines, model loading and MLflow not included.", "",
             "| devices | wall clock (hours) | speed-up | device utilisation |", "|---|---|---|---|"]
    one = None
    for n in DEVICES:
        wall, busy = simulate(job_list, costs, n)
        one = one or wall
        lines.append(f"| {n} | {wall / 3600:,.0f} | {one / wall:.2f}x | {busy / (wall * n):.0%} |")
    path = " -> ".join(cp_job.chain)
    lines += ["", f"Critical path ({cp / 3600:,.0f} hours, {cp / total:.0%} of the work): `{cp_job.label}`: {path}. "
              "Every CLISC-chain job (Table 1/2 CLISC, w/o S3F, w/o self-training, the sweeps) shares its prefix "
              "(CLIP labels, classifier, AMDA classifier, CAMs, SAM masks, round-1 U-Net) and waits on it; the "
              "alpha sweep's values each need a prefix of their own from the AMDA classifier on, which is where "
              "more devices help. Stage hours on the critical path:", ""]
    lines += [f"- {s}: {costs[s] / 3600:,.1f} h" for s in cp_job.chain if costs[s] >= 36]
    return "\n".join(lines)


def write_section(doc: Path, text: str) -> None:
    body = doc.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body:
        body = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, body, flags=re.S)
    else:
        body = body.rstrip() + "\n\n## Fan-out projection: Table 1 + Table 2 + both sweeps on 1, 4 and 8 devices\n\n" + block + "\n"
    doc.write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=Path, required=True, help="JSON written by paper_scale.py --json")
    parser.add_argument("--measure", choices=("seconds", "cpu_seconds"), default="seconds",
                        help="unit cost: wall seconds (a GPU) or the process's CPU seconds (a shared CPU)")
    parser.add_argument("--write", type=Path, default=None, help="replace the projection section of this file")
    args = parser.parse_args()
    text = report(args.units, args.measure)
    print(text)
    if args.write:
        write_section(args.write, text)
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
