"""Training augmentation of the 3D U-Net (``unet.augmentation``): pad, random crop, rot90, flips.

Arrays are ``CxXxYxZ`` (channel first, the suite's layout: x = patient right to left, y = posterior
to anterior, z = inferior to superior). Two recipes, each a MONAI ``Compose`` seeded with
``set_random_state``:

* ``axial`` (the ``paper`` protocol; the paper is silent): pad to the patch, random crop at native
  resolution, then k x 90 degrees in the axial (X, Y) plane (k uniform in 0..3) and independent flips
  of X and Y (probability 1/2 each).
* ``official`` (the public code, ``dataloaders/brats2020.py``: ``RandomRotFlip`` then ``RandomCrop``
  on SimpleITK ``ZxYxX`` arrays): first the *whole volume* is turned by ``np.rot90(a, k)`` (k uniform
  in 0..3) in the plane of the code's array axes 0, 1, i.e. the (Z, Y) plane (our axes 2 and 1, in
  that order), then flipped along exactly one of Z or Y (``np.random.randint(0, 2)``: never none,
  never both); then the code's crop: when any side is <= the patch, every side is zero-padded by
  ``max((patch - side) // 2 + 3, 0)`` on both ends, and the corner is drawn with
  ``randint(0, side - patch)`` (the last position is never drawn).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from monai.transforms import Compose, MapTransform, Randomizable

from clisc.stages.unet_recipe import RECIPES, resolve
from clisc.stages.unet_recipe import training_transform as recipe_transform

if TYPE_CHECKING:
    from clisc.stages.unet3d import UNetSettings

AUGMENTATIONS = ("axial", "official")
KEYS = ("image", "label")

# the code's array axes (z, y) as spatial axes of our XxYxZ volumes
CODE_AXIS = {0: 2, 1: 1}


def official_rot_flip(array: np.ndarray, k: int, code_flip_axis: int) -> np.ndarray:
    """The code's ``np.flip(np.rot90(a, k), axis)`` on its ``ZxYxX`` array, applied to our
    ``CxXxYxZ`` array ``array``: rot90 from spatial axis Z towards Y, then a flip of Z
    (``code_flip_axis`` 0) or Y (1). Returns a contiguous copy."""
    z, y = 1 + CODE_AXIS[0], 1 + CODE_AXIS[1]  # +1: the channel axis
    turned = np.rot90(array, k, axes=(z, y))
    return np.ascontiguousarray(np.flip(turned, axis=1 + CODE_AXIS[int(code_flip_axis)]))


class OfficialRotFlipd(Randomizable, MapTransform):
    """The code's ``RandomRotFlip`` on ``{"image", "label"}`` ``CxXxYxZ`` arrays (see module doc)."""

    def __init__(self, keys: Sequence[Hashable] = KEYS):
        MapTransform.__init__(self, keys)
        self.k, self.axis = 0, 0

    def randomize(self, data: object = None) -> None:
        self.k = int(self.R.randint(0, 4))
        self.axis = int(self.R.randint(0, 2))

    def __call__(self, data: Mapping) -> dict:
        self.randomize()
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = official_rot_flip(np.asarray(out[key]), self.k, self.axis)
        return out


def official_pad(array: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """The code's padding of a ``CxXxYxZ`` array before its random crop: when any side is <= the
    patch's, each side gets ``max((patch - side) // 2 + 3, 0)`` zeros on both ends."""
    sides = array.shape[1:]
    if not any(side <= patch for side, patch in zip(sides, patch_size)):
        return array
    widths = [max((patch - side) // 2 + 3, 0) for side, patch in zip(sides, patch_size)]
    return np.pad(array, [(0, 0)] + [(w, w) for w in widths], mode="constant", constant_values=0)


class OfficialRandomCropd(Randomizable, MapTransform):
    """The code's ``RandomCrop``: :func:`official_pad`, then a ``patch_size`` box whose corner on
    each axis is uniform in ``0 .. side - patch - 1``."""

    def __init__(self, patch_size: Sequence[int], keys: Sequence[Hashable] = KEYS):
        MapTransform.__init__(self, keys)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.corner: tuple[int, ...] = (0, 0, 0)

    def randomize(self, sides: Sequence[int]) -> None:
        self.corner = tuple(int(self.R.randint(0, side - patch)) for side, patch in zip(sides, self.patch_size))

    def __call__(self, data: Mapping) -> dict:
        out = dict(data)
        keys = list(self.key_iterator(out))
        padded = {key: official_pad(np.asarray(out[key]), self.patch_size) for key in keys}
        self.randomize(padded[keys[0]].shape[1:])
        box = tuple(slice(c, c + p) for c, p in zip(self.corner, self.patch_size))
        for key in keys:
            out[key] = np.ascontiguousarray(padded[key][(slice(None),) + box])
        return out


def training_transform(patch_size: tuple[int, int, int], augmentation: str = "axial") -> Compose:
    """The ``augmentation`` recipe (see module doc) on ``{"image": 1xXxYxZ, "label": 1xXxYxZ}``,
    giving ``1 x patch_size`` arrays; seed it with ``set_random_state``."""
    if augmentation == "axial":
        return recipe_transform(patch_size, RECIPES["paper"])  # pad, crop, axial rot90, X/Y flips
    if augmentation == "official":
        return Compose([OfficialRotFlipd(KEYS), OfficialRandomCropd(patch_size, KEYS)])
    raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}")


def patch_transform(settings: UNetSettings) -> Compose:
    """The MONAI ``Compose`` that makes one training patch of a ``{"image", "label"}`` volume.

    ``augmentation="axial"``: the recipe's crop and augmentation (:mod:`clisc.stages.unet_recipe`; the
    ``paper`` recipe is the axial recipe above). ``"official"``: the code's whole-volume rot/flip then its
    crop, which fixes the crop and the geometric augmentation, so it refuses recipe ingredients that would
    change them."""
    recipe = resolve(settings)
    if settings.augmentation == "axial":
        return recipe_transform(settings.patch_size, recipe)
    if recipe.foreground_fraction or recipe.augment != "flips":
        raise ValueError("unet.augmentation=official is the code's crop and rot/flip: it does not combine with "
                         "unet.foreground_fraction > 0 or unet.augment=nnunet (set unet.augmentation=axial)")
    return training_transform(settings.patch_size, settings.augmentation)
