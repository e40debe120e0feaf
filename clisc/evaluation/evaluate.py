"""Per-case result tables and their summary (the numbers of the paper's Tables 1 and 2).

A per-case table has the columns of docs/DESIGN.md: ``case_id``, ``dsc`` (percent), ``hd95`` (mm),
``gt_voxels``, ``gt_ml`` (ground-truth volume in millilitres, from the voxel spacing),
``size_group`` (quintile of ``gt_ml`` over the evaluated cases, see ``groups``) and ``empty`` (the
empty-mask rule that applied, see ``metrics``; "" when neither mask was empty).

Summaries report mean and sample standard deviation (ddof=1, as papers' "mean +- std" usually is;
NaN for a single case), overall and per size group (NaN for a group without cases), the 95 %
percentile-bootstrap interval of the mean Dice, and how many cases each empty-mask rule touched.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clisc.errors import CliscError
from clisc.evaluation.groups import SIZE_GROUPS, size_groups
from clisc.evaluation.metrics import EMPTY_HD95_MM, score_case
from clisc.evaluation.stats import bootstrap_ci

PER_CASE_COLUMNS = ("case_id", "dsc", "hd95", "gt_voxels", "gt_ml", "size_group", "empty")
EMPTY_COUNTS = {"n_empty_both": "both", "n_empty_pred": "pred", "n_empty_gt": "gt"}


def evaluate_case(
    case_id: str,
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    empty_hd95: float = EMPTY_HD95_MM,
) -> dict[str, Any]:
    """Scores of one case (``pred``, ``gt``: ``XxYxZ`` masks; ``spacing`` mm): every per-case column
    except ``size_group``, which needs all cases."""
    score = score_case(pred, gt, spacing, empty_hd95=empty_hd95)
    gt_voxels = int(np.count_nonzero(gt))
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=float))) / 1000.0
    return {
        "case_id": str(case_id),
        "dsc": score.dsc,
        "hd95": score.hd95,
        "gt_voxels": gt_voxels,
        "gt_ml": gt_voxels * voxel_ml,
        "empty": score.empty,
    }


def per_case_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Per-case table from ``evaluate_case`` rows: adds ``size_group``; CliscError on repeated ids."""
    frame = pd.DataFrame(list(rows), columns=[c for c in PER_CASE_COLUMNS if c != "size_group"])
    repeated = frame["case_id"][frame["case_id"].duplicated()]
    if len(repeated):
        raise CliscError(f"case id {repeated.iloc[0]} evaluated twice")
    frame = frame.astype({"dsc": float, "hd95": float, "gt_voxels": "int64", "gt_ml": float})
    volumes = pd.Series(frame["gt_ml"].to_numpy(), index=frame["case_id"])
    frame["size_group"] = size_groups(volumes).array
    return frame[list(PER_CASE_COLUMNS)]


def evaluate_cases(
    items: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
    empty_hd95: float = EMPTY_HD95_MM,
) -> pd.DataFrame:
    """Per-case table of ``(case_id, pred, gt, spacing)`` items, in the order given."""
    return per_case_table(
        evaluate_case(case_id, pred, gt, spacing, empty_hd95=empty_hd95) for case_id, pred, gt, spacing in items
    )


def _mean_std(values: pd.Series) -> tuple[float, float]:
    if values.empty:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1))


def summarize(per_case: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Summary of a per-case table: ``dsc_mean/std``, ``hd95_mean/std``, ``n_cases``, the empty-rule
    counts, per size group ``n_<g>``, ``dsc_<g>``, ``dsc_<g>_std``, ``hd95_<g>``, ``hd95_<g>_std``,
    and ``dsc_ci_low/high`` (95 % bootstrap of the mean Dice, ``seed`` for the resampling)."""
    missing = [c for c in ("dsc", "hd95", "size_group", "empty") if c not in per_case.columns]
    if missing:
        raise CliscError(f"per-case table lacks column(s) {missing}")
    if per_case.empty:
        raise CliscError("no cases to summarize")
    summary: dict[str, float] = {}
    summary["dsc_mean"], summary["dsc_std"] = _mean_std(per_case["dsc"])
    summary["hd95_mean"], summary["hd95_std"] = _mean_std(per_case["hd95"])
    summary["n_cases"] = len(per_case)
    for key, rule in EMPTY_COUNTS.items():
        summary[key] = int((per_case["empty"] == rule).sum())
    groups = per_case["size_group"].astype(str)
    for group in SIZE_GROUPS:
        in_group = per_case[groups == group]
        summary[f"n_{group}"] = len(in_group)
        summary[f"dsc_{group}"], summary[f"dsc_{group}_std"] = _mean_std(in_group["dsc"])
        summary[f"hd95_{group}"], summary[f"hd95_{group}_std"] = _mean_std(in_group["hd95"])
    summary["dsc_ci_low"], summary["dsc_ci_high"] = bootstrap_ci(per_case["dsc"].to_numpy(), seed=seed)
    return summary


def summary_table(summary: dict[str, float]) -> pd.DataFrame:
    """A ``summarize`` result as a table: rows ``all`` and each size group; columns ``n``,
    ``dsc_mean``, ``dsc_std``, ``hd95_mean``, ``hd95_std``."""
    rows = {"all": [summary["n_cases"], summary["dsc_mean"], summary["dsc_std"], summary["hd95_mean"], summary["hd95_std"]]}
    for group in SIZE_GROUPS:
        rows[group] = [
            summary[f"n_{group}"],
            summary[f"dsc_{group}"],
            summary[f"dsc_{group}_std"],
            summary[f"hd95_{group}"],
            summary[f"hd95_{group}_std"],
        ]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["n", "dsc_mean", "dsc_std", "hd95_mean", "hd95_std"])
    return table.astype({"n": "int64"})
