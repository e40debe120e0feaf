"""Stage 4: adaptive masking data augmentation (paper section 2.1.2, METHOD.md sections 2.4 and 3).

Paper: for each tumour-labelled slice, the discriminative region R is the set of its most activated
CAM pixels (the top ``alpha`` percent) and a copy of the slice is made with the pixels in R set to
the slice's background value (its minimum). The masked copies keep the tumour label and join the
original slices for retraining. ``alpha = 0`` masks nothing: there is no AMDA (no copies, no
retraining; the pipeline then reuses the raw classifier). The paper also says "random masks are
generated" without their form; ``masking="random_blocks"`` masks R AND random 8-px squares (each
with probability 0.5), a choice of this project, not of the paper or the code.

Shipped code (``mode="official"``): a path bug disables the CAM branch; every training image has its
pixels above ``min + 0.8 (max - min)`` of its own intensity blanked, no randomness, and the
classifier is retrained WITHOUT the originals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("paper", "official", "none")
MASKINGS = ("region", "random_blocks")


@dataclass(frozen=True)
class AmdaSettings:
    """AMDA switches. ``alpha``: percent of the slice's positive CAM pixels forming the
    discriminative region; ``copies`` masked copies per tumour slice; ``masking``: "region" masks
    the whole region (paper), "random_blocks" only its pixels inside random squares of side
    ``mask_block`` pixels, each masked with probability ``mask_prob``; ``official_fraction`` is the
    shipped code's intensity fraction."""

    mode: str = "paper"
    alpha: float = 20.0
    copies: int = 1
    masking: str = "region"
    mask_block: int = 8
    mask_prob: float = 0.5
    official_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"AMDA mode must be one of {MODES}, got {self.mode!r}")
        if self.masking not in MASKINGS:
            raise ValueError(f"AMDA masking must be one of {MASKINGS}, got {self.masking!r}")
        if not 0.0 <= self.alpha <= 100.0 or not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"need 0 <= alpha <= 100 and 0 <= mask_prob <= 1, got {self.alpha}, "
                             f"{self.mask_prob}")
        if self.copies < 0 or self.mask_block < 1:
            raise ValueError(f"need copies >= 0 and mask_block >= 1, got {self.copies}, {self.mask_block}")

    @property
    def active(self) -> bool:
        """Whether AMDA changes the training set: not with ``mode="none"``, nor in the paper's mode
        when nothing can be masked (``alpha = 0``) or no copy is made (``copies = 0``)."""
        return self.mode == "official" or (self.mode == "paper" and self.alpha > 0 and self.copies > 0)

    def read(self) -> dict[str, Any]:
        """The fields the active mode reads (what a cache key must hold, and only that)."""
        if not self.active:
            return {"mode": "none"}
        if self.mode == "official":
            return {"mode": "official", "official_fraction": self.official_fraction}
        fields = {"mode": "paper", "alpha": self.alpha, "copies": self.copies, "masking": self.masking}
        if self.masking == "random_blocks":
            fields.update(mask_block=self.mask_block, mask_prob=self.mask_prob)
        return fields


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
    ``settings.copies`` copies whose pixels in the discriminative region (AND a fresh random block
    mask with ``masking="random_blocks"``) are set to the slice's minimum. Returns only the copies,
    ``NaxHxW`` (float32, or the images' own float dtype, e.g. float16 for a large training set),
    and their labels ``Na`` (all 1, the input's dtype): none when ``alpha = 0`` (nothing to mask).
    ``settings.mode`` is not consulted here (see ``amda_training_set``).
    """
    images = _float_images(images)
    cams = np.asarray(cams)
    labels = np.asarray(labels)
    if images.shape != cams.shape or images.ndim != 3 or len(labels) != len(images):
        raise ValueError(f"need images and cams NxHxW and N labels, got {images.shape}, {cams.shape}, "
                         f"{labels.shape}")
    copies = []
    sources = np.flatnonzero(labels == 1) if settings.alpha > 0 else []
    for index in sources:
        region = discriminative_region(cams[index], settings.alpha)
        for _ in range(settings.copies):
            hidden = region
            if settings.masking == "random_blocks":
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
    ``official_intensity_mask`` of every image, originals left out; "none" (or an inactive paper
    mode, ``alpha = 0``) = the originals."""
    images = _float_images(images)
    labels = np.asarray(labels)
    if not settings.active:
        return images, labels
    if settings.mode == "official":
        return official_intensity_mask(images, settings.official_fraction), labels
    new_images, new_labels = amda_augment(images, cams, labels, settings, rng)
    return np.concatenate([images, new_images]), np.concatenate([labels, new_labels])
