"""A per-case stage computed by two processes at once: the one that publishes first removes the shared
scratch folder; the other must still finish (found by benchmarks/chaos.py)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np

from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings
from clisc.pipeline.steps_seg import per_case_stage


def test_per_case_stage_survives_another_process_publishing_it(tiny_brats_dir, tmp_path) -> None:
    ctx = RunContext(tiny_brats_dir, resolve_settings("paper", "tiny"), 0, tmp_path / "cache", progress=False,
                     echo=lambda _: None)
    volumes = [SimpleNamespace(case_id=f"c{i}") for i in range(3)]
    scratch = tmp_path / "cache" / "_work" / "demo"
    ctx.scratch("demo", ctx.key("demo", {"x": 1}, []))
    np.savez_compressed(next(scratch.iterdir()) / "c0.npz", mask=np.zeros((2, 2, 2), np.uint8))  # done earlier

    def segment(volume) -> np.ndarray:
        if volume.case_id == "c1":  # meanwhile the other process published the stage and dropped the scratch
            shutil.rmtree(scratch)
        return np.full((2, 2, 2), int(volume.case_id[1]), np.uint8)

    _, masks = per_case_stage(ctx, "demo", {"x": 1}, [], volumes, segment)
    assert {case: int(mask.max()) for case, mask in masks.items()} == {"c0": 0, "c1": 1, "c2": 2}
    assert not list((tmp_path / "cache").rglob("*.tmp*"))  # no temporary file left behind
