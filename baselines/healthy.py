"""Tumour-free training data for the anomaly-detection baselines (AMCons, GradCAMCons, 3D IF).

The paper does not say how its authors chose "healthy" data from BraTS. ``baselines.healthy_source``
chooses: ``clip`` takes the training slices that CLIP's zero-shot stage (the pipeline's cached
``slice_labels`` stage, with ``baselines.healthy_clip_arch`` and the baselines' own labelling rule
``baselines.zero_shot``, so CLISC's ``official`` protocol does not change them) calls normal:
label-free, the default; ``ground_truth`` takes the slices without tumour in the segmentation: the
usual anomaly-detection protocol, a ground-truth use.
"""
from __future__ import annotations

import functools

import numpy as np

from clisc.data.lazy import LazyMapping
from baselines.slice_gate import clip_arch_of, zero_shot_rule
from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import GROUND_TRUTH
from clisc.pipeline.steps_cam import brain_slices, clip_labels, gt_slice_labels, labelled_volumes


def healthy_slices(ctx: RunContext) -> tuple[str, LazyMapping[str, np.ndarray]]:
    """``(key, {case_id: z indices})``: the tumour-free brain slices of each training volume by
    ``baselines.healthy_source``; the key names the source (and its cache key) for downstream stages.
    A case's slices are found when first read, so a downstream stage loaded from the cache reads no
    training volume."""
    source = ctx.settings.baselines.healthy_source
    if source == GROUND_TRUTH:
        volumes = labelled_volumes(ctx, "train", "baselines.healthy_source=ground_truth")
        key, labels_of = f"healthy-gt-{ctx.volumes_key}", gt_slice_labels
    else:
        baselines = ctx.settings.baselines
        labels_key, labels = clip_labels(ctx, clip_arch_of(ctx, baselines.healthy_clip_arch), zero_shot_rule(ctx))
        volumes = ctx.volumes("train")
        key, labels_of = f"healthy-clip-{labels_key}", lambda volume: labels[volume.case_id]

    @functools.cache
    def tumour_free(case_id: str) -> np.ndarray:
        volume = volumes.by_id(case_id)
        zs = brain_slices(volume)
        return zs[labels_of(volume)[zs] == 0]

    return key, LazyMapping(volumes.case_ids, tumour_free)
