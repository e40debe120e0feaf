"""Training recipes of the 3D U-Net: patch sampling, augmentation, loss and post-processing.

``unet.recipe`` names a bundle of ingredients; each ingredient is also its own setting (``None``: the
recipe's value), so one can be switched off for an ablation (``--set unet.loss=ce``):

- ``paper`` (default): what the paper / public code does: uniformly random patches, axial rot90 and
  flips, cross-entropy, no post-processing, no deep supervision.
- ``nnunet_like`` (a departure, opt-in; no profile uses it): nnU-Net's ingredients (Isensee et al. 2021)
  at CPU scale: a third of the patches centred on a tumour voxel (the others on a non-tumour voxel),
  random rotation/scaling and intensity augmentation (gamma, contrast, brightness, noise, blur) on top
  of rot90/flips (``augment=intensity``: the intensity part alone), soft Dice + cross-entropy, and at
  inference nnU-Net's mirroring (the softmax averaged over the X/Y flips the training also draws) and
  the largest connected component.
  Elastic deformation is left out: ``Rand3DElasticd`` on every patch costs more than a training step.

Volumes are ``{"image": 1xXxYxZ float32, "label": 1xXxYxZ uint8}`` dictionaries (MONAI's channel-first
layout); the transforms are seeded with ``set_random_state`` so a patch depends on its seed only.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage as ndi
import torch
from monai.losses import DiceCELoss
from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandCropByPosNegLabeld, RandFlipd,
                              RandGaussianNoised, RandGaussianSmoothd, RandRotate90d, RandScaleIntensityd,
                              RandScaleIntensityFixedMeand, RandSpatialCropd, SpatialPadd)
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from clisc.stages.unet3d import UNetSettings

KEYS = ("image", "label")
AUGMENTATIONS = ("flips", "intensity", "nnunet")
LOSSES = ("ce", "dice_ce")
POSTPROCESSING = ("none", "largest_component", "drop_small")
TEST_TIME = ("none", "flips")
# "flips": the spatial dims of a BxCxXxYxZ batch mirrored at inference (no flip, X, Y, X and Y: the flips
# every recipe trains with; Z is never flipped in training)
TEST_TIME_FLIPS = ((), (2,), (3,), (2, 3))
SMALL_SHARE = 0.1  # "drop_small": components below this share of the largest are removed


@dataclass(frozen=True)
class Recipe:
    """The resolved ingredients of a training recipe (see the module docstring)."""

    foreground_fraction: float  # share of training patches centred on a label voxel (0: random crops)
    # "flips" (rot90 + flips) | "intensity" (+ noise/blur/brightness/contrast/gamma) | "nnunet" (+ rotation/scaling)
    augment: str
    loss: str  # "ce" | "dice_ce"
    deep_supervision: int  # extra lower-resolution outputs in the loss (0: none)
    postprocess: str  # "none" | "largest_component" | "drop_small"
    test_time: str = "none"  # "none" | "flips" (softmax averaged over TEST_TIME_FLIPS)

    def __post_init__(self) -> None:
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        for name, value, choices in (("augment", self.augment, AUGMENTATIONS), ("loss", self.loss, LOSSES),
                                     ("postprocess", self.postprocess, POSTPROCESSING),
                                     ("test_time", self.test_time, TEST_TIME)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.deep_supervision < 0:
            raise ValueError(f"deep_supervision must be >= 0, got {self.deep_supervision}")


RECIPES = {
    "paper": Recipe(foreground_fraction=0.0, augment="flips", loss="ce", deep_supervision=0, postprocess="none"),
    "nnunet_like": Recipe(foreground_fraction=1 / 3, augment="nnunet", loss="dice_ce", deep_supervision=0,
                          postprocess="largest_component", test_time="flips"),
}


def resolve(settings: UNetSettings) -> Recipe:
    """The recipe ``settings.recipe`` names, with each ingredient the settings set (not None) replaced."""
    if settings.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {settings.recipe!r}; expected one of {', '.join(RECIPES)}")
    base = RECIPES[settings.recipe]
    values = {f.name: getattr(settings, f.name) for f in fields(Recipe)}
    return Recipe(**{k: getattr(base, k) if v is None else v for k, v in values.items()})


def training_transform(patch_size: tuple[int, int, int], recipe: Recipe = RECIPES["paper"]) -> Compose:
    """Pad to ``patch_size`` (zeros), crop one patch, then augment.

    Crop: ``RandSpatialCropd`` (uniform) when ``foreground_fraction`` is 0, else ``RandCropByPosNegLabeld``
    centred on a label voxel with probability ``foreground_fraction`` and on a background voxel otherwise
    (a volume without label voxels gets a background centre). Augmentation "flips": k x 90 degrees in the
    axial plane (k uniform 0..3) and X, Y flips with probability 1/2 (the public code's). "nnunet" adds,
    in nnU-Net's order and probabilities: one affine resampling (p 0.35, about nnU-Net's p 0.2 for each of rotation and
    scaling) with rotation up to 30 degrees about each axis and scaling 0.7-1.3 per axis (bilinear image,
    nearest label, zeros outside), Gaussian noise (std up to 0.1, p 0.1),
    Gaussian blur (sigma 0.5-1, p 0.2), brightness x 0.75-1.25 (p 0.15), contrast about the mean x 0.75-1.25
    (p 0.15) and gamma 0.7-1.5 on the patch rescaled to [0, 1] (p 0.3). "intensity" is "nnunet" without
    the affine: the same intensity transforms after rot90/flips, every patch on the voxel grid.
    """
    steps: list = [SpatialPadd(KEYS, spatial_size=patch_size, mode="constant")]
    if recipe.foreground_fraction > 0:
        steps.append(RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch_size,
                                            pos=recipe.foreground_fraction, neg=1.0 - recipe.foreground_fraction,
                                            num_samples=1, allow_smaller=False))
    else:
        steps.append(RandSpatialCropd(KEYS, roi_size=patch_size, random_size=False))
    if recipe.augment == "nnunet":
        steps.append(RandAffined(KEYS, prob=0.35, rotate_range=(math.pi / 6,) * 3, scale_range=(0.3,) * 3,
                                 mode=("bilinear", "nearest"), padding_mode="zeros"))
    steps += [RandRotate90d(KEYS, prob=0.75, max_k=3, spatial_axes=(0, 1)),
              RandFlipd(KEYS, prob=0.5, spatial_axis=0),
              RandFlipd(KEYS, prob=0.5, spatial_axis=1)]
    if recipe.augment in ("intensity", "nnunet"):
        steps += intensity_transforms()
    return Compose(steps)


def intensity_transforms() -> list:
    """nnU-Net's intensity augmentation of the ``"image"`` key, in its order and probabilities (see
    :func:`training_transform`): noise, blur, brightness, contrast, gamma."""
    return [RandGaussianNoised("image", prob=0.1, std=0.1),
            RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandScaleIntensityd("image", prob=0.15, factors=0.25),
            RandScaleIntensityFixedMeand("image", prob=0.15, factors=0.25, preserve_range=True),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5))]


def augment_intensity(image: np.ndarray, seed: int) -> np.ndarray:
    """``1xPxPxP`` float32 patch after :func:`intensity_transforms`, drawn from ``seed`` only."""
    transform = Compose(intensity_transforms())
    transform.set_random_state(seed=seed)
    return np.asarray(torch.as_tensor(transform({"image": torch.from_numpy(image)})["image"]), np.float32)


def first_sample(sample: dict | list) -> dict:
    """The one patch of a transform's output (``RandCropByPosNegLabeld`` returns a list of samples)."""
    return sample[0] if isinstance(sample, list) else sample


class SegmentationLoss(nn.Module):
    """Loss of logits ``BxCxXxYxZ`` (or, with deep supervision, ``Bx(1+n)xCxXxYxZ``: MONAI DynUNet's stack
    of outputs upsampled to the input) against labels ``BxXxYxZ`` int64.

    "ce": cross-entropy. "dice_ce": MONAI ``DiceCELoss`` (soft Dice over the batch, background
    excluded, + cross-entropy, equal weights), nnU-Net's. Deep-supervision outputs weigh 1/2^i,
    normalised to sum 1 (nnU-Net).
    """

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.recipe = recipe
        self.dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def single(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.recipe.loss == "ce":
            return F.cross_entropy(logits, labels)
        return self.dice_ce(logits, labels[:, None])

    def forward(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if output.dim() == labels.dim() + 1:
            return self.single(output, labels)
        weights = torch.tensor([0.5 ** i for i in range(output.shape[1])])
        weights = weights / weights.sum()
        return sum(float(w) * self.single(output[:, i], labels) for i, w in enumerate(weights))


def test_time_predictor(forward: Callable[[torch.Tensor], torch.Tensor], recipe: Recipe
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` (``BxCxXxYxZ`` -> class scores ``BxKxXxYxZ``) as the recipe's inference uses it: itself for
    "none" (logits), or for "flips" the softmax averaged over the mirrored inputs of ``TEST_TIME_FLIPS``,
    each output flipped back (nnU-Net's mirroring). Either way the argmax over K is the prediction."""
    if recipe.test_time == "none":
        return forward

    def mirrored(batch: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in TEST_TIME_FLIPS:
            scores = forward(batch.flip(dims) if dims else batch).softmax(dim=1)
            scores = scores.flip(dims) if dims else scores
            total = scores if total is None else total + scores
        return total / len(TEST_TIME_FLIPS)

    return mirrored


def class_labels(scores: torch.Tensor, recipe: Recipe, threshold: float = 0.5) -> torch.Tensor:
    """``BxXxYxZ`` int64 labels of two-class scores ``Bx2xXxYxZ`` (logits, or softmax with the recipe's
    ``test_time`` "flips"): the argmax at ``threshold`` 0.5, else the voxels whose tumour probability
    exceeds ``threshold``."""
    if threshold == 0.5:
        return scores.argmax(dim=1)
    probability = scores.softmax(dim=1) if recipe.test_time == "none" else scores
    return (probability[:, 1] > threshold).long()


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component of an ``XxYxZ`` mask, same dtype; empty stays empty.

    Of several equally large components the one met first in C order is kept.
    """
    foreground = np.asarray(mask) > 0
    components, count = ndi.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return foreground.astype(mask.dtype)
    sizes = np.bincount(components.ravel())[1:]
    return (components == int(np.argmax(sizes)) + 1).astype(mask.dtype)


def postprocess(mask: np.ndarray, recipe: Recipe) -> np.ndarray:
    """``XxYxZ`` mask after the recipe's post-processing, same dtype: "none", "largest_component" (the
    largest 26-connected component) or "drop_small" (components below ``SMALL_SHARE`` of the largest
    removed). An empty mask stays empty."""
    if recipe.postprocess == "none":
        return mask
    if recipe.postprocess == "largest_component":
        return keep_largest_component(mask)
    foreground = np.asarray(mask) > 0
    components, count = ndi.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return foreground.astype(mask.dtype)
    sizes = np.bincount(components.ravel())[1:]
    keep = np.concatenate([[False], sizes >= SMALL_SHARE * sizes.max()])
    return keep[components].astype(mask.dtype)
