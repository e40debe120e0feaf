"""The CAM half of the pipeline (tiny profile): slice-label oracle, CAM gating, thresholds, AMDA off
at alpha 0, and cache keys that follow exactly the settings each stage reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clisc.pipeline.steps_cam as steps_cam
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext
from clisc.pipeline.run import run_method
from clisc.pipeline.settings import resolve_settings


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stage cache for the module: runs that share stages reuse them."""
    return tmp_path_factory.mktemp("cache")


def _run(method: str, data: Path, cache: Path, lines: list[str] | None = None, **overrides):
    echo = lines.append if lines is not None else (lambda _: None)
    return run_method(method, data, profile="tiny", cache_root=cache, progress=False, echo=echo,
                      overrides=overrides)


def _computed(lines: list[str]) -> set[str]:
    return {line.split()[1] for line in lines if "computed" in line}


@pytest.mark.parametrize("labels, verdict, gt, expected", [
    ([1, 1, 0, 0], [0, 1, 1, 0], None, [1, 1, 0, 0]),  # paper, training split: the slice labels
    (None, [0, 1, 1, 0], None, [0, 1, 1, 0]),  # classifier verdict (other splits; the code's training split)
    (None, [0, 1, 1, 0], [1, 1, 0, 0], [0, 1, 0, 0]),  # the code: classifier AND ground truth
    ([1, 1, 0, 0], None, [0, 1, 1, 0], [0, 1, 0, 0]),  # labels AND ground truth
])
def test_gate_slices(labels, verdict, gt, expected):
    gate = steps_cam.gate_slices(None if labels is None else np.array(labels, np.int8),
                                 None if verdict is None else np.array(verdict, bool),
                                 None if gt is None else np.array(gt, np.uint8))
    assert gate.dtype == bool and gate.astype(int).tolist() == expected


def test_official_protocol_gates_training_cams_by_the_classifier():
    assert resolve_settings("official").cam.train_gate == "classifier"
    assert resolve_settings("paper").cam.train_gate == "labels"


def test_training_cams_follow_the_classifier_verdict_under_the_code_gate(synthetic_dataset, tmp_path, monkeypatch):
    """With ``cam.train_gate=classifier`` (and the GT gate) a training slice has a CAM exactly where the
    classifier says tumour and the segmentation has tumour; the slice labels are not read."""
    settings = resolve_settings("paper", "tiny", {"cam.train_gate": "classifier", "gt.gate_cams_with_gt": True})
    ctx = RunContext(synthetic_dataset, settings, 0, tmp_path, progress=False, echo=lambda _: None)
    chosen = {}

    def verdict(_ctx, _model, volume):
        zs = steps_cam.brain_slices(volume)[::3]
        chosen[volume.case_id] = np.zeros(volume.image.shape[2], bool)
        chosen[volume.case_id][zs] = True
        return chosen[volume.case_id].copy()

    monkeypatch.setattr(steps_cam, "_verdict", verdict)
    monkeypatch.setattr(steps_cam, "slice_labels", lambda _ctx: pytest.fail("slice labels read"))
    monkeypatch.setattr(steps_cam, "classifier_raw", lambda _ctx: ("raw", _tiny_model()))
    _, rois = steps_cam.cam_rois(ctx, "train", "raw")
    for volume in ctx.volumes("train"):
        has_cam = rois[volume.case_id]["cam"].reshape(-1, volume.image.shape[2]).any(axis=0)
        allowed = chosen[volume.case_id] & steps_cam.gt_slice_labels(volume).astype(bool)
        assert not (has_cam & ~allowed).any() and has_cam.any()


def _tiny_model():
    from clisc.pipeline.models import new_resnet

    return new_resnet(resolve_settings("paper", "tiny").foundation, "paper", 0)[0].eval()


def test_oracle_slice_labels_need_no_clip_and_mark_the_run(synthetic_dataset, tmp_path, monkeypatch):
    """``slices.labels=ground_truth``: the classifier learns "tumour in the slice's segmentation"; CLIP is
    never loaded; the run records the ground-truth use."""
    monkeypatch.setattr(steps_cam, "load_clip_cached", lambda *a: pytest.fail("CLIP loaded"))
    result = _run("raw_cam", synthetic_dataset, tmp_path, **{"slices.labels": "ground_truth"})
    assert result.tags["gt_switches"] == "slices.labels=ground_truth" and result.tags["label_free"] == "false"
    assert "clip=" not in result.tags["weights"]
    settings = resolve_settings("paper", "tiny", {"slices.labels": "ground_truth"})
    ctx = RunContext(synthetic_dataset, settings, 0, tmp_path, progress=False, echo=lambda _: None)
    _, labels = steps_cam.slice_labels(ctx)
    for volume in ctx.volumes("train"):
        assert labels[volume.case_id].tolist() == steps_cam.gt_slice_labels(volume).tolist()
    assert resolve_settings().slices.labels == "clip"


@pytest.mark.slow
def test_alpha_zero_is_the_raw_classifier_and_shares_its_cache(synthetic_dataset, cache):
    raw = _run("raw_cam", synthetic_dataset, cache)
    lines: list[str] = []
    amda0 = _run("cam_amda", synthetic_dataset, cache, lines, **{"amda.alpha": 0})
    assert _computed(lines) == set()  # no retraining, no new CAMs
    pd.testing.assert_frame_equal(amda0.per_case, raw.per_case)


def test_scored_postprocess_is_applied_after_the_cached_cams(synthetic_dataset, cache):
    """``cam.postprocess_scored`` changes the scored CAM row, not the cached CAM stage; paper default off."""
    base = _run("raw_cam", synthetic_dataset, cache)
    lines: list[str] = []
    post = _run("raw_cam", synthetic_dataset, cache, lines, **{"cam.postprocess_scored": True})
    assert _computed(lines) == set()
    assert base.params["cam.postprocess_scored"] is False and post.params["cam.postprocess_scored"] is True
    assert not resolve_settings().cam.postprocess and resolve_settings("official").cam.postprocess


def test_a_new_threshold_reuses_the_cams(synthetic_dataset, tmp_path):
    """The CAM stage is keyed without the binarisation: a threshold change recomputes no CAM, and a
    lower threshold gives a superset of the ROI."""
    settings = {t: resolve_settings("paper", "tiny", {"slices.labels": "ground_truth", "cam.threshold": t})
                for t in (0.5, 0.2, 0.5 + 1e-9)}
    lines: list[str] = []
    rois, keys = {}, {}
    for t, s in settings.items():
        ctx = RunContext(synthetic_dataset, s, 0, tmp_path, progress=False, echo=lines.append)
        keys[t], found = steps_cam.cam_rois(ctx, "train", "raw")
        rois[t] = dict(found)
    assert sum("cams" in line and "computed" in line for line in lines) == 1
    assert len(set(keys.values())) == 3  # every threshold its own downstream key, however close
    high = np.concatenate([r["mask"].ravel() for r in rois[0.5].values()])
    low = np.concatenate([r["mask"].ravel() for r in rois[0.2].values()])
    assert not (high & ~low).any() and low.sum() > high.sum()


@pytest.mark.parametrize("rule", ["otsu_slice", "otsu_volume"])
def test_label_free_threshold_rules_run(synthetic_dataset, cache, rule):
    lines: list[str] = []
    _run("raw_cam", synthetic_dataset, cache)
    result = _run("raw_cam", synthetic_dataset, cache, lines, **{"cam.threshold_rule": rule})
    assert _computed(lines) == set() and result.tags["label_free"] == "true"  # the cached CAMs, re-binarised
    assert result.per_case["dsc"].between(0, 100).all()


def test_gt_tuned_threshold_refuses_an_otsu_rule(synthetic_dataset, cache):
    with pytest.raises(CliscError, match="threshold_rule") as err:
        _run("raw_cam", synthetic_dataset, cache, **{"gt.tune_cam_threshold_on_gt": True,
                                                    "cam.threshold_rule": "otsu_volume"})
    assert "\n" not in str(err.value)


def test_unknown_choices_are_one_line_errors():
    for key, value in [("cam.threshold_rule", "otsu"), ("cam.train_gate", "clip"), ("slices.labels", "gt")]:
        with pytest.raises(CliscError, match=key.split(".")[1]):
            resolve_settings(overrides={key: value})
