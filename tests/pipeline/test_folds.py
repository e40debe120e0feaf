"""Pooling the folds of a cross-validated run: every case once, size groups over all cases, merged tags."""
from __future__ import annotations

import pandas as pd
import pytest

from clisc.errors import CliscError
from clisc.evaluation.groups import size_groups
from clisc.pipeline.folds import folds_note, pool_folds


def test_folds_pool_into_one_result_with_every_case_once(fakes):
    dsc = [float(60 + 3 * i) for i in range(10)]
    other = fakes.fake_result("raw_cam", [50.0, 60.0])
    pooled = pool_folds([other] + fakes.fold_results("clisc", dsc, 3) + fakes.fold_results("clisc", dsc, 3, seed=1))
    assert [(r.method, r.seed) for r in pooled] == [("raw_cam", 0), ("clisc", 0), ("clisc", 1)]
    assert pooled[0] is other
    clisc = pooled[1]
    assert sorted(clisc.per_case["case_id"]) == [f"case{i:03d}" for i in range(10)]
    assert clisc.per_case["dsc"].mean() == pytest.approx(sum(dsc) / 10)
    volumes = pd.Series(clisc.per_case["gt_voxels"].to_numpy(), index=clisc.per_case["case_id"])
    assert clisc.per_case["size_group"].tolist() == size_groups(volumes).astype(str).tolist()
    assert clisc.tags["fold"] == "pooled" and clisc.tags["folds_pooled"] == "3" and clisc.tags["folds"] == "3"
    assert clisc.tags["split_file"] == "f1.csv,f2.csv,f3.csv" and "split_sha256" not in clisc.tags
    assert folds_note(clisc) == "pooled over 3 folds" and folds_note(other) == ""


def test_one_fold_with_ground_truth_makes_the_pool_not_label_free(fakes):
    runs = fakes.fold_results("clisc", [70.0] * 6, 3,
                        tags={2: {"label_free": "false", "gt_switches": "tuned_on_validation_labels"}})
    (pooled,) = pool_folds(runs[:2])
    assert pooled.tags["label_free"] == "false" and pooled.tags["gt_switches"] == "tuned_on_validation_labels"
    assert folds_note(pooled) == "pooled over 3 folds (only 2 of 3 folds finished)"


def test_a_case_tested_in_two_folds_is_an_error(fakes):
    runs = fakes.fold_results("clisc", [70.0] * 6, 2)
    runs[1].per_case = runs[0].per_case
    with pytest.raises(CliscError, match="case000 was tested in two folds"):
        pool_folds(runs)
