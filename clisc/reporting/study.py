"""The tables of the CPU studies on real data, rebuilt from MethodResults read from MLflow:
``experiments/cpu_study.yaml`` (issue 7; tested against raw CAM, the paper's AMDA claim being raw CAM ->
CAM with AMDA) and ``experiments/table1_cpu.yaml`` (Table 1's weight-free rows; tested against the
FLAIR-threshold floor every label-free method should beat).

One row per method that ran, in the spec's order, the folds of a cross-validated run pooled (every case
once): DSC and HD95 (mean ± std over cases, bootstrap interval), the paper's value for the method from
Table 1 or Table 2 beside it, the paired Wilcoxon p of per-case DSC against the reference row, and the
minutes the row's stages computed.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from clisc.pipeline.result import MethodResult
from clisc.reporting.tables import (
    CI_RESAMPLES, by_method, case_means, ci_cell, comparability_banners, convention_notes, mean_std_cell, method_title,
    paper_rows, row_note, runs_label_free, seed_mean_summary, wilcoxon_p,
)

# experiment -> the row the others are tested against
STUDY_REFERENCES = {"cpu_study": "raw_cam", "table1_cpu": "flair_threshold"}


def paper_values() -> dict[str, dict]:
    """The paper's rows of Table 1 and Table 2 by method name (CLISC's row appears in both; equal)."""
    return {row["method"]: row for table in ("table1", "table2") for row in paper_rows(table)}


def computed_minutes(runs: Sequence[MethodResult]) -> float:
    """Minutes the runs' stages computed (stage times summed over seeds and folds; a stage read from the
    cache counts 0, so a stage two rows share counts in the row that ran first)."""
    return sum(float(t) for r in runs for t in r.stage_times.values()) / 60.0


def study_table(results: Iterable[MethodResult], reference: str = "raw_cam") -> pd.DataFrame:
    """Rows of the methods that ran with our pooled values, the paper's, p vs ``reference`` and time."""
    grouped = by_method(results)
    paper = paper_values()
    ref_title = method_title(reference)
    p_column = f"p vs {ref_title}"
    baseline = case_means(grouped[reference], "dsc") if reference in grouped else None
    rows = []
    for method, runs in grouped.items():
        spec = paper.get(method, {})
        summary = seed_mean_summary(runs)
        p = (wilcoxon_p(baseline, case_means(runs, "dsc"))
             if baseline is not None and method != reference else math.nan)
        rows.append({
            "method": spec.get("label") or method_title(method),
            "label-free": "yes" if runs_label_free(runs) else "no",
            "cases": str(int(summary["n_cases"])),
            "DSC": mean_std_cell(summary["dsc_mean"], summary["dsc_std"]),
            "DSC 95% CI": ci_cell(case_means(runs, "dsc")),
            "paper DSC": mean_std_cell(*spec["dsc"]) if "dsc" in spec else "",
            "HD95": mean_std_cell(summary["hd95_mean"], summary["hd95_std"]),
            "HD95 95% CI": ci_cell(case_means(runs, "hd95")),
            "paper HD95": mean_std_cell(*spec["hd95"]) if "hd95" in spec else "",
            p_column: "" if math.isnan(p) else f"{p:.3g}",
            "time (min)": f"{computed_minutes(runs):.1f}",
            "note": row_note(runs),
        })
    df = pd.DataFrame(rows)
    df.attrs["notes"] = comparability_banners(grouped) + [
        "DSC (%) and HD95 (mm): mean ± std over test cases; the folds of a cross-validated run are pooled "
        "(cases = every case once).",
        f"95% CI: percentile bootstrap ({CI_RESAMPLES} resamples, seed 0) of the mean of per-case values.",
        "paper: the published value of the method (Table 1 or Table 2; BraTS2020, 74 test cases).",
        f"{p_column}: two-sided paired Wilcoxon signed-rank test of per-case DSC against the {ref_title} row.",
        "time: minutes the row's stages computed, summed over folds; a stage read from the cache counts 0, "
        "so a stage two rows share (e.g. CAM with AMDA reuses raw CAM's classifier) counts in the row that ran first.",
    ] + convention_notes(grouped)
    df.attrs["warnings"] = []
    return df
