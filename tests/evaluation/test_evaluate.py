"""Per-case tables and summaries of clisc.evaluation.evaluate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clisc.errors import CliscError
from clisc.evaluation.evaluate import PER_CASE_COLUMNS, evaluate_case, evaluate_cases, summarize
from clisc.evaluation.groups import SIZE_GROUPS
from clisc.evaluation.metrics import EMPTY_HD95_MM
from clisc.evaluation.stats import bootstrap_ci

SPACING = (1.0, 1.0, 2.0)


def _cube_case(size: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: a ``size``-voxel-thick slab; prediction: the slab moved ``shift`` voxels in x."""
    gt = np.zeros((12, 8, 8), dtype=np.uint8)
    gt[2 : 2 + size, 2:6, 2:6] = 1
    return np.roll(gt, shift, axis=0).astype(bool), gt


def _items() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    items = [(f"case{size}", *_cube_case(size, 1), SPACING) for size in range(1, 8)]
    gt = np.zeros((12, 8, 8), dtype=np.uint8)
    gt[4:6, 4:6, 4:6] = 1
    items.append(("missed", np.zeros_like(gt, dtype=bool), gt, SPACING))
    return items


def test_evaluate_case_row() -> None:
    pred, gt = _cube_case(4, 1)
    row = evaluate_case("c", pred, gt, SPACING)
    assert row == {
        "case_id": "c",
        "dsc": pytest.approx(75.0),  # 3 of 4 slabs overlap
        "hd95": pytest.approx(1.0),
        "gt_voxels": 64,
        "gt_ml": pytest.approx(64 * 2.0 / 1000),
        "empty": "",
    }


def test_evaluate_cases_table_has_design_columns_and_groups() -> None:
    table = evaluate_cases(_items())
    assert tuple(table.columns) == PER_CASE_COLUMNS
    assert table["case_id"].tolist() == [f"case{size}" for size in range(1, 8)] + ["missed"]
    assert isinstance(table["size_group"].dtype, pd.CategoricalDtype)
    assert table.set_index("case_id").loc["case7", "size_group"] == "huge"
    missed = table.set_index("case_id").loc["missed"]
    assert (missed["dsc"], missed["hd95"], missed["empty"]) == (0.0, EMPTY_HD95_MM, "pred")
    assert table["gt_voxels"].dtype == np.int64


def test_evaluate_cases_rejects_repeated_case_ids() -> None:
    pred, gt = _cube_case(3, 0)
    with pytest.raises(CliscError, match="evaluated twice"):
        evaluate_cases([("a", pred, gt, SPACING), ("a", pred, gt, SPACING)])


def test_summarize_counts_means_and_groups() -> None:
    table = evaluate_cases(_items())
    summary = summarize(table)
    assert summary["n_cases"] == 8
    assert (summary["n_empty_both"], summary["n_empty_pred"], summary["n_empty_gt"]) == (0, 1, 0)
    assert summary["dsc_mean"] == pytest.approx(table["dsc"].mean())
    assert summary["dsc_std"] == pytest.approx(np.std(table["dsc"], ddof=1))
    assert summary["hd95_std"] == pytest.approx(np.std(table["hd95"], ddof=1))
    assert sum(summary[f"n_{group}"] for group in SIZE_GROUPS) == 8
    huge = table[table["size_group"] == "huge"]
    assert summary["dsc_huge"] == pytest.approx(huge["dsc"].mean())
    assert summary["hd95_huge"] == pytest.approx(huge["hd95"].mean())
    assert (summary["dsc_ci_low"], summary["dsc_ci_high"]) == bootstrap_ci(table["dsc"].to_numpy(), seed=0)


def test_summarize_one_case_gives_nan_std_and_empty_groups() -> None:
    summary = summarize(evaluate_cases(_items()[2:3]))
    assert summary["n_medium"] == 1 and summary["dsc_medium"] == summary["dsc_mean"]
    assert np.isnan(summary["dsc_std"]) and np.isnan(summary["dsc_tiny"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pd.DataFrame(columns=list(PER_CASE_COLUMNS)), "no cases"),
        (pd.DataFrame({"case_id": ["a"], "dsc": [1.0]}), "lacks column"),
    ],
)
def test_summarize_rejects_bad_tables(table: pd.DataFrame, message: str) -> None:
    with pytest.raises(CliscError, match=message):
        summarize(table)
