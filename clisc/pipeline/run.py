"""Run one registered method with one seed: the thin pipeline over the cached stages, then scoring.

``OUTPUTS`` maps an output name to the function producing ``(key, {case_id: XxYxZ mask})`` on a
split (the test split for the tables, the validation split for a label-using search); methods
(``clisc.pipeline.methods``) name one of them, or a ``"module:function"`` of the same signature
defined elsewhere (the baselines).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from clisc.data.io import require_segs
from clisc.data.native import native_ground_truth, save_native_mask, to_native
from clisc.data.split import split_digest
from clisc.data.synth.writer import SYNTHETIC_MARKER
from clisc.evaluation.evaluate import evaluate_cases
from clisc.pipeline.context import RunContext
from clisc.pipeline.methods import Method, get_method
from clisc.pipeline.result import MethodResult
from clisc.pipeline.settings import Settings, apply_overrides, ground_truth_uses, protocol_layer, resolve_settings
from clisc.pipeline.settings_file import TUNED_ON_LABELS_SWITCH, SettingsFile
from clisc.pipeline.steps_cam import scored_cams
from clisc.pipeline.steps_seg import (
    fully_supervised,
    predictions,
    sam_from_ground_truth,
    sam_pseudo_labels,
    unet_round1,
    unet_round2,
)
from clisc.stages.slice_input import axial_slices, brain_of, model_input_volume

log = logging.getLogger(__name__)

Output = Callable[[RunContext, str], tuple[str, dict[str, np.ndarray]]]


OUTPUTS: dict[str, Output] = {
    "cam_raw": scored_cams("raw"),
    "cam_amda": scored_cams("amda"),
    "sam": sam_pseudo_labels,
    "unet_round1": lambda ctx, split: predictions(ctx, unet_round1(ctx), split),
    "unet_round2": lambda ctx, split: predictions(ctx, unet_round2(ctx), split),
    "supervised": lambda ctx, split: predictions(ctx, fully_supervised(ctx), split),
    "sam_gt": sam_from_ground_truth,
}


def resolve_output(name: str) -> Output:
    """The output function of a method: a key of ``OUTPUTS`` or ``"package.module:function"``."""
    if ":" not in name:
        return OUTPUTS[name]
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def method_settings(method: Method, protocol: str, profile: str, overrides: Mapping[str, Any] | None,
                    settings_file: SettingsFile | None = None) -> Settings:
    """Protocol (the keys of ``method.protocol_scope``) <- profile <- a settings file's overrides <- the
    method's declared differences <- the user's overrides (spec, sweep point, ``--set``)."""
    settings = resolve_settings(protocol, profile, protocol_scope=method.protocol_scope)
    if settings_file is not None:
        settings = apply_overrides(settings, settings_file.overrides)
    settings = apply_overrides(settings, method.overrides)
    return apply_overrides(settings, overrides or {})


def qualitative_slices(volumes, preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each case, the axial slice with the largest true tumour area: image (as the 2D models see
    it: [0, 1], background black, ``YxX`` with anterior at the top), truth, prediction (``YxX``)."""
    arrays: dict[str, np.ndarray] = {}
    for volume in volumes:
        z = int(volume.label.reshape(-1, volume.label.shape[2]).sum(axis=0).argmax())
        arrays[f"{volume.case_id}__image"] = axial_slices(model_input_volume(volume.image, brain_of(volume), [z]))[0]
        arrays[f"{volume.case_id}__gt"] = axial_slices(volume.label, [z])[0].astype(np.uint8)
        arrays[f"{volume.case_id}__pred"] = axial_slices(preds[volume.case_id], [z])[0].astype(np.uint8)
    return arrays


def run_method(
    name: str,
    data: str | Path,
    *,
    protocol: str = "paper",
    profile: str = "paper",
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    cache_root: str | Path = "cache",
    out_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] = print,
    split: str = "test",
    split_file: str | Path | None = None,
    skip_cases: Sequence[str] = (),
    settings_file: SettingsFile | None = None,
    extra_tags: Mapping[str, str] | None = None,
    save_predictions: bool = False,
) -> MethodResult:
    """Run (or reuse) every stage ``name`` needs, score its output on ``split`` (test by default;
    scoring the validation split reads its labels: the run is then tagged not label-free).

    Each case is scored in the stored file's own grid: the mask is put back there (resampling,
    crop and reorientation undone, ``clisc.data.native``) and compared with the stored ground
    truth at native resolution. With ``save_predictions`` and ``out_dir`` those native masks are
    written as ``out_dir/predictions/<case_id>.nii.gz`` (uint8, the FLAIR's affine and header), the
    files ``clisc eval`` reproduces the per-case scores from.

    ``split_file``: the split to use (default: the one in ``splits/``, made when missing);
    ``skip_cases``: case ids left out of the data and the split (``--skip-bad``); ``settings_file``:
    tuned overrides and their provenance (``--settings-file``); ``extra_tags``: e.g. ``fold``/``folds``.
    """
    method = get_method(name)
    settings = method_settings(method, protocol, profile, overrides, settings_file)
    ctx = RunContext(Path(data), settings, seed, Path(cache_root), device, progress, echo,
                     split_path=Path(split_file) if split_file is not None else None, skip_cases=tuple(skip_cases))
    echo(f"[clisc] {name} (seed {seed}, protocol {protocol}, profile {profile}) on {len(ctx.cases)} cases; "
         f"split {', '.join(f'{k} {len(v)}' for k, v in ctx.split.items())}")
    left_out = protocol_layer(protocol, method.protocol_scope)[1]
    if left_out:
        echo(f"[clisc] {name} keeps its own settings: protocol {protocol}'s {', '.join(left_out)} "
             f"are CLISC's and not applied")
    require_segs((ctx.cases[c] for c in ctx.split[split]), f"scoring the {split} split")  # before any stage runs
    _, preds = resolve_output(method.output)(ctx, split)
    volumes = ctx.volumes(split)
    saved = Path(out_dir) / "predictions" if save_predictions and out_dir is not None else None
    per_case = evaluate_cases(native_items(ctx, volumes, preds, saved, f"clisc {name} seed {seed}"),
                              empty_prediction=settings.evaluation.empty_prediction)
    synthetic = (Path(data) / SYNTHETIC_MARKER).is_file()
    gt_used = ground_truth_tags(method, settings, settings_file) + (["validation_scoring"] if split != "test" else [])
    tags = {
        "method": name,
        "title": method.title,
        "protocol": protocol,
        "profile": profile,
        "gt_switches": ",".join(gt_used) or "none",
        "label_free": str(method.label_free and not gt_used).lower(),
        "protocol_left_out": ",".join(protocol_layer(protocol, method.protocol_scope)[1]) or "none",
        "weights": ";".join(f"{k}={v.split('=', 1)[-1]}" for k, v in sorted(ctx.weights.items())) or "none",
        # a run on any random foundation weights is a smoke/plumbing run, never a result
        "random_weights": str(any(v.endswith("=random") for v in ctx.weights.values())).lower(),
        "dataset": ctx.fingerprint,
        "dataset_content": ctx.content_key,
        "synthetic_data": str(synthetic).lower(),
        "git_commit": git_commit(),
        "split_file": ctx.split_path.name,
        "split_sha256": split_digest(ctx.split_path),
        "scored_split": split,
        "skipped_cases": ",".join(sorted(skip_cases)) or "none",
        **(settings_file.tags() if settings_file is not None else {}),
        **(extra_tags or {}),
    }
    result = MethodResult(name, seed, per_case, settings.flat(), tags, dict(ctx.stage_times),
                          histories=dict(ctx.histories), split=split_table(ctx), data_root=str(data))
    if out_dir is not None:
        result.artifacts = write_run_folder(Path(out_dir), result, settings, qualitative_slices(volumes, preds))
        if saved is not None:
            result.artifacts["predictions"] = saved
    return result


def ground_truth_tags(method: Method, settings: Settings, settings_file: SettingsFile | None = None) -> list[str]:
    """The uses of ground truth of a run of ``method`` with ``settings`` before any scoring (its
    ``gt_switches`` tag; label-free when empty and the method is label-free by design): the method's
    active switches and a settings file tuned on labels."""
    gt_used = ground_truth_uses(settings, method.gt_switches, method.gt_switches_when)
    if settings_file is not None and settings_file.tuned_on_labels:
        gt_used.append(TUNED_ON_LABELS_SWITCH)
    return gt_used


def split_table(ctx: RunContext) -> pd.DataFrame:
    """The run's split as a table: ``case_id, split`` (train, then valid, then test)."""
    rows = [(case, part) for part, cases in ctx.split.items() for case in cases]
    return pd.DataFrame(rows, columns=["case_id", "split"])


def native_items(ctx: RunContext, volumes, preds: Mapping[str, np.ndarray], save_to: Path | None = None,
                 description: str = "clisc") -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """``(case_id, prediction, ground truth, spacing)`` per volume, both masks in the stored file's
    grid (``clisc.data.native``), one case at a time; with ``save_to`` each prediction is also
    written there as ``<case_id>.nii.gz``."""
    for volume in volumes:
        mask = to_native(volume, preds[volume.case_id])
        if save_to is not None:
            save_native_mask(save_to / f"{volume.case_id}.nii.gz", mask, ctx.cases[volume.case_id], description)
        truth, spacing = native_ground_truth(ctx.cases[volume.case_id], ctx.cache_root)
        yield volume.case_id, mask.astype(bool), truth, spacing


def write_run_folder(out: Path, result: MethodResult, settings: Settings, slices: dict[str, np.ndarray]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_case": out / "per_case.csv", "settings": out / "settings.yaml", "qualitative": out / "qualitative.npz"}
    result.per_case.to_csv(paths["per_case"], index=False)
    paths["settings"].write_text(yaml.safe_dump({"tags": result.tags, "settings": dataclasses.asdict(settings)},
                                                sort_keys=False))
    np.savez_compressed(paths["qualitative"], **slices)
    return paths


def summary_line(result: MethodResult) -> str:
    df: pd.DataFrame = result.per_case
    return (f"{result.method}: DSC {df['dsc'].mean():.2f} ± {df['dsc'].std(ddof=1):.2f} %  "
            f"HD95 {df['hd95'].mean():.2f} ± {df['hd95'].std(ddof=1):.2f} mm  ({len(df)} test cases)")
