"""A sanity floor no paper row reports: FLAIR intensity thresholding (Meissen et al. 2021, "Challenging
current semi-supervised anomaly segmentation methods for brain MRI").

Whole tumour is hyperintense on FLAIR, so the brain voxels above a fixed percentile of the case's own
brain intensities, cleaned by a binary opening and a minimum component size, are a floor that every
label-free method should beat. Meissen et al. pick the threshold on labelled validation data; here
it is a fixed percentile chosen a priori (``baselines.flair_threshold.percentile``), so the row is
label-free. No training, no weights.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from baselines.settings import FlairThresholdSettings
from clisc.data.preprocessing import Volume
from clisc.pipeline.context import RunContext
from clisc.pipeline.steps_seg import per_case_stage
from clisc.stages.slice_input import brain_of


def ball(radius: int) -> np.ndarray:
    """A 3D ball structuring element ``(2r+1)^3`` bool."""
    grid = np.mgrid[tuple(slice(-radius, radius + 1) for _ in range(3))]
    return (grid ** 2).sum(axis=0) <= radius ** 2


def threshold_flair(image: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float],
                    settings: FlairThresholdSettings) -> np.ndarray:
    """Tumour mask ``XxYxZ`` bool of a FLAIR volume ``XxYxZ``: brain voxels at or above the
    ``settings.percentile``-th percentile of the brain's intensities, opened, small components dropped."""
    if not brain.any():
        return np.zeros(image.shape, bool)
    mask = brain & (image >= np.percentile(image[brain], settings.percentile))
    if settings.opening_radius > 0:
        mask = ndimage.binary_opening(mask, structure=ball(settings.opening_radius))
    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(components.ravel())[1:] * voxel_ml
    keep = np.concatenate([[False], sizes >= settings.min_component_ml])
    return keep[components]


def segment(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """The method's output on ``split``: one mask per case (cached per case)."""
    settings = ctx.settings.baselines.flair_threshold

    def run(volume: Volume) -> np.ndarray:
        return threshold_flair(volume.image, brain_of(volume), volume.spacing, settings)

    return per_case_stage(ctx, "flair_threshold", {"split": split, "settings": settings},
                          [ctx.volumes_key], ctx.volumes(split), run)
