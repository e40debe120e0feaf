"""What an experiment's parent run shows: its table(s) and figures as artifacts, headline metrics, and
stage-time charts, all built by :mod:`clisc.reporting` from the results the experiment just logged."""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clisc.pipeline.result import MethodResult

log = logging.getLogger(__name__)

REFERENCE = "clisc"
STAGE_TIMES_FIGURE = "stage_times"


def _for_reporting(results: Sequence[MethodResult]) -> list[MethodResult]:
    """Copies whose artifacts are keyed by their logged file names (``qualitative`` -> ``qualitative.npz``)."""
    from clisc.tracking.store import artifact_name

    return [dataclasses.replace(r, artifacts={artifact_name(k, Path(p)): Path(p) for k, p in r.artifacts.items()})
            for r in results]


def summary_files(experiment: str, spec: Mapping[str, Any], results: Sequence[MethodResult], out: Path) -> list[Path]:
    """Tables and figures of ``experiment`` under ``out``: the paper's for table1/table2/sweep_*, else
    the rows that ran in the paper's table layout (+ the sweep figure for an alpha/beta sweep)."""
    from clisc.reporting.cli import EXPERIMENTS, report_experiment
    from clisc.reporting.figures import SWEEP_PARAMS, sweep_figure
    from clisc.reporting.tables import NOT_RUN, comparison_table, paper_rows, write_table

    results = _for_reporting(results)
    if experiment in EXPERIMENTS:
        files = report_experiment(experiment, results, out, warn=log.warning)
    else:
        table2_methods = {row["method"] for row in paper_rows("table2")}
        layout = "table2" if {r.method for r in results} <= table2_methods else "table1"
        table = comparison_table(results, layout)
        ran = table[table["DSC"] != NOT_RUN].reset_index(drop=True)
        ran.attrs = table.attrs
        files = write_table(ran, out / experiment)
        swept = [name for name, key in SWEEP_PARAMS.items() if key in (spec.get("sweep") or {})]
        if swept:
            files += sweep_figure(results, swept[0], out / f"{experiment}_{swept[0]}")
    files += dsc_figure(experiment, results, out)
    return files + stage_times_figure(results, out / STAGE_TIMES_FIGURE)


def _scored_table(experiment: str, results: Sequence[MethodResult]):
    """The experiment's rows in the paper's Table 1/2 layout, or None when no result has a DSC."""
    from clisc.reporting.overview import layout_of
    from clisc.reporting.tables import comparison_table

    scored = [r for r in results if "dsc" in r.per_case.columns]
    return comparison_table(scored, layout_of(experiment, scored)) if scored else None


def dsc_figure(experiment: str, results: Sequence[MethodResult], out: Path) -> list[Path]:
    """``<experiment>_dsc.png/.pdf``: every row's DSC with its 95% CI beside the paper's."""
    from clisc.reporting.overview import dsc_bars_figure

    table = _scored_table(experiment, results)
    return [] if table is None else dsc_bars_figure(table, experiment, out / f"{experiment}_dsc")


def description(experiment: str, spec: Mapping[str, Any], results: Sequence[MethodResult]) -> str | None:
    """The parent run's description (Markdown): the spec's description and the compact table of what ran."""
    from clisc.reporting.overview import compact_markdown

    table = _scored_table(experiment, results)
    text = str(spec["description"]) if spec.get("description") else None
    return None if table is None else compact_markdown(table, experiment, text)


def qualitative_png(result: MethodResult, out: Path) -> Path | None:
    """``out/qualitative.png``: one run's slices per size group with its contour (the figure of
    ``clisc report``, for one method), or None when its ``qualitative.npz`` has no usable slice."""
    from clisc.errors import CliscError
    from clisc.reporting.figures import qualitative_figure

    try:
        files = qualitative_figure(_for_reporting([result]), out / "qualitative")
    except (CliscError, KeyError) as err:  # KeyError: an npz without a case's __gt/__pred slice
        log.warning("no qualitative.png for %s/seed%s: %s", result.method, result.seed, err)
        return None
    return next(p for p in files if p.suffix == ".png")


def headline_metrics(results: Sequence[MethodResult], spec: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and tags of the parent run: every method's seed-mean DSC/HD95 (``<method>/dsc_mean``);
    CLISC's as ``dsc_mean``/``hd95_mean``; the best other method's as ``best_rival_*`` (label-free ones
    first). A sweep gives ``best_dsc_mean`` and the swept value that reached it."""
    from clisc.pipeline.folds import pool_folds
    from clisc.reporting.tables import by_method, runs_label_free, seed_mean_summary

    scored = [r for r in results if "dsc" in r.per_case.columns]
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if not scored:
        return metrics, tags
    sweep = next(iter((spec.get("sweep") or {})), None)
    if sweep:
        points = {}
        for result in pool_folds(scored):
            points.setdefault((result.method, str(result.params.get(sweep, ""))), []).append(result)
        (method, value), runs = max(points.items(), key=lambda kv: _finite(seed_mean_summary(kv[1])["dsc_mean"]))
        metrics["best_dsc_mean"] = seed_mean_summary(runs)["dsc_mean"]
        tags.update({"best_method": method, f"best.{sweep}": value})
        return metrics, tags
    if spec.get("groups"):  # one metric per row; the headline rows are those on the default settings
        metrics.update(_group_row_metrics(pool_folds(scored), spec))
        scored = [r for r in scored if all(str(r.params.get(k)) == str(v) for k, v in _group_defaults(spec).items())]
    grouped = by_method(scored)
    summaries = {m: seed_mean_summary(runs) for m, runs in grouped.items()}
    for method, summary in summaries.items():
        metrics[f"{method}/dsc_mean"] = summary["dsc_mean"]
        metrics[f"{method}/hd95_mean"] = summary["hd95_mean"]
    if REFERENCE in summaries:
        metrics["dsc_mean"] = summaries[REFERENCE]["dsc_mean"]
        metrics["hd95_mean"] = summaries[REFERENCE]["hd95_mean"]
    label_free = {m for m, runs in grouped.items() if runs_label_free(runs)}
    rivals = [m for m in summaries if m != REFERENCE]
    if rivals:
        pool = [m for m in rivals if m in label_free] or rivals
        best = max(pool, key=lambda m: _finite(summaries[m]["dsc_mean"]))
        metrics["best_rival_dsc_mean"] = summaries[best]["dsc_mean"]
        metrics["best_rival_hd95_mean"] = summaries[best]["hd95_mean"]
        tags.update({"best_rival": best, "best_rival_label_free": str(best in label_free).lower()})
    return {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}, tags


def _group_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The default value of each setting a spec's groups sweep."""
    from clisc.pipeline.settings import Settings, setting

    return {k: setting(Settings(), k) for g in spec["groups"] for k in (g.get("sweep") or {})}


def _group_row_metrics(results: Sequence[MethodResult], spec: Mapping[str, Any]) -> dict[str, float]:
    """``<method>/<setting>_<value>/dsc_mean`` (and hd95) for each swept value that differs from its default
    (characters MLflow refuses in metric names become ``_``)."""
    import re

    from clisc.reporting.tables import seed_mean_summary

    defaults = _group_defaults(spec)
    rows: dict[str, list[MethodResult]] = {}
    for result in results:
        changed = [f"{k.split('.')[-1]}_{result.params.get(k)}" for k, v in defaults.items()
                   if str(result.params.get(k)) != str(v)]
        name = "/".join([result.method, *changed])
        rows.setdefault(re.sub(r"[^\w\-. /]", "_", name), []).append(result)
    out = {}
    for name, runs in rows.items():
        summary = seed_mean_summary(runs)
        out[f"{name}/dsc_mean"], out[f"{name}/hd95_mean"] = summary["dsc_mean"], summary["hd95_mean"]
    return out


def _finite(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else float(value)


def stage_times_figure(results: Sequence[MethodResult], out_stem: Path) -> list[Path]:
    """Horizontal bars of the seconds each stage computed (summed over ``results``; cached stages count 0);
    ``out_stem.png`` and ``.pdf``, or nothing when no stage was timed."""
    totals: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.stage_times.items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
    if not totals:
        return []
    from clisc.reporting.figures import save_figure  # sets the Agg backend first
    import matplotlib.pyplot as plt

    stages = sorted(totals, key=totals.get)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(stages) + 1.2))
    ax.barh(stages, [totals[s] for s in stages], color="tab:blue")
    for y, stage in enumerate(stages):
        ax.text(totals[stage], y, f" {totals[stage]:.1f} s", va="center", fontsize=7)
    total = sum(totals.values())
    ax.set_xlabel("seconds computed (cached stages: 0)")
    ax.set_title(f"stage times, {len(results)} run(s), {total:.1f} s in all", fontsize=9)
    ax.set_xlim(0, max(totals.values()) * 1.25 or 1)
    fig.tight_layout()
    return save_figure(fig, out_stem)
