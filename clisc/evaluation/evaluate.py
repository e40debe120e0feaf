"""Per-case result tables and their summary (the numbers of the paper's Tables 1 and 2).

A per-case table has the columns of docs/DESIGN.md: ``case_id``, ``dsc`` (percent), ``hd95`` (mm),
``gt_voxels``, ``gt_ml`` (ground-truth volume in millilitres, from the voxel spacing),
``size_group`` (quintile of ``gt_ml`` over the evaluated cases, see ``groups``) and ``empty`` (the
empty-mask rule that applied, see ``metrics``; "" when neither mask was empty).

Summaries report mean and standard deviation (``ddof``: 1, the sample std, as papers' "mean +- std"
usually is, NaN for a single case; 0 under the ``official`` protocol, the public code's ``np.std``), overall and per size group (NaN for a group without cases), the 95 %
percentile-bootstrap interval of the mean Dice, and how many cases each empty-mask rule touched.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clisc.errors import CliscError
from clisc.evaluation.groups import SIZE_GROUPS, size_groups
from clisc.evaluation.metrics import EMPTY_HD95_MM, EMPTY_PREDICTION, score_case
from clisc.evaluation.stats import bootstrap_ci

PER_CASE_COLUMNS = ("case_id", "dsc", "hd95", "gt_voxels", "gt_ml", "size_group", "empty")
EMPTY_COUNTS = {"n_empty_both": "both", "n_empty_pred": "pred", "n_empty_gt": "gt"}


@dataclass(frozen=True)
class EvaluationSettings:
    """How test cases are scored and summarised (``evaluation.*``; the paper states neither).

    ``empty_prediction``: ``penalty`` (Dice 0, HD95 373.13 mm, see ``metrics``) or ``zero`` (the public
    code's Dice 0 / HD95 0); ``std_ddof``: 1 (sample std) or 0 (the code's ``np.std``).
    """

    empty_prediction: str = "penalty"
    std_ddof: int = 1

    def __post_init__(self) -> None:
        if self.empty_prediction not in EMPTY_PREDICTION:
            raise ValueError(f"empty_prediction must be one of {', '.join(EMPTY_PREDICTION)}")
        if self.std_ddof not in (0, 1):
            raise ValueError("std_ddof must be 0 or 1")

    def describe(self) -> str:
        """One line for a table's notes: the convention its numbers follow."""
        empty = (f"an empty prediction scores Dice 0, HD95 {EMPTY_HD95_MM} mm (both masks empty: Dice 100, HD95 0)"
                 if self.empty_prediction == "penalty" else
                 "an empty prediction scores Dice 0, HD95 0 mm (the public code's rule)")
        std = "sample std (ddof 1)" if self.std_ddof == 1 else "population std (ddof 0, the public code's np.std)"
        return f"{empty}; ± is the {std}"


def run_evaluation_settings(params: dict[str, Any]) -> EvaluationSettings:
    """The ``evaluation.*`` settings a run logged (MLflow gives strings back); a run from before they
    existed was scored and summarised with the defaults."""
    return EvaluationSettings(str(params.get("evaluation.empty_prediction", "penalty")),
                              int(float(params.get("evaluation.std_ddof", 1))))


def evaluate_case(
    case_id: str,
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    empty_hd95: float = EMPTY_HD95_MM,
    empty_prediction: str = "penalty",
) -> dict[str, Any]:
    """Scores of one case (``pred``, ``gt``: ``XxYxZ`` masks; ``spacing`` mm): every per-case column
    except ``size_group``, which needs all cases; ``empty_prediction`` as in ``metrics.score_case``."""
    score = score_case(pred, gt, spacing, empty_hd95=empty_hd95, empty_prediction=empty_prediction)
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
    empty_prediction: str = "penalty",
) -> pd.DataFrame:
    """Per-case table of ``(case_id, pred, gt, spacing)`` items, in the order given."""
    return per_case_table(
        evaluate_case(case_id, pred, gt, spacing, empty_hd95=empty_hd95, empty_prediction=empty_prediction)
        for case_id, pred, gt, spacing in items
    )


def _mean_std(values: pd.Series, ddof: int = 1) -> tuple[float, float]:
    if values.empty:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=ddof))


def summarize(per_case: pd.DataFrame, seed: int = 0, ddof: int = 1) -> dict[str, float]:
    """Summary of a per-case table: ``dsc_mean/std``, ``hd95_mean/std``, ``n_cases``, the empty-rule
    counts, per size group ``n_<g>``, ``dsc_<g>``, ``dsc_<g>_std``, ``hd95_<g>``, ``hd95_<g>_std``,
    and ``dsc_ci_low/high`` (95 % bootstrap of the mean Dice, ``seed`` for the resampling); every std
    with ``ddof`` (``evaluation.std_ddof``)."""
    missing = [c for c in ("dsc", "hd95", "size_group", "empty") if c not in per_case.columns]
    if missing:
        raise CliscError(f"per-case table lacks column(s) {missing}")
    if per_case.empty:
        raise CliscError("no cases to summarize")
    summary: dict[str, float] = {}
    summary["dsc_mean"], summary["dsc_std"] = _mean_std(per_case["dsc"], ddof)
    summary["hd95_mean"], summary["hd95_std"] = _mean_std(per_case["hd95"], ddof)
    summary["n_cases"] = len(per_case)
    for key, rule in EMPTY_COUNTS.items():
        summary[key] = int((per_case["empty"] == rule).sum())
    groups = per_case["size_group"].astype(str)
    for group in SIZE_GROUPS:
        in_group = per_case[groups == group]
        summary[f"n_{group}"] = len(in_group)
        summary[f"dsc_{group}"], summary[f"dsc_{group}_std"] = _mean_std(in_group["dsc"], ddof)
        summary[f"hd95_{group}"], summary[f"hd95_{group}_std"] = _mean_std(in_group["hd95"], ddof)
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
