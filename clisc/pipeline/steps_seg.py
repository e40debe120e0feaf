"""Figure 1, right half: SAM pseudo-labels -> 3D U-Net -> S3F -> round 2; and the reference rows.

Per-case work (SAM over a volume, predictions) is saved case by case in a scratch directory while a
stage runs, and U-Net training checkpoints every epoch, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from clisc.cache import atomic_write_bytes
from clisc.data.lazy import LazyMapping, MappedSequence, NpzFolder
from clisc.data.preprocessing import Volume
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext, save_arrays
from clisc.pipeline.curves import HISTORY_FILE, EpochRecorder, read_history
from clisc.pipeline.models import load_sam_cached, sam_arch
from clisc.pipeline.steps_cam import labelled_volumes, roi_masks
from clisc.stages.prompts import PromptSettings
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter, segment_volume
from clisc.stages.sam_variants import make_segmenter
from clisc.stages.s3f import S3FScores, prepare_prediction, score_predictions, select_targets, similarity
from clisc.stages.slice_input import brain_of, model_input_volume
from clisc.stages.unet3d import build_unet, predict_volume, prediction_settings, result_settings, train_unet

log = logging.getLogger(__name__)


def sam_volume(volume: Volume, roi: np.ndarray, prompts: PromptSettings, sam: SamSegmenter,
               brain_only: bool) -> np.ndarray:
    """SAM over a volume's slices ``XxYxZ`` bool (the 2D model input: background black,
    ``clisc.stages.slice_input``), each prompted from its ``roi`` slice (``XxYxZ``; the "official"
    prompt variant ranks its points on this binary ROI x image, as the code does on its
    post-processed CAM); zeroed outside the brain with ``brain_only`` (``sam.brain_only``)."""
    brain = brain_of(volume)
    masks = segment_volume(model_input_volume(volume.image, brain), roi, prompts, sam)
    return masks & brain if brain_only else masks


def segmenter(ctx: RunContext, equalize: bool | None = None) -> SamSegmenter:
    """SAM with a disk embedding cache shared by every stage and run (keyed by slice content);
    ``equalize``: a baseline's own histogram equalisation (default: CLISC's ``sam.equalize``)."""
    s = ctx.settings
    equalize = s.sam.equalize if equalize is None else equalize
    memo = ("segmenter", f"equalize={equalize}")
    if memo not in ctx._memo:
        arch = sam_arch(s.foundation, s.sam)
        sam, record = load_sam_cached(arch, s.foundation.weights, ctx.device)
        ctx.weights["sam"] = f"{s.sam.model}:{record.tag}"
        directory = ctx.cache_root / "sam_embeddings" if s.sam.embedding_cache == "disk" else None
        cache = None if s.sam.embedding_cache == "off" else EmbeddingCache(directory, max_in_memory=512)
        # the setting, the model built and its weights' full sha256 (random weights are seeded, so
        # "random" names them exactly): every SAM stage's key holds this tag
        tag = f"{s.sam.model}-{arch}-{record.name.replace(':', '-')}-{record.sha256}"
        ctx._memo[memo] = make_segmenter(arch, sam, s.sam.batch_size, equalize, cache, ctx.device, tag,
                                         s.sam.precision, s.sam.max_slices)
    return ctx._memo[memo]


def per_case_stage(
    ctx: RunContext,
    name: str,
    settings: dict,
    inputs: list[str],
    volumes: Sequence[Volume],
    segment_case: Callable[[Volume], np.ndarray],
) -> tuple[str, dict[str, np.ndarray]]:
    """A stage producing one ``XxYxZ`` uint8 mask per case, resumable case by case (also used by the
    baselines for their per-case outputs)."""
    key = ctx.key(name, settings, inputs)
    work = ctx.scratch(name, key)

    def compute(out: Path) -> None:
        for volume in volumes:
            part = work / f"{volume.case_id}.npz"
            try:  # finished before, by a killed run or by another process computing the same stage
                shutil.copyfile(part, out / part.name)
                continue
            except FileNotFoundError:  # not yet, or that process published the stage and removed its scratch
                pass
            buffer = io.BytesIO()
            np.savez_compressed(buffer, mask=segment_case(volume).astype(np.uint8))
            atomic_write_bytes(part, buffer.getvalue())  # a temporary name of its own: concurrent runs never share one
            (out / part.name).write_bytes(buffer.getvalue())

    def load(path: Path) -> NpzFolder:  # masks read on access: memory does not grow with cases
        return NpzFolder(path, "mask")

    return ctx.stage(name, settings, inputs, compute, load)


def sam_pseudo_labels(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """SAM prompted from the AMDA-CAM ROI of each slice (``cam.postprocess``: after the code's 3D
    clean-up): the 3D pseudo-labels (train) or the Table-2 SAM rows (test)."""
    s = ctx.settings
    rois_key, rois = roi_masks(ctx, split, "amda", s.cam.postprocess)
    sam = segmenter(ctx)

    def run(volume: Volume) -> np.ndarray:
        return sam_volume(volume, rois[volume.case_id], s.prompts, sam, s.sam.brain_only)

    settings = {"split": split, "prompts": s.prompts, "equalize": s.sam.equalize, "brain_only": s.sam.brain_only,
                "model": sam.key_tag}
    return per_case_stage(ctx, "sam_pseudo_labels", settings, [rois_key], ctx.volumes(split), run)


def sam_from_ground_truth(ctx: RunContext, split: str = "test") -> tuple[str, dict[str, np.ndarray]]:
    """Reference row: SAM prompted with box + points from each slice's true mask."""
    sam = segmenter(ctx)
    prompts = PromptSettings("box+points", 0)
    brain_only = ctx.settings.sam.brain_only

    def run(volume: Volume) -> np.ndarray:
        return sam_volume(volume, volume.label.astype(bool), prompts, sam, brain_only)

    volumes = labelled_volumes(ctx, split, "SAM prompted from ground truth")
    settings = {"split": split, "prompts": prompts, "equalize": ctx.settings.sam.equalize, "brain_only": brain_only,
                "model": sam.key_tag}
    return per_case_stage(ctx, "sam_gt_prompts", settings, [ctx.volumes_key], volumes, run)


def _unet_settings(ctx: RunContext):
    return dataclasses.replace(ctx.settings.unet, select_on_gt_validation=ctx.settings.gt.select_checkpoints_on_gt)


def _unet_key_settings(ctx: RunContext):
    """The U-Net settings that key a trained network: the loader workers and post-processing do not change it."""
    return result_settings(_unet_settings(ctx))


def train_network(
    ctx: RunContext, name: str, inputs: list[str], targets: Callable[[], dict[str, np.ndarray]],
    reads: dict | None = None,
) -> tuple[str, torch.nn.Module]:
    """A 3D U-Net trained from scratch on ``targets()`` (case id -> ``XxYxZ`` mask over training
    volumes); ``reads``: the settings ``targets`` reads beyond ``inputs`` (part of the key)."""
    us = _unet_settings(ctx)
    settings = {"unet": _unet_key_settings(ctx), "seed": ctx.seed, **(reads or {})}
    key = ctx.key(name, settings, inputs)

    def compute(out: Path) -> None:
        labels = targets()
        ids = [case_id for case_id in ctx.volumes("train").case_ids if case_id in labels]
        val = None
        if us.select_on_gt_validation:
            valid = labelled_volumes(ctx, "valid", "gt.select_checkpoints_on_gt")
            val = (valid.images(), valid.labels())
        scratch = ctx.scratch(name, key)
        curve = EpochRecorder(scratch / HISTORY_FILE)  # beside the checkpoint: a resumed run keeps its curve
        model = train_unet(  # volumes and labels are read on demand (DataLoader workers on CUDA)
            ctx.volumes("train").select(ids).images(), MappedSequence(ids, labels.__getitem__), us,
            seed=ctx.seed, device=ctx.device, val=val, progress=ctx.progress, checkpoint_dir=scratch, on_epoch=curve,
        )
        curve.write(out / HISTORY_FILE)
        torch.save(model.state_dict(), out / "model.pt")
        (out / "cases.json").write_text(json.dumps(ids))

    def load(path: Path) -> torch.nn.Module:
        ctx.histories[name] = read_history(path / HISTORY_FILE)
        model = build_unet(us)
        model.load_state_dict(torch.load(path / "model.pt", map_location=ctx.device))
        return model.to(ctx.device).eval()

    return ctx.stage(name, settings, inputs, compute, load)


def predictions(ctx: RunContext, network: tuple[str, torch.nn.Module], split: str) -> tuple[str, dict[str, np.ndarray]]:
    model_key, model = network
    us = _unet_settings(ctx)

    def run(volume: Volume) -> np.ndarray:
        return predict_volume(model, volume.image, us, ctx.device)

    settings = {"split": split, **prediction_settings(us)}
    return per_case_stage(ctx, "predictions", settings, [model_key, ctx.volumes_key], ctx.volumes(split), run)


def round1_targets(labels: dict[str, np.ndarray], rois: dict[str, np.ndarray],
                   skip_empty_rois: bool) -> dict[str, np.ndarray]:
    """Round 1's training labels (case id -> ``XxYxZ`` SAM pseudo-label, read on access). With
    ``skip_empty_rois`` (``sam.skip_empty_rois``, the code) a case whose ROI volume (``XxYxZ``, the
    one that prompts SAM) is empty is left out, as the code's ``step2`` writes no SAM label for an
    empty post-processed CAM (``if cam_array.sum() == 0: continue``) and its ``SAM_Sup`` loader
    keeps only the cases with one; otherwise it trains on its all-empty pseudo-label."""
    if not skip_empty_rois:
        return labels
    kept = [case for case in labels if np.asarray(rois[case]).any()]
    if len(kept) < len(labels):
        log.warning("round 1: %d of %d training cases have no ROI and are left out (sam.skip_empty_rois)",
                    len(labels) - len(kept), len(labels))
    if not kept:
        raise CliscError("round 1: every training case has an empty ROI, nothing to train on "
                         "(sam.skip_empty_rois=true; --set sam.skip_empty_rois=false trains on the empty pseudo-labels)")
    return LazyMapping(kept, labels.__getitem__)


def unet_round1(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    """Round 1: the network trained on the SAM pseudo-labels of the training cases (those with a ROI
    under ``sam.skip_empty_rois``)."""
    s = ctx.settings
    labels_key, labels = sam_pseudo_labels(ctx, "train")
    skip = s.sam.skip_empty_rois

    def targets() -> dict[str, np.ndarray]:
        rois = roi_masks(ctx, "train", "amda", s.cam.postprocess)[1] if skip else {}
        return round1_targets(labels, rois, skip)

    return train_network(ctx, "unet_round1", [labels_key], targets, {"skip_empty_rois": skip})


def _s3f_prompts(ctx: RunContext) -> PromptSettings:
    # "exactly as in step 5" (the official variant ranks points on prediction x image, no CAM here)
    return PromptSettings(ctx.settings.prompts.variant, ctx.settings.s3f.box_dilation)


def _s3f_reads(ctx: RunContext, sam: SamSegmenter) -> dict:
    """What scoring a prediction against SAM reads (the S3F stage's and the search criterion's key)."""
    s = ctx.settings
    return {"prompts": _s3f_prompts(ctx), "largest_component": s.s3f.largest_component,
            "empty_prediction": s.s3f.empty_prediction, "equalize": s.sam.equalize,
            "brain_only": s.sam.brain_only, "model": sam.key_tag}


def s3f(ctx: RunContext) -> tuple[str, S3FScores]:
    """S3F's measurement: round-1 predictions of the training volumes -> prompts -> SAM -> Dice per
    volume. ``beta`` and ``round2_targets`` are applied by :func:`unet_round2`, so a sweep of them
    reuses this stage."""
    round1 = unet_round1(ctx)
    preds_key, preds = predictions(ctx, round1, "train")
    s = ctx.settings
    sam = segmenter(ctx)
    prompts, brain_only = _s3f_prompts(ctx), s.sam.brain_only
    volumes = ctx.volumes("train")

    def compute(out: Path) -> None:  # per-case masks go straight to disk: memory does not grow with cases
        scores = score_predictions(
            # the "images" handed to SAM are the volumes themselves (read one at a time): it needs their brain
            volumes.case_ids, volumes, MappedSequence(volumes.case_ids, preds.__getitem__),
            lambda volume, pred: sam_volume(volume, pred.astype(bool), prompts, sam, brain_only), s.s3f,
            progress=ctx.progress,
            store={"sam": NpzFolder(out / "sam", "mask"), "network": NpzFolder(out / "network", "mask")},
        )
        (out / "similarity.json").write_text(json.dumps({"similarity": scores.similarities,
                                                         "empty_predictions": scores.empty_predictions}))

    def load(path: Path) -> S3FScores:  # masks read on access
        info = json.loads((path / "similarity.json").read_text())
        return S3FScores(info["similarity"], NpzFolder(path / "sam", "mask"), NpzFolder(path / "network", "mask"),
                         info["empty_predictions"])

    return ctx.stage("s3f", _s3f_reads(ctx, sam), [preds_key], compute, load)


def unet_round2(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    """Round 2: the network retrained (from scratch) on the volumes S3F keeps (``s3f.beta``), with
    the labels ``s3f.round2_targets`` names."""
    s = ctx.settings
    s3f_key, scores = s3f(ctx)
    inputs, pseudo = [s3f_key], None
    if s.s3f.round2_targets == "pseudo_labels":
        pseudo_key, pseudo = sam_pseudo_labels(ctx, "train")
        inputs.append(pseudo_key)
    reads = {"beta": s.s3f.beta, "round2_targets": s.s3f.round2_targets, "keep_rule": s.s3f.keep_rule}
    return train_network(ctx, "unet_round2", inputs, lambda: select_targets(scores, s.s3f, pseudo)[1], reads)


def sam_agreement(ctx: RunContext, output: tuple[str, dict[str, np.ndarray]],
                  split: str) -> tuple[str, dict[str, float]]:
    """The label-free search criterion: per volume of ``split``, the Dice between a method's mask
    (``output`` = ``(key, {case_id: XxYxZ mask})``, prepared as S3F prepares a prediction) and SAM
    prompted from it as in S3F. An empty mask scores 0: a network that finds nothing must not win by
    agreeing with SAM's empty answer. No label is read."""
    output_key, masks = output
    sam = segmenter(ctx)
    s = ctx.settings
    prompts, brain_only = _s3f_prompts(ctx), s.sam.brain_only

    def compute(out: Path) -> None:
        scores = {}
        for volume in ctx.volumes(split):
            mask = prepare_prediction(masks[volume.case_id], s.s3f)
            agree = similarity(sam_volume(volume, mask.astype(bool), prompts, sam, brain_only), mask)
            scores[volume.case_id] = agree if mask.any() else 0.0
        (out / "agreement.json").write_text(json.dumps(scores))

    def load(path: Path) -> dict[str, float]:
        return json.loads((path / "agreement.json").read_text())

    reads = {**_s3f_reads(ctx, sam), "split": split}
    reads.pop("empty_prediction")  # not read: an empty mask scores 0 here
    return ctx.stage("sam_agreement", reads, [output_key, ctx.volumes_key], compute, load)


def fully_supervised(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    """Reference row: the same network and schedule trained on the ground-truth masks."""
    return train_network(ctx, "unet_supervised", [ctx.volumes_key],
                         lambda: labelled_volumes(ctx, "train", "the fully supervised U-Net").labels_by_id())
