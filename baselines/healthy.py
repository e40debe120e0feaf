"""Tumour-free training data for the anomaly-detection baselines (AMCons, GradCAMCons, 3D IF).

The paper does not say how its authors chose "healthy" data from BraTS. ``baselines.healthy_source``
chooses: ``clip`` takes the training slices that CLIP's zero-shot stage (the pipeline's cached
``slice_labels`` stage) calls normal: label-free, the default; ``ground_truth`` takes the slices
without tumour in the segmentation: the usual anomaly-detection protocol, a ground-truth use.
"""
from __future__ import annotations

import numpy as np

from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import GROUND_TRUTH
from clisc.pipeline.steps_cam import brain_slices, clip_labels, gt_slice_labels, labelled_volumes


def healthy_slices(ctx: RunContext) -> tuple[str, dict[str, np.ndarray]]:
    """``(key, {case_id: z indices})``: the tumour-free brain slices of each training volume by
    ``baselines.healthy_source``; the key names the source (and its cache key) for downstream stages."""
    source = ctx.settings.baselines.healthy_source
    if source == GROUND_TRUTH:
        slices = {}
        for volume in labelled_volumes(ctx, "train", "baselines.healthy_source=ground_truth"):
            zs = brain_slices(volume)
            slices[volume.case_id] = zs[gt_slice_labels(volume)[zs] == 0]
        return f"healthy-gt-{ctx.volumes_key}", slices
    labels_key, labels = clip_labels(ctx)
    slices = {}
    for volume in ctx.volumes("train"):
        zs = brain_slices(volume)
        slices[volume.case_id] = zs[labels[volume.case_id][zs] == 0]
    return f"healthy-clip-{labels_key}", slices
