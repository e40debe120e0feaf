"""Figure 1, left half: slice labels (CLIP) -> ResNet50 classifier -> Layer-CAM -> AMDA -> CAM ROIs.

Each function is one cached stage over a :class:`~clisc.pipeline.context.RunContext` and returns
``(key, value)``; keys chain, so a change upstream re-runs exactly what depends on it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from clisc.data.io import require_segs
from clisc.data.lazy import LazyMapping, LazyVolumes, NpzFolder
from clisc.data.preprocessing import Volume
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext, load_arrays, save_arrays
from clisc.pipeline.curves import HISTORY_FILE, EpochRecorder, read_history
from clisc.pipeline.models import clip_arch, load_clip_cached, new_resnet
from clisc.stages.amda import amda_training_set
from clisc.stages.cam import best_threshold, binarise_cams, layer_cam, postprocess_cam_volume
from clisc.stages.classifier import predict_tumour_prob, slices_to_input, train_classifier
from clisc.stages.slice_input import axial_slices, brain_of, volume_from_slices
from clisc.stages.slice_labels import SliceLabelSettings, label_volume

CAM_THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.80001, 0.05), 2))  # the code's: 0.05 .. 0.80


def brain_slices(volume: Volume) -> np.ndarray:
    """Indices z of the axial slices that show brain (any brain-mask voxel), in order: the one place
    that selects the slices of the 2D stages."""
    return np.flatnonzero(brain_of(volume).any(axis=(0, 1)))


def labelled_volumes(ctx: RunContext, split: str, why: str) -> LazyVolumes:
    """The volumes of ``split`` for a use of ground truth (``why``, e.g. "gt.gate_cams_with_gt"):
    a one-line DataError naming the first missing segmentation file when a case has none."""
    require_segs((ctx.cases[c] for c in ctx.split[split]), why)
    return ctx.volumes(split)


def gt_slice_labels(volume: Volume) -> np.ndarray:
    """Per-slice ground-truth label (tumour present), ``Z`` uint8; only the GT switches read it."""
    return volume.label.reshape(-1, volume.label.shape[2]).any(axis=0).astype(np.uint8)


def classifier_input(volume: Volume, zs: np.ndarray, size: int) -> torch.Tensor:
    """Classifier / CAM input ``Nx3xSxS`` float32 in [0, 1] of the axial slices ``zs``: background
    black (``clisc.stages.slice_input``), resized to SxS."""
    return slices_to_input(axial_slices(volume.image, zs), size, axial_slices(brain_of(volume), zs))


def clip_labels(ctx: RunContext, arch: str | None = None, rule: SliceLabelSettings | None = None
                ) -> tuple[str, dict[str, np.ndarray]]:
    """CLIP zero-shot labels of every training slice: ``Z`` int8 per case (1, 0, or -1 dropped).
    ``arch``, ``rule``: another CLIP and labelling rule (the baselines' healthy slices; default:
    ``foundation.clip_arch`` and ``slice_labels``); the same values give the same cache entry."""
    s = ctx.settings
    arch = clip_arch(s.foundation) if arch is None else arch
    rule = s.slice_labels if rule is None else rule

    def compute(out: Path) -> None:
        clip = load_clip_cached(arch, s.foundation.weights, ctx.device)
        labels = {v.case_id: label_volume(clip, v.image, rule, brain_of(v)) for v in ctx.volumes("train")}
        save_arrays(out / "labels.npz", labels)
        (out / "weights.json").write_text(json.dumps({"clip": clip.record.tag}))

    def load(path: Path) -> dict[str, np.ndarray]:
        ctx.weights.update(json.loads((path / "weights.json").read_text()))
        return load_arrays(path / "labels.npz")

    settings = {"clip": arch, "weights": s.foundation.weights, "labels": rule}
    # the CLIP built (``foundation.clip_arch``, or its tiny stand-in) and its weights' name + sha256
    # (CLIP is loaded for the key: pretrained files are hashed once, the hash memoised beside them)
    settings["clip_weights"] = load_clip_cached(arch, s.foundation.weights, ctx.device).record.tag
    return ctx.stage("slice_labels", settings, [ctx.volumes_key], compute, load)


def slice_labels(ctx: RunContext) -> tuple[str, dict[str, np.ndarray]]:
    """The training slices' labels the classifier learns (``Z`` int8 per case) by ``slices.labels``:
    CLIP's (:func:`clip_labels`), or the oracle's (tumour present in the slice's segmentation; no
    CLIP is loaded, a ground-truth use)."""
    if ctx.settings.slices.labels == "clip":
        return clip_labels(ctx)
    volumes = labelled_volumes(ctx, "train", "slices.labels=ground_truth")
    return f"gt-slice-labels-{ctx.volumes_key}", {v.case_id: gt_slice_labels(v).astype(np.int8) for v in volumes}


def _inputs(volume: Volume, zs: np.ndarray, size: int) -> np.ndarray:
    """Slices ``z in zs`` as ``NxSxS`` float16 in [0, 1] (``classifier_input``): volumes differ
    in shape after cropping, the classifier's inputs do not. Half precision (finer than the 8-bit
    slices of the public code) keeps BraTS's ~36k training slices at 224 px in 3.6 GB."""
    return classifier_input(volume, zs, size)[:, 0].numpy().astype(np.float16)


def _training_slices(ctx: RunContext, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Classifier training set ``NxSxS``: every ``stride``-th brain slice whose CLIP label was kept."""
    images, targets = [], []
    for volume in ctx.volumes("train"):
        zs = brain_slices(volume)[:: ctx.settings.slices.stride]
        zs = zs[labels[volume.case_id][zs] >= 0]
        images.append(_inputs(volume, zs, ctx.settings.classifier.input_size))
        targets.append(labels[volume.case_id][zs])
    return np.concatenate(images), np.concatenate(targets).astype(np.int64)


def _validation_slices(ctx: RunContext) -> tuple[torch.Tensor, np.ndarray] | None:
    """Ground-truth-labelled validation slices, only under the checkpoint-selection GT switch."""
    if not ctx.settings.gt.select_checkpoints_on_gt:
        return None
    images, targets = [], []
    for volume in labelled_volumes(ctx, "valid", "gt.select_checkpoints_on_gt"):
        zs = brain_slices(volume)[:: ctx.settings.slices.stride]
        images.append(_inputs(volume, zs, ctx.settings.classifier.input_size))
        targets.append(gt_slice_labels(volume)[zs])
    return slices_to_input(np.concatenate(images), ctx.settings.classifier.input_size), np.concatenate(targets)


def _classifier_settings(ctx: RunContext):
    return dataclasses.replace(
        ctx.settings.classifier, select_on_gt_validation=ctx.settings.gt.select_checkpoints_on_gt
    )


def _train(ctx: RunContext, out: Path, images: np.ndarray, targets: np.ndarray, seed: int) -> None:
    cs = _classifier_settings(ctx)
    model, record = new_resnet(ctx.settings.foundation, cs.head, seed)
    model = model.to(ctx.device)
    x = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1)  # Nx3xSxS view: batches are copied, not the set
    curve = EpochRecorder(out / HISTORY_FILE, resume=False)  # no checkpoints: a killed training restarts
    model = train_classifier(model, x, targets, cs, seed=seed, val=_validation_slices(ctx), progress=ctx.progress,
                             on_epoch=curve)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "weights.json").write_text(json.dumps({"resnet50": record.tag}))


def _loader(ctx: RunContext, seed: int, stage: str):
    def load(path: Path) -> torch.nn.Module:
        ctx.weights.update(json.loads((path / "weights.json").read_text()))
        ctx.histories[stage] = read_history(path / HISTORY_FILE)
        model, _ = new_resnet(ctx.settings.foundation, ctx.settings.classifier.head, seed)
        model.load_state_dict(torch.load(path / "model.pt", map_location=ctx.device))
        return model.to(ctx.device).eval()

    return load


def classifier_raw(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    """ResNet50 trained on the slice labels (CLIP's, or the oracle's), before AMDA."""
    labels_key, labels = slice_labels(ctx)
    s = ctx.settings
    settings = {"classifier": _classifier_settings(ctx), "stride": s.slices.stride, "seed": ctx.seed,
                "foundation": (s.foundation.size, s.foundation.weights)}

    def compute(out: Path) -> None:
        images, targets = _training_slices(ctx, labels)
        _train(ctx, out, images, targets, ctx.seed)

    return ctx.stage("classifier_raw", settings, [labels_key], compute, _loader(ctx, ctx.seed, "classifier_raw"))


def classifier_amda(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    """The classifier retrained with AMDA (paper: masked copies + originals; code: intensity masking).
    Without AMDA (``amda.mode=none``, or ``alpha = 0``: nothing to mask) it IS the raw classifier,
    same key and same cache entries downstream."""
    raw_key, raw_model = classifier_raw(ctx)
    s = ctx.settings
    if not s.amda.active:
        return raw_key, raw_model
    labels_key, labels = slice_labels(ctx)

    def compute(out: Path) -> None:
        x, targets = _training_slices(ctx, labels)
        cams = np.zeros(x.shape, np.float16)  # as x: half precision at BraTS scale
        if s.amda.mode == "paper":  # CAMs of the tumour-labelled slices from the raw classifier
            tumour = np.flatnonzero(targets == 1)
            for start in range(0, len(tumour), 64):
                idx = tumour[start:start + 64]
                batch = torch.from_numpy(x[idx, None].astype(np.float32)).expand(-1, 3, -1, -1)
                cams[idx] = layer_cam(raw_model, batch, s.cam.layers)
        augmented, aug_targets = amda_training_set(x, cams, targets, s.amda, np.random.default_rng(ctx.seed))
        _train(ctx, out, augmented, aug_targets, ctx.seed + 1)

    settings = {"amda": s.amda.read(), "seed": ctx.seed}
    if s.amda.mode == "paper":
        settings["cam_layers"] = s.cam.layers
    return ctx.stage("classifier_amda", settings, [raw_key, labels_key], compute,
                     _loader(ctx, ctx.seed + 1, "classifier_amda"))


def classifier(ctx: RunContext, which: str) -> tuple[str, torch.nn.Module]:
    """``which`` = "raw" or "amda"."""
    return (classifier_amda if which == "amda" else classifier_raw)(ctx)


def _volume_cams(ctx: RunContext, model: torch.nn.Module, volume: Volume, gate: np.ndarray) -> np.ndarray:
    """Layer-CAM of the gated slices, ``XxYxZ`` float32 in [0, 1] (zero elsewhere)."""
    cams = np.zeros(volume.image.shape, np.float32)
    zs = np.flatnonzero(gate)
    size = ctx.settings.classifier.input_size
    for start in range(0, len(zs), 32):
        z = zs[start:start + 32]
        x = classifier_input(volume, z, size).to(ctx.device)
        cam = layer_cam(model, x, ctx.settings.cam.layers, out_size=volume.image.shape[1::-1])  # NxYxX
        cams[:, :, z] = volume_from_slices(cam)
    return cams


def gate_slices(labels: np.ndarray | None, verdict: np.ndarray, gt: np.ndarray | None) -> np.ndarray:
    """Which slices of a volume get a CAM, ``Z`` bool: those whose training ``labels`` (``Z``) say
    tumour, or, without labels, those the classifier's ``verdict`` (``Z`` bool) calls tumour; AND
    the ground-truth slice labels ``gt`` (``Z``) when given (the code's gating switch)."""
    gate = (np.asarray(labels) == 1) if labels is not None else np.asarray(verdict, bool).copy()
    return gate & np.asarray(gt, bool) if gt is not None else gate


def _verdict(ctx: RunContext, model: torch.nn.Module, volume: Volume) -> np.ndarray:
    """The classifier's tumour verdict per slice, ``Z`` bool: P(tumour) > 0.5 (argmax, a tie is
    normal, as the code's ``torch.max``) on the brain slices, False elsewhere."""
    verdict = np.zeros(volume.image.shape[2], bool)
    zs = brain_slices(volume)
    if len(zs):
        verdict[zs] = predict_tumour_prob(model, classifier_input(volume, zs, ctx.settings.classifier.input_size)) > 0.5
    return verdict


def _gate_reads_labels(ctx: RunContext, split: str) -> bool:
    return split == "train" and ctx.settings.cam.train_gate == "labels"


def _gates(ctx: RunContext, split: str, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Which slices get a CAM (see :func:`gate_slices`): on the training split the slice labels
    (paper) or the classifier (code, ``cam.train_gate``); elsewhere the classifier."""
    labels = slice_labels(ctx)[1] if _gate_reads_labels(ctx, split) else None
    gt_gate = ctx.settings.gt.gate_cams_with_gt
    gates = {}
    for volume in labelled_volumes(ctx, split, "gt.gate_cams_with_gt") if gt_gate else ctx.volumes(split):
        verdict = None if labels is not None else _verdict(ctx, model, volume)
        gates[volume.case_id] = gate_slices(None if labels is None else labels[volume.case_id], verdict,
                                            gt_slice_labels(volume) if gt_gate else None)
    return gates


def cam_threshold(ctx: RunContext, which: str) -> float:
    """The fixed CAM binarisation threshold: ``cam.threshold`` (label-free), or the code's grid search
    on validation ground truth (a cached stage, so every split and every later run reuses it)."""
    s = ctx.settings
    if not s.gt.tune_cam_threshold_on_gt:
        return s.cam.threshold
    if s.cam.threshold_rule != "fixed":
        raise CliscError(f"gt.tune_cam_threshold_on_gt picks one fixed threshold; it cannot be combined with "
                         f"cam.threshold_rule={s.cam.threshold_rule} (set cam.threshold_rule=fixed)")
    model_key, model = classifier(ctx, which)

    def compute(out: Path) -> None:
        gates = _gates(ctx, "valid", model)
        volumes = labelled_volumes(ctx, "valid", "gt.tune_cam_threshold_on_gt")
        cams = (_volume_cams(ctx, model, v, gates[v.case_id]) for v in volumes)  # one volume at a time
        best, scores = best_threshold(cams, volumes.labels(), CAM_THRESHOLD_GRID)
        (out / "threshold.json").write_text(json.dumps({"threshold": best, "grid_dice": scores}))

    def load(path: Path) -> float:
        return json.loads((path / "threshold.json").read_text())["threshold"]

    settings = {"grid": CAM_THRESHOLD_GRID, "layers": s.cam.layers, "gate_with_gt": s.gt.gate_cams_with_gt}
    return ctx.stage("cam_threshold", settings, [model_key, ctx.volumes_key], compute, load)[1]


def cams(ctx: RunContext, split: str, which: str = "amda") -> tuple[str, NpzFolder]:
    """Layer-CAMs of one split, ``{case_id: XxYxZ float16}`` in [0, 1], zero on slices without a CAM
    (see :func:`_gates`). Keyed by the classifier, not by ``which`` (without AMDA the raw and AMDA
    entries are one), and not by the binarisation: a new threshold or rule reuses the CAMs."""
    model_key, model = classifier(ctx, which)
    s = ctx.settings

    def compute(out: Path) -> None:
        gates = _gates(ctx, split, model)
        for volume in ctx.volumes(split):
            cam = _volume_cams(ctx, model, volume, gates[volume.case_id])
            save_arrays(out / f"{volume.case_id}.npz", {"cam": cam.astype(np.float16)})

    def load(path: Path) -> NpzFolder:  # read on access: memory does not grow with cases
        return NpzFolder(path, field="cam")

    settings = {"split": split, "layers": s.cam.layers, "gate": s.cam.train_gate if split == "train" else "classifier",
                "gate_with_gt": s.gt.gate_cams_with_gt}
    inputs = [model_key, ctx.volumes_key] + ([slice_labels(ctx)[0]] if _gate_reads_labels(ctx, split) else [])
    return ctx.stage("cams", settings, inputs, compute, load)


def cam_rois(ctx: RunContext, split: str, which: str = "amda") -> tuple[str, LazyMapping]:
    """CAMs and their binarisation on one split: ``{case_id: {"cam": XxYxZ float16, "mask": XxYxZ
    bool}}``, the mask (``cam.threshold_rule``, ``cam.threshold``) before any 3D clean-up (see
    :func:`roi_masks`), computed on access from the cached :func:`cams`."""
    s = ctx.settings
    threshold = cam_threshold(ctx, which)  # refuses a GT-tuned threshold with an Otsu rule
    threshold = threshold if s.cam.threshold_rule == "fixed" else None
    cams_key, cam_maps = cams(ctx, split, which)

    def rois_of(case: str) -> dict[str, np.ndarray]:
        cam = cam_maps[case]
        return {"cam": cam, "mask": binarise_cams(cam, s.cam.threshold_rule, threshold)}

    # the threshold enters the key exactly (repr): a search samples floats closer than any rounding
    rule = s.cam.threshold_rule if threshold is None else f"{s.cam.threshold_rule}{threshold!r}"
    return f"{cams_key}-{rule}", LazyMapping(list(cam_maps), rois_of)


def roi_masks(ctx: RunContext, split: str, which: str, postprocess: bool) -> tuple[str, dict[str, np.ndarray]]:
    """``(key, {case_id: XxYxZ bool})``: the binarised CAMs of :func:`cam_rois`, cleaned up in 3D
    (the code's opening + component filter) when ``postprocess``; the key names both."""
    key, rois = cam_rois(ctx, split, which)

    def mask_of(case: str) -> np.ndarray:  # read (and cleaned up) on access: memory does not grow with cases
        mask = rois[case]["mask"]
        return postprocess_cam_volume(mask) if postprocess else mask

    return f"{key}-post{int(postprocess)}", LazyMapping(list(rois), mask_of)


def scored_cams(which: str):
    """The output of the CAM rows of Table 2 ("raw CAM", "CAM with AMDA"): the binarised CAMs of a
    split, post-processed with ``cam.postprocess_scored``."""
    def output(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
        return roi_masks(ctx, split, which, ctx.settings.cam.postprocess_scored)

    return output
