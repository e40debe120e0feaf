"""The label-free data path: with every training and validation segmentation removed (only the
test labels, for scoring) the paper protocol runs; what needs labels by design stops with one line
naming the missing file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clisc.cli import main
from clisc.data.discovery import discover_cases
from clisc.data.split import make_split
from clisc.errors import DataError
from clisc.pipeline.run import run_method


@pytest.fixture(scope="module")
def unlabelled(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """A copy of the synthetic dataset without the train/valid segs; its cache; the removed files."""
    root = tmp_path_factory.mktemp("label_free")
    data = root / "data"
    shutil.copytree(synthetic_dataset, data)
    split = make_split([c.case_id for c in discover_cases(data)], seed=0)
    removed = []
    for case in discover_cases(data):
        if case.case_id not in split["test"]:
            case.seg.unlink()
            removed.append(case.seg)
    assert len(removed) == 8 and all(c.seg is not None for c in discover_cases(data) if c.case_id in split["test"])
    return data, root / "cache", removed


def _run(method: str, unlabelled, **kwargs):
    data, cache, _ = unlabelled
    return run_method(method, data, profile="tiny", cache_root=cache, progress=False, echo=lambda _: None, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["clisc", "cam_amda"])
def test_paper_protocol_runs_without_training_labels(unlabelled, method):
    result = _run(method, unlabelled)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.tags["gt_switches"] == "none"


@pytest.mark.parametrize("method, overrides, why", [
    ("fully_supervised", {}, "the fully supervised U-Net needs ground truth"),
    ("no_self_training", {"gt.gate_cams_with_gt": True}, "gt.gate_cams_with_gt needs ground truth"),
    ("cam_amda", {"gt.tune_cam_threshold_on_gt": True}, "gt.tune_cam_threshold_on_gt needs ground truth"),
    ("cam_amda", {"gt.select_checkpoints_on_gt": True}, "gt.select_checkpoints_on_gt needs ground truth"),
])
def test_uses_of_training_labels_name_the_missing_file(unlabelled, method, overrides, why):
    _, _, removed = unlabelled
    with pytest.raises(DataError, match=why) as err:
        _run(method, unlabelled, overrides=overrides)
    assert err.value.path in removed and "\n" not in str(err.value)


@pytest.mark.parametrize("method, overrides", [("sam_gt_prompts", {}), ("cam_amda", {"gt.gate_cams_with_gt": True})])
def test_ground_truth_of_the_scored_split_alone_is_enough(unlabelled, method, overrides):
    """SAM from ground-truth prompts and CAM gating on the test split read only the test labels."""
    result = _run(method, unlabelled, overrides=overrides)
    assert len(result.per_case) == 2 and result.tags["label_free"] == "false"


def test_a_missing_test_label_stops_the_run_before_any_stage(unlabelled, tmp_path):
    data, _, _ = unlabelled
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    test_case = next(c for c in discover_cases(copy) if c.seg is not None)
    test_case.seg.unlink()
    lines: list[str] = []
    with pytest.raises(DataError, match="scoring the test split needs ground truth") as err:
        run_method("cam_amda", copy, profile="tiny", cache_root=tmp_path / "cache", progress=False, echo=lines.append)
    assert err.value.path == test_case.seg and not any("running" in line for line in lines)


def test_cli_prints_the_missing_file_in_one_line(unlabelled, capsys):
    data, cache, removed = unlabelled
    assert main(["run", "fully_supervised", "--data", str(data), "--profile", "tiny", "--cache", str(cache),
                 "--out", str(cache.parent / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and any(str(path) in err for path in removed)


def test_skip_bad_does_not_drop_unlabelled_cases(unlabelled, capsys):
    data, cache, _ = unlabelled
    assert main(["run", "cam_amda", "--data", str(data), "--profile", "tiny", "--cache", str(cache),
                 "--out", str(cache.parent / "runs"), "--skip-bad"]) == 0
    assert "10 good cases, 0 skipped" in capsys.readouterr().out
