"""Which slices SaLIP and MedCLIP-SAM segment: zero-shot CLIP labels (cached, per CLIP), every brain
slice, or the ground truth's tumour slices."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from baselines.slice_gate import clip_arch_of, slices_to_segment
from clisc.data.discovery import discover_cases
from clisc.data.split import make_split
from clisc.errors import DataError
from clisc.pipeline.context import RunContext
from clisc.pipeline.run import run_method
from clisc.pipeline.settings import resolve_settings
from clisc.pipeline.steps_cam import brain_slices, gt_slice_labels


def test_gates(synthetic_dataset: Path, tmp_path: Path) -> None:
    ctx = RunContext(synthetic_dataset, resolve_settings("paper", "tiny"), cache_root=tmp_path / "cache",
                     progress=False, echo=lambda _: None)
    volumes = ctx.volumes("test")
    _, everything = slices_to_segment(ctx, "test", "all", "biomedclip")
    _, truth = slices_to_segment(ctx, "test", "ground_truth", "biomedclip")
    key, clip = slices_to_segment(ctx, "test", "clip", "biomedclip")
    for volume in volumes:
        assert np.flatnonzero(everything[volume.case_id]).tolist() == brain_slices(volume).tolist()
        np.testing.assert_array_equal(truth[volume.case_id], gt_slice_labels(volume).astype(bool))
        gate = clip[volume.case_id]
        assert gate.dtype == bool and gate.shape == (volume.image.shape[2],)
        assert not (gate & ~everything[volume.case_id]).any()  # a slice without brain is never tumour
    assert clip_arch_of(ctx, "biomedclip") == "tiny"  # tiny profile: the tiny CLIP stands in
    again, _ = slices_to_segment(ctx, "test", "clip", "biomedclip")
    assert again == key and ctx.stage_times["zero_shot_labels"] >= 0.0


def test_without_training_labels_the_default_runs_and_a_gt_switch_names_the_missing_file(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    split = make_split([c.case_id for c in discover_cases(data)], seed=0)
    for case in discover_cases(data):
        if case.case_id not in split["test"]:
            case.seg.unlink()
    quiet = {"profile": "tiny", "cache_root": tmp_path / "cache", "progress": False, "echo": lambda _: None}
    result = run_method("medclip_sam", data, **quiet)
    assert result.tags["label_free"] == "true" and len(result.per_case) == 2
    with pytest.raises(DataError, match="seg.*baselines.salip.tta_on_gt needs ground truth"):
        run_method("salip", data, overrides={"baselines.salip.tta_on_gt": True}, **quiet)
