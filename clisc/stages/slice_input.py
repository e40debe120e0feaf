"""What every 2D model sees of an axial slice: intensities in [0, 1] with a black background.

CLIP (slice labels), the ResNet classifier and its CAMs, SAM, and the slice-based baselines all take
their input from :func:`model_input_slices` (or its volume form :func:`model_input_volume`).

Why: ``paper`` preprocessing z-scores the brain and sets the background to 0, the brain's *mean*; a
plain per-slice min-max then paints the background mid-grey (about 0.5 on real FLAIR) with about
half of the brain darker than it, which is not what CLIP and SAM saw in pre-training nor what the
public code feeds them (its whole-box z-score leaves the background below every brain voxel).
Here each slice's background is first set to the slice's minimum, then the slice is min-max scaled:
the background is 0 (black) and the brain spans [0, 1] (its darkest voxel is 0 too when it lies
below the old background). With ``official`` preprocessing the background already is the minimum,
so this is exactly the plain min-max the public code applies.

Which voxels are background is given by a brain mask (``Volume.brain``, the non-zero FLAIR voxels
carried through cropping and resampling); :func:`background_mask` derives one from a preprocessed
image that lacks it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["model_input_slices", "model_input_volume", "axial_slices", "volume_from_slices", "brain_of",
           "background_mask", "SLICE_ORIENTATION"]

#: What a 2D model sees of axial slice z: ``vol[:, :, z].T`` (rows = y, columns = x), as the public
#: code's SimpleITK ``image_3d[z, :, :]`` of a (z, y, x) array; part of every stage cache key.
SLICE_ORIENTATION = "rows=y,cols=x"


def model_input_slices(slices: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """2D model input ``NxHxW`` float32 in [0, 1] from float slices ``NxHxW`` and their brain mask.

    Per slice: voxels outside ``brain`` (``NxHxW`` bool) take the slice's minimum, then the slice is
    min-max scaled (a constant slice gives zeros). ``brain=None`` treats every voxel as brain: the
    plain per-slice min-max. Idempotent: a slice already in [0, 1] with min 0 and max 1 is unchanged.
    """
    x = np.array(slices, dtype=np.float32)  # a copy: the caller's array is never written
    if x.ndim != 3:
        raise ValueError(f"expected slices NxHxW, got shape {x.shape}")
    low = x.min(axis=(1, 2), keepdims=True)
    if brain is not None:
        brain = np.asarray(brain, dtype=bool)
        if brain.shape != x.shape:
            raise ValueError(f"brain mask shape {brain.shape} differs from the slices' {x.shape}")
        x = np.where(brain, x, low)
    span = x.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (x - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def axial_slices(volume: np.ndarray, zs: np.ndarray | slice | None = None) -> np.ndarray:
    """Axial slices ``volume[:, :, z].T`` for ``z`` in ``zs`` (all by default) as ``NxHxW`` with
    H = y (rows; on BraTS, anterior at the top) and W = x (columns): the display layout every 2D
    model sees. :func:`volume_from_slices` is its exact inverse."""
    return np.transpose(volume[:, :, slice(None) if zs is None else zs], (2, 1, 0))


def volume_from_slices(slices: np.ndarray) -> np.ndarray:
    """Slices ``NxHxW`` (H = y, W = x; a 2D model's output) back in volume layout ``XxYxN``: the
    exact inverse of :func:`axial_slices`, so ``out[:, :, i] = slices[i].T``."""
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"expected slices NxHxW, got shape {slices.shape}")
    return np.transpose(slices, (2, 1, 0))


def model_input_volume(image: np.ndarray, brain: np.ndarray | None = None,
                       zs: np.ndarray | slice | None = None) -> np.ndarray:
    """:func:`model_input_slices` of the axial slices ``zs`` (all by default) of ``image`` ``XxYxZ``
    with its brain mask ``XxYxZ``, returned in volume layout ``XxYxN`` float32."""
    slices = axial_slices(image, zs)
    masks = None if brain is None else axial_slices(brain, zs)
    return volume_from_slices(model_input_slices(slices, masks))


def background_mask(image: np.ndarray) -> np.ndarray:
    """Brain mask ``XxYxZ`` bool of a preprocessed image without one: the voxels that differ from
    the background value, the most common of its 8 corner values (preprocessing gives the
    background one constant value in either mode). Prefer ``Volume.brain``: in ``paper`` mode
    that constant is the brain's mean, which resampled brain voxels can hit too."""
    corners = image[np.ix_(*[[0, n - 1] for n in image.shape])].ravel()
    values, counts = np.unique(corners, return_counts=True)
    return image != values[np.argmax(counts)]


def brain_of(volume) -> np.ndarray:
    """The brain mask ``XxYxZ`` bool of a ``clisc.data.preprocessing.Volume``: ``volume.brain``,
    or :func:`background_mask` of its image for a Volume built without one."""
    brain = getattr(volume, "brain", None)
    return background_mask(volume.image) if brain is None else brain
