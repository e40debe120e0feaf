"""Table 1's "3D IF": implicit field learning (Naval Marimont & Tarroni, "Implicit field learning for
unsupervised anomaly detection in medical images", MICCAI 2021; code snavalm/ifl_unsup_anom_det,
which builds on DeepSDF's auto-decoder).

Each brain's intensities are clipped to their 2nd-98th percentiles, min-max scaled and coded as the
nearest of ``n_classes - 1`` intensity centres (a proxy for tissue types), then mode-filtered. An MLP
maps ``[latent of the volume, Fourier features of xyz]`` to the class logits; the network and one
latent per healthy training volume are optimised jointly (cross-entropy of sampled voxels). At test
the network is frozen and a new latent is fitted to the volume: the field it gives is the "healthy
restoration" of the volume, and each voxel's cross-entropy under it is the anomaly score, smoothed
(min filter 3, mean filter) and thresholded. Parts: ``baselines/implicit_field_model.py``.

Departures (``baselines.implicit_field.*``, defaults the public code's; ``docs/DEPARTURES.md``):
- Healthy data: the original trains on HCP T2 volumes; BraTS has no healthy volume, so training
  voxels are drawn only from the tumour-free axial slices of each training volume, chosen by
  ``baselines.healthy_source`` (``baselines.healthy.healthy_slices``: CLIP's normal slices, or the
  ground truth's, a GT switch). The modality is FLAIR (Table 1's), not T2.
- Intensity classes: the code's 10 k-means centres were fitted once on HCP T2 and include the
  background (value 0) in the darkest class; here the background is its own class 0 and the
  ``n_classes - 1`` brain centres are a 1D k-means of the healthy training voxels (after the code's
  per-volume clip + min-max), stored with the model. The mode filter counts brain classes only.
- Coordinates: the code samples coordinates of a padded 240^3 grid as ``i / N * 2 - 1`` (training)
  but reconstructs on ``linspace(-1, 1, N)`` (test), a small mismatch; here voxel centres of the
  case's full BraTS grid (before the brain crop and resampling) divided by its largest side, at
  training and test alike.
- Smoothing: the code's min-pool 3 + mean-pool 15 voxels on its 1.5 mm (160^3) grid; the mean
  filter is given in mm (``mean_filter_mm`` 22.5) so it keeps its width at any resampling.
- Threshold: the code picks the threshold of best Dice on labelled evaluation cases; here a fixed
  ``threshold_percentile`` of each volume's own smoothed brain scores (as the FLAIR floor), label-free.
- The code's loss is summed per scene; a mean over voxels is the same objective up to a constant
  (Adam is insensitive to it). The code's dropout, weight norm, skip, code bound and regulariser,
  schedule and the two-phase test fit (500 x 10k voxels, 100 x 50k) are kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from baselines.healthy import healthy_slices
from baselines.implicit_field_model import (ImplicitDecoder, TrainingVolume, VoxelGrid, fit_class_centres, fit_latent,
                                            normalise_brain, quantise, train_decoder, voxel_cross_entropy)
from baselines.settings import ImplicitFieldSettings
from clisc.data.preprocessing import Volume
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext
from clisc.pipeline.curves import HISTORY_FILE, EpochRecorder, read_history
from clisc.pipeline.steps_seg import per_case_stage
from clisc.stages.slice_input import brain_of

CENTRE_SAMPLES_PER_VOLUME = 50_000  # healthy brain voxels per training volume for the k-means of the classes


@dataclass
class ImplicitField:
    """A trained 3D IF: the network, the brain intensity centres ``K`` and the training latents ``VxD``."""

    model: ImplicitDecoder
    centres: np.ndarray
    latents: torch.Tensor
    case_ids: list[str]


def grid_of(volume: Volume) -> VoxelGrid:
    """The voxel coordinates of a preprocessed volume in its case's full BraTS frame."""
    return VoxelGrid.of(volume.image.shape, volume.crop, volume.original_shape)


def volume_classes(volume: Volume, centres: np.ndarray, s: ImplicitFieldSettings) -> np.ndarray:
    """Intensity classes ``XxYxZ`` uint8 of a preprocessed volume (background 0)."""
    brain = brain_of(volume)
    return quantise(normalise_brain(volume.image, brain, s.clip_percentile), brain, centres, s.mode_pool)


def healthy_brain_values(volume: Volume, slices: np.ndarray, s: ImplicitFieldSettings,
                         rng: np.random.Generator) -> np.ndarray:
    """Up to ``CENTRE_SAMPLES_PER_VOLUME`` normalised brain intensities ``N`` of the slices ``slices``."""
    brain = brain_of(volume)
    healthy = np.zeros_like(brain)
    healthy[:, :, slices] = brain[:, :, slices]
    values = normalise_brain(volume.image, brain, s.clip_percentile)[healthy]
    if values.size > CENTRE_SAMPLES_PER_VOLUME:
        values = rng.choice(values, CENTRE_SAMPLES_PER_VOLUME, replace=False)
    return values


def smooth_scores(scores: np.ndarray, spacing: tuple[float, float, float], s: ImplicitFieldSettings) -> np.ndarray:
    """The code's post-processing of a score volume ``XxYxZ``: a min filter (``min_filter`` voxels)
    removes isolated peaks, then a zero-padded mean filter ``mean_filter_mm`` wide (odd voxels per axis)."""
    out = scores.astype(np.float32)
    if s.min_filter > 1:
        out = ndimage.minimum_filter(out, size=s.min_filter, mode="nearest")
    widths = [max(1, int(round(s.mean_filter_mm / sp))) for sp in spacing]
    return ndimage.uniform_filter(out, size=[n + 1 - n % 2 for n in widths], mode="constant")  # odd: centred


def anomaly_mask(smoothed: np.ndarray, brain: np.ndarray, percentile: float) -> np.ndarray:
    """Tumour mask ``XxYxZ`` bool: brain voxels whose smoothed score is at or above the ``percentile``-th
    percentile of the volume's brain scores."""
    if not brain.any():
        return np.zeros(brain.shape, bool)
    return brain & (smoothed >= np.percentile(smoothed[brain], percentile))


def train_implicit_field(ctx: RunContext) -> tuple[str, ImplicitField]:
    """Cached stage: intensity centres, network and training latents from the healthy slices of
    the training volumes (``baselines.healthy_source``); checkpointed in the stage's scratch folder,
    so a killed run resumes its training."""
    s = ctx.settings.baselines.implicit_field
    healthy_key, healthy = healthy_slices(ctx)
    settings = {"implicit_field": s, "seed": ctx.seed}
    inputs = [healthy_key, ctx.volumes_key]

    def compute(out: Path) -> None:
        volumes = ctx.volumes("train")
        ids = [case_id for case_id in volumes.case_ids if len(healthy.get(case_id, ())) > 0]
        if not ids:
            raise CliscError(f"3D IF: no tumour-free training slices (baselines.healthy_source="
                             f"{ctx.settings.baselines.healthy_source}) to train on")
        rng = np.random.default_rng(ctx.seed)
        values = np.concatenate([healthy_brain_values(volumes.by_id(c), healthy[c], s, rng) for c in ids])
        centres = fit_class_centres(values, s.n_classes - 1)
        training = [TrainingVolume(volume_classes(v, centres, s), grid_of(v), np.asarray(healthy[v.case_id]))
                    for v in volumes.select(ids)]  # uint8 class volumes: the network samples them every step
        scratch = ctx.scratch("implicit_field", ctx.key("implicit_field", settings, inputs))
        curve = EpochRecorder(scratch / HISTORY_FILE)  # beside the checkpoint: a resumed run keeps its curve
        model, latents = train_decoder(training, s, ctx.seed, ctx.device, ctx.progress, on_epoch=curve,
                                       checkpoint=scratch / "checkpoint.pt")
        curve.write(out / HISTORY_FILE)
        torch.save({"model": model.state_dict(), "latents": latents.cpu()}, out / "model.pt")
        np.save(out / "centres.npy", centres)
        (out / "cases.json").write_text(json.dumps(ids))

    def load(path: Path) -> ImplicitField:
        ctx.histories["implicit_field"] = read_history(path / HISTORY_FILE)
        state = torch.load(path / "model.pt", map_location=ctx.device)
        model = ImplicitDecoder(s)
        model.load_state_dict(state["model"])
        return ImplicitField(model.to(ctx.device).eval(), np.load(path / "centres.npy"), state["latents"],
                             json.loads((path / "cases.json").read_text()))

    return ctx.stage("implicit_field", settings, inputs, compute, load)


def anomaly_scores(field: ImplicitField, volume: Volume, s: ImplicitFieldSettings, seed: int,
                   device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Raw anomaly scores ``XxYxZ`` float32 of a volume: a latent fitted to its classes (network
    frozen), then each voxel's cross-entropy under the field of that latent."""
    classes, grid = volume_classes(volume, field.centres, s), grid_of(volume)
    latent = fit_latent(field.model, classes, grid, s, seed, device, progress=progress)
    return voxel_cross_entropy(field.model, latent, classes, grid, s.batch_voxels, device)


def segment(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """The method's output on ``split``: one mask per case (cached per case)."""
    s = ctx.settings.baselines.implicit_field
    model_key, field = train_implicit_field(ctx)

    def run(volume: Volume) -> np.ndarray:
        scores = anomaly_scores(field, volume, s, ctx.seed, ctx.device, ctx.progress)
        return anomaly_mask(smooth_scores(scores, volume.spacing, s), brain_of(volume), s.threshold_percentile)

    return per_case_stage(ctx, "implicit_field_masks", {"split": split, "settings": s, "seed": ctx.seed},
                          [model_key, ctx.volumes_key], ctx.volumes(split), run)
