"""End to end on small synthetic data with the ``tiny`` profile: every stage runs, is cached and
reused, survives a crash mid-stage, and the result records its provenance."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clisc.pipeline.steps_seg as steps_seg
from clisc.errors import WeightsError
from clisc.foundation.weights import WEIGHTS
from clisc.pipeline.run import run_method

STAGES = ["slice_labels", "classifier_raw", "classifier_amda", "cams", "sam_pseudo_labels",
          "unet_round1", "predictions", "s3f", "unet_round2"]


def _run(data: Path, cache: Path, lines: list[str] | None = None, **kwargs):
    echo = lines.append if lines is not None else (lambda _: None)
    return run_method("clisc", data, profile="tiny", cache_root=cache, progress=False, echo=echo, **kwargs)


@pytest.fixture(scope="module")
def first_run(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    lines: list[str] = []
    result = _run(synthetic_dataset, cache, lines, out_dir=cache.parent / "run")
    return result, cache, lines


def test_all_stages_run_and_the_test_split_is_scored(first_run):
    result, _, lines = first_run
    for stage in STAGES:
        assert any(stage in line and "computed" in line for line in lines), stage
    df = result.per_case
    assert list(df.columns[:3]) == ["case_id", "dsc", "hd95"]
    assert len(df) == 2 and df["dsc"].between(0, 100).all() and (df["hd95"] >= 0).all()
    assert set(result.stage_times) >= set(STAGES)
    assert pd.read_csv(result.artifacts["per_case"])["case_id"].tolist() == df["case_id"].tolist()
    with np.load(result.artifacts["qualitative"]) as q:
        assert {f"{c}__{k}" for c in df["case_id"] for k in ("image", "gt", "pred")} == set(q.files)


def test_provenance_tags(first_run):
    result, _, _ = first_run
    tags = result.tags
    assert tags["protocol"] == "paper" and tags["gt_switches"] == "none" and tags["label_free"] == "true"
    assert tags["synthetic_data"] == "true" and tags["profile"] == "tiny"
    assert "=random" in tags["weights"] and {"clip", "resnet50", "sam"} <= {
        w.split("=")[0] for w in tags["weights"].split(";")}
    assert tags["random_weights"] == "true"  # a plumbing run, never a result
    assert result.params["amda.alpha"] == 20.0 and result.params["s3f.beta"] == 20.0


def test_second_run_reuses_every_stage(first_run, synthetic_dataset):
    result, cache, _ = first_run
    lines: list[str] = []
    again = _run(synthetic_dataset, cache, lines)
    assert not any("computed" in line for line in lines)
    assert sum("cached" in line for line in lines) >= len(STAGES)
    pd.testing.assert_frame_equal(again.per_case, result.per_case)


def test_ablation_shares_upstream_stages(first_run, synthetic_dataset):
    _, cache, _ = first_run
    lines: list[str] = []
    run_method("no_s3f", synthetic_dataset, profile="tiny", cache_root=cache, progress=False, echo=lines.append)
    computed = {line.split()[1] for line in lines if "computed" in line}
    assert computed == {"unet_round2", "predictions"}  # beta=0 changes only what follows S3F's SAM pass


def test_crash_in_sam_stage_resumes_to_the_same_result(first_run, synthetic_dataset, tmp_path, monkeypatch):
    result, _, _ = first_run
    real = steps_seg.segment_volume
    calls = {"n": 0}

    def crash_on_third_case(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed during SAM")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps_seg, "segment_volume", crash_on_third_case)
    with pytest.raises(KeyboardInterrupt):
        _run(synthetic_dataset, tmp_path)
    assert not list((tmp_path / "sam_pseudo_labels").glob("*/_entry.json"))  # nothing published
    assert len(list((tmp_path / "_work" / "sam_pseudo_labels").glob("*/*.npz"))) == 2  # finished cases kept
    monkeypatch.setattr(steps_seg, "segment_volume", real)
    resumed = _run(synthetic_dataset, tmp_path)
    pd.testing.assert_frame_equal(resumed.per_case, result.per_case)
    assert not any((tmp_path / "_work" / "sam_pseudo_labels").iterdir())  # scratch dropped once published


def test_official_protocol_records_its_ground_truth_switches(synthetic_dataset, tmp_path):
    result = run_method("cam_amda", synthetic_dataset, protocol="official", profile="tiny", cache_root=tmp_path,
                        progress=False, echo=lambda _: None)
    assert result.tags["gt_switches"] == "gate_cams_with_gt,tune_cam_threshold_on_gt,select_checkpoints_on_gt"
    assert result.tags["label_free"] == "false"
    assert result.params["preprocess.mode"] == "official" and result.params["amda.mode"] == "official"


def test_pretrained_weights_offline_fail_with_one_line(synthetic_dataset, tmp_path, monkeypatch):
    spec = WEIGHTS["sam_vit_b"]  # never download 375 MB from a test: point at a closed local port
    monkeypatch.setitem(WEIGHTS, "sam_vit_b", dataclasses.replace(spec, url=f"http://127.0.0.1:9/{spec.filename}"))
    monkeypatch.setenv("CLISC_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        run_method("sam_gt_prompts", synthetic_dataset, profile="tiny", cache_root=tmp_path, progress=False,
                   echo=lambda _: None, overrides={"foundation.weights": "pretrained", "foundation.size": "base"})
    message = str(err.value)
    assert "\n" not in message and "sam_vit_b_01ec64.pth" in message and str(tmp_path / "weights") in message


def test_training_curves_and_split_travel_with_the_result_even_when_cached(first_run, synthetic_dataset):
    result, cache, _ = first_run
    assert set(result.histories) == {"classifier_raw", "classifier_amda", "unet_round1", "unet_round2"}
    for rows in result.histories.values():
        assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1)) and all(row["loss"] >= 0 for row in rows)
    assert result.split["split"].value_counts().to_dict() == {"train": 7, "valid": 1, "test": 2}
    again = _run(synthetic_dataset, cache)  # every stage cached: the curves come from the cache entries
    assert again.histories == result.histories
