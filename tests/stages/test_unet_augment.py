"""The U-Net's training augmentation recipes (``unet.augmentation``), against the public code's ops."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.stages.unet_augment import official_pad, official_rot_flip, training_transform

PATCH = (16, 16, 16)


def volume(shape=(20, 18, 30), seed=0):
    """A random ``1xXxYxZ`` image (no symmetry) and its label ``image > 0.3``."""
    image = np.random.default_rng(seed).random((1, *shape)).astype(np.float32)
    return image, (image > 0.3).astype(np.uint8)


def code_rot_flip(ours: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The code's ``RandomRotFlip`` ops literally, on its SimpleITK ``ZxYxX`` layout of our ``1xXxYxZ``."""
    code = ours[0].transpose(2, 1, 0)  # ZxYxX
    out = np.flip(np.rot90(code, k), axis=axis)
    return out.transpose(2, 1, 0)[None]


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("axis", [0, 1])
def test_official_rot_flip_is_the_codes_op_in_our_layout(k, axis):
    image, _ = volume()
    np.testing.assert_array_equal(official_rot_flip(image, k, axis), code_rot_flip(image, k, axis))


def rotations_zy(a: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(a, k, axes=(3, 2)) for k in range(4)]


def test_official_flips_exactly_one_of_z_or_y():
    image, label = volume((12, 14, 10))
    transform = training_transform(PATCH, "official")
    # rot90 k then one flip: the 4 reflections of the (z, y) plane (each reachable by two (k, axis))
    reflections = [code_rot_flip(image, k, 0) for k in range(4)]
    flips_y = [code_rot_flip(image, k, 1) for k in range(4)]
    assert all(any(r.shape == f.shape and np.array_equal(r, f) for r in reflections) for f in flips_y)
    seen = set()
    for seed in range(40):
        transform.set_random_state(seed=seed)
        rot_flip = transform.transforms[0]  # the turn and flip of the whole volume, before the crop
        out = rot_flip({"image": image, "label": label})["image"]
        matches = [i for i, r in enumerate(reflections) if r.shape == out.shape and np.array_equal(r, out)]
        assert len(matches) == 1
        seen.add(matches[0])
        # never a plain rotation (no flip, or both z and y flipped = a 180-degree turn)
        assert not any(r.shape == out.shape and np.array_equal(r, out) for r in rotations_zy(image))
    assert seen == set(range(4))


def test_paper_recipe_sometimes_does_not_flip():
    """The axial recipe flips X and Y independently: some draws are plain axial turns (or none)."""
    image, label = volume((16, 16, 16))
    transform = training_transform(PATCH, "axial")
    plain = 0
    for seed in range(20):
        transform.set_random_state(seed=seed)
        out = np.asarray(transform({"image": image, "label": label})["image"])
        plain += any(np.array_equal(np.rot90(image, k, axes=(1, 2)), out) for k in range(4))
    assert plain > 0


@pytest.mark.parametrize("augmentation", ["axial", "official"])
@pytest.mark.parametrize("shape", [(10, 12, 9), (20, 18, 30), (16, 16, 16)])
def test_recipes_give_patches_with_aligned_labels_and_are_seeded(augmentation, shape):
    image, label = volume(shape)
    transform = training_transform(PATCH, augmentation)
    outputs = []
    for seed in range(6):
        transform.set_random_state(seed=seed)
        out = transform({"image": image, "label": label})
        img, lab = np.asarray(out["image"]), np.asarray(out["label"])
        assert img.shape == lab.shape == (1, *PATCH)
        np.testing.assert_array_equal(lab, (img > 0.3).astype(lab.dtype))  # padding: 0 in both
        outputs.append(img)
    transform.set_random_state(seed=0)
    np.testing.assert_array_equal(np.asarray(transform({"image": image, "label": label})["image"]), outputs[0])
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])


def test_official_rotates_before_the_crop():
    """A turn of the whole volume swaps its Y and Z sides before the crop: a patch tall in Z that
    only fits after the turn is cut from a volume short in Z."""
    image, label = volume((20, 40, 18))  # Z = 18 < patch Z 32 <= Y = 40
    transform = training_transform((16, 16, 32), "official")
    unpadded = 0
    for seed in range(16):
        transform.set_random_state(seed=seed)
        out = transform({"image": image, "label": label})
        k = transform.transforms[0].k
        img = np.asarray(out["image"])
        assert img.shape == (1, 16, 16, 32)
        if k % 2:  # turned: Z now 40 long, no padding, every voxel of the patch from the image
            unpadded += 1
            assert (img > 0).all()
    assert unpadded > 0


def test_official_pad_is_the_codes():
    a = np.ones((1, 10, 20, 16), np.float32)
    padded = official_pad(a, (16, 16, 16))
    # (16 - 10) // 2 + 3 = 6; (16 - 20) // 2 + 3 = 1; (16 - 16) // 2 + 3 = 3 (16 <= 16 pads too)
    assert padded.shape == (1, 10 + 12, 20 + 2, 16 + 6)
    assert official_pad(np.ones((1, 17, 17, 17)), (16, 16, 16)).shape == (1, 17, 17, 17)


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="augmentation"):
        training_transform(PATCH, "elastic")
