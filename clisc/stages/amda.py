"""Stage 4: adaptive masking data augmentation (paper section 2.1.2, METHOD.md sections 2.4 and 3).

Paper: for each tumour-labelled slice, the discriminative region R is the set of its most activated
CAM pixels (the top ``alpha`` percent); random square blocks are drawn and the pixels in R AND the
blocks are set to the slice's background value (its minimum). The masked copies keep the tumour
label and join the original slices for retraining.

Shipped code (``mode="official"``): a path bug disables the CAM branch; every training image has its
pixels above ``min + 0.8 (max - min)`` of its own intensity blanked, no randomness, and the
classifier is retrained WITHOUT the originals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("paper", "official", "none")


@dataclass(frozen=True)
class AmdaSettings:
    """AMDA switches. ``alpha``: percent of the slice's positive CAM pixels forming the
    discriminative region; ``copies`` masked copies per tumour slice; random blocks of side
    ``mask_block`` pixels, each masked with probability ``mask_prob``; ``official_fraction`` is the
    shipped code's intensity fraction."""

    mode: str = "paper"
    alpha: float = 20.0
    copies: int = 1
    mask_block: int = 8
    mask_prob: float = 0.5
    official_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"AMDA mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.alpha <= 100.0 or not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"need 0 <= alpha <= 100 and 0 <= mask_prob <= 1, got {self.alpha}, "
                             f"{self.mask_prob}")
        if self.copies < 0 or self.mask_block < 1:
            raise ValueError(f"need copies >= 0 and mask_block >= 1, got {self.copies}, {self.mask_block}")


def discriminative_region(cam: np.ndarray, alpha: float) -> np.ndarray:
    """Most activated pixels ``HxW`` bool of a CAM ``HxW``.

    The threshold is the ``(100 - alpha)``-th percentile (linear interpolation) of the slice's
    positive CAM values only (background zeros would otherwise swamp the percentile); the region is
    ``cam > 0 and cam >= threshold``. ``alpha = 0`` gives an empty region, ``alpha = 100`` every
    positive pixel; a larger ``alpha`` gives a superset.
    """
    cam = np.asarray(cam, dtype=np.float64)
    positive = cam[cam > 0]
    if alpha <= 0 or positive.size == 0:
        return np.zeros(cam.shape, dtype=bool)
    threshold = np.percentile(positive, 100.0 - alpha)
    return (cam > 0) & (cam >= threshold)


def _float_images(images: np.ndarray) -> np.ndarray:
    """Float images kept in their own float dtype (float16 halves a large training set); others -> float32."""
    images = np.asarray(images)
    return images if np.issubdtype(images.dtype, np.floating) else images.astype(np.float32)


def random_block_mask(shape: tuple[int, int], block: int, prob: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Random mask ``HxW`` bool: the image is tiled by ``block x block`` squares from the top-left
    corner (edge squares cropped) and each square is masked independently with probability ``prob``."""
    height, width = shape
    cells = rng.random((-(-height // block), -(-width // block))) < prob
    return np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:height, :width]


def amda_augment(images: np.ndarray, cams: np.ndarray, labels: np.ndarray, settings: AmdaSettings,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The paper's masked copies of the tumour slices (label 1) among ``images`` ``NxHxW``.

    ``cams`` ``NxHxW`` are the slices' CAMs at the images' resolution. Each tumour slice gets
    ``settings.copies`` copies whose pixels in (discriminative region AND a fresh random block
    mask) are set to the slice's minimum. Returns only the copies, ``NaxHxW`` (float32, or the
    images' own float dtype, e.g. float16 for a large training set), and their
    labels ``Na`` (all 1, the input's dtype); ``settings.mode`` is not consulted here (see
    ``amda_training_set``).
    """
    images = _float_images(images)
    cams = np.asarray(cams)
    labels = np.asarray(labels)
    if images.shape != cams.shape or images.ndim != 3 or len(labels) != len(images):
        raise ValueError(f"need images and cams NxHxW and N labels, got {images.shape}, {cams.shape}, "
                         f"{labels.shape}")
    copies = []
    for index in np.flatnonzero(labels == 1):
        region = discriminative_region(cams[index], settings.alpha)
        for _ in range(settings.copies):
            hidden = region & random_block_mask(images.shape[1:], settings.mask_block,
                                                settings.mask_prob, rng)
            copy = images[index].copy()
            copy[hidden] = images[index].min()
            copies.append(copy)
    stacked = np.stack(copies) if copies else np.zeros((0, *images.shape[1:]), dtype=images.dtype)
    return stacked, np.ones(len(copies), dtype=labels.dtype)


def official_intensity_mask(images: np.ndarray, fraction: float = 0.8,
                            fill: float | None = None) -> np.ndarray:
    """The shipped code's AMDA fallback on images ``NxHxW`` -> ``NxHxW`` (same float dtype), no randomness.

    Every image's pixels strictly above ``min + fraction * (max - min)`` of its own intensity are
    set to ``fill``; ``None`` means the image's own minimum, which is exactly the code's 0 on its
    min-max-scaled 8-bit images and stays background on z-scored ones.
    """
    images = _float_images(images)
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    value = low if fill is None else np.full_like(low, fill)
    return np.where(images > low + fraction * (high - low), value, images).astype(images.dtype)


def amda_training_set(images: np.ndarray, cams: np.ndarray, labels: np.ndarray, settings: AmdaSettings,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The retraining set ``MxHxW`` and labels ``M`` for ``settings.mode``:
    "paper" = originals followed by ``amda_augment``'s copies; "official" =
    ``official_intensity_mask`` of every image, originals left out; "none" = the originals."""
    images = _float_images(images)
    labels = np.asarray(labels)
    if settings.mode == "none":
        return images, labels
    if settings.mode == "official":
        return official_intensity_mask(images, settings.official_fraction), labels
    new_images, new_labels = amda_augment(images, cams, labels, settings, rng)
    return np.concatenate([images, new_images]), np.concatenate([labels, new_labels])
