"""U-Net training recipes (issue 16): foreground-aware sampling, nnU-Net-like augmentation, Dice + CE,
deep supervision and post-processing; each a named setting reaching the stage keys."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clisc.errors import CliscError
from clisc.pipeline import steps_seg
from clisc.pipeline.settings import resolve_settings
from clisc.stages.unet3d import UNetSettings, build_unet, predict_volume, result_settings, train_unet
from clisc.stages.unet_recipe import (RECIPES, Recipe, SegmentationLoss, first_sample, postprocess, resolve,
                                      training_transform)

PATCH = (16, 16, 16)
LIKE = RECIPES["nnunet_like"]


def volume_with_blob(shape=(30, 28, 26), centre=(6, 6, 6), radius=3):
    """Image = label (float) of one small ball near a corner: a uniform crop rarely holds it."""
    grid = np.indices(shape)
    label = (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2).astype(np.uint8)
    return label.astype(np.float32), label


def patches(recipe: Recipe, n: int, seed: int, image=None, label=None):
    if image is None:
        image, label = volume_with_blob()
    transform = training_transform(PATCH, recipe)
    transform.set_random_state(seed=seed)
    return [first_sample(transform({"image": image[None], "label": label[None]})) for _ in range(n)]


def test_paper_recipe_is_the_default_and_each_ingredient_overrides_it():
    assert resolve(UNetSettings()) == RECIPES["paper"]
    assert RECIPES["paper"] == Recipe(0.0, "flips", "ce", 0, "none")
    mixed = resolve(UNetSettings(recipe="nnunet_like", loss="ce", postprocess="none"))
    assert mixed == dataclasses.replace(LIKE, loss="ce", postprocess="none")


@pytest.mark.parametrize("bad", [{"recipe": "nnunet"}, {"foreground_fraction": 1.5}, {"augment": "elastic"},
                                 {"loss": "focal"}, {"postprocess": "open"}, {"deep_supervision": -1},
                                 {"test_time": "rot90"}])
def test_bad_recipe_values_are_refused(bad):
    with pytest.raises(ValueError):
        UNetSettings(**bad)
    with pytest.raises(CliscError, match=f"unet.{next(iter(bad))}"):
        resolve_settings(overrides={f"unet.{k}": v for k, v in bad.items()})


INTENSITY = dataclasses.replace(RECIPES["paper"], augment="intensity")


@pytest.mark.parametrize("recipe", [RECIPES["paper"], LIKE, INTENSITY])
def test_patches_have_the_patch_shape_even_from_a_smaller_volume(recipe):
    image, label = volume_with_blob((10, 20, 12), centre=(5, 10, 6))
    for out in patches(recipe, 5, 0, image, label):
        assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, *PATCH)


def test_foreground_sampling_centres_patches_on_the_label():
    uniform = [float(np.asarray(p["label"]).sum() > 0) for p in patches(RECIPES["paper"], 40, 0)]
    always = dataclasses.replace(RECIPES["paper"], foreground_fraction=1.0)
    forced = [p for p in patches(always, 40, 0)]
    assert all(np.asarray(p["label"]).sum() > 0 for p in forced)
    third = [float(np.asarray(p["label"]).sum() > 0)
             for p in patches(dataclasses.replace(always, foreground_fraction=1 / 3), 60, 0)]
    assert np.mean(uniform) < np.mean(third) < 1.0


def test_spatial_augmentation_keeps_the_label_on_the_image():
    """Image = label before: after the recipe's affine/rot90/flips (bilinear image, nearest label) and
    intensity transforms the label is still binary and sits on the bright voxels (Dice of the image
    above its midrange with the label > 0.8)."""
    spatial = dataclasses.replace(LIKE, foreground_fraction=1.0)
    image, label = volume_with_blob((30, 28, 26), centre=(15, 14, 13), radius=5)
    for out in patches(spatial, 30, 1, image, label):
        lab = np.asarray(out["label"])[0]
        assert set(np.unique(lab)) <= {0.0, 1.0}
        img = np.asarray(out["image"])[0]
        bright = img > (img.min() + img.max()) / 2
        assert 2 * (bright & (lab > 0)).sum() / (bright.sum() + (lab > 0).sum()) > 0.8


def test_label_follows_the_image_under_the_affine_exactly_when_both_are_nearest():
    from monai.transforms import RandAffined

    image, label = volume_with_blob((24, 24, 24), centre=(12, 12, 12), radius=6)
    affine = RandAffined(("image", "label"), prob=1.0, rotate_range=(0.5,) * 3, scale_range=(0.3,) * 3,
                         mode=("nearest", "nearest"), padding_mode="zeros")
    affine.set_random_state(seed=0)
    out = affine({"image": image[None], "label": label[None]})
    np.testing.assert_array_equal(np.asarray(out["image"]) > 0.5, np.asarray(out["label"]) > 0)
    assert not np.array_equal(np.asarray(out["label"]), label[None])


def test_intensity_augmentation_changes_values_never_geometry():
    """``augment=intensity``: the patch's voxels are where the flips-only recipe puts them (same seed,
    same crop and rot90/flips: the label identical), while the image values differ on some patches."""
    image, label = volume_with_blob((30, 28, 26), centre=(15, 14, 13), radius=5)
    flips = patches(RECIPES["paper"], 30, 3, image, label)
    intensity = patches(INTENSITY, 30, 3, image, label)
    for a, b in zip(flips, intensity):
        np.testing.assert_array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
    changed = [not np.allclose(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(flips, intensity)]
    assert 0 < sum(changed) < len(changed)  # each transform has p < 1


@pytest.mark.parametrize("recipe", [RECIPES["paper"], LIKE, INTENSITY])
def test_patches_are_seeded(recipe):
    first, again, other = patches(recipe, 4, 7), patches(recipe, 4, 7), patches(recipe, 4, 8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        np.testing.assert_array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
    assert any(not np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(first, other))


def test_dice_ce_loss_and_deep_supervision():
    labels = torch.zeros(2, 8, 8, 8, dtype=torch.int64)
    labels[:, 2:5, 2:5, 2:5] = 1
    perfect = torch.stack([1 - labels, labels], dim=1).float() * 20 - 10
    ce, dice_ce = SegmentationLoss(RECIPES["paper"]), SegmentationLoss(dataclasses.replace(LIKE, loss="dice_ce"))
    assert float(ce(perfect, labels)) < 1e-3 and float(dice_ce(perfect, labels)) < 1e-3
    wrong = -perfect
    assert float(dice_ce(wrong, labels)) > float(ce(wrong, labels))  # the Dice term adds about 1
    stack = torch.stack([perfect, wrong], dim=1)  # B x 2 outputs x C x ...
    assert float(dice_ce(stack, labels)) == pytest.approx(float(dice_ce(wrong, labels)) / 3, rel=1e-4)


def test_deep_supervision_trains_and_predicts_at_full_resolution():
    settings = UNetSettings(channels=(4, 8, 16, 32), patch_size=PATCH, epochs=1, iterations_per_epoch=2,
                            recipe="nnunet_like", deep_supervision=1)
    model = build_unet(settings)
    assert model.train()(torch.zeros(2, 1, *PATCH)).shape == (2, 2, 2, *PATCH)
    image, label = volume_with_blob((20, 20, 20), centre=(10, 10, 10))
    model = train_unet([image] * 2, [label] * 2, settings, seed=0, progress=False)
    assert predict_volume(model, image, settings).shape == image.shape
    with pytest.raises(ValueError, match="deep_supervision"):
        build_unet(dataclasses.replace(settings, deep_supervision=3))


def test_recipe_training_is_seeded_and_deterministic():
    image, label = volume_with_blob((20, 20, 20), centre=(10, 10, 10))
    settings = UNetSettings(channels=(4, 8, 16), patch_size=PATCH, epochs=2, iterations_per_epoch=2,
                            recipe="nnunet_like")
    first, second = (train_unet([image] * 2, [label] * 2, settings, seed=3, progress=False) for _ in range(2))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("mode,expected", [("none", 3), ("largest_component", 1), ("drop_small", 2)])
def test_postprocess_removes_distant_blobs(mode, expected):
    from scipy import ndimage as ndi

    mask = np.zeros((20, 20, 20), np.uint8)
    mask[2:8, 2:8, 2:8] = 1  # 216 voxels
    mask[12:15, 12:15, 12:15] = 1  # 27 voxels: >= 10 % of the largest
    mask[18, 18, 18] = 1  # 1 voxel
    out = postprocess(mask, dataclasses.replace(LIKE, postprocess=mode))
    assert out.dtype == mask.dtype and ndi.label(out)[1] == expected
    assert out[2:8, 2:8, 2:8].all()
    assert not postprocess(np.zeros_like(mask), LIKE).any()


def test_recipe_settings_reach_the_training_key_and_postprocess_the_prediction_key(monkeypatch):
    def key_settings(**overrides):
        ctx = type("Ctx", (), {"settings": resolve_settings(overrides={f"unet.{k}": v for k, v in overrides.items()})})
        return steps_seg._unet_key_settings(ctx)

    base = key_settings()
    for change in ({"recipe": "nnunet_like"}, {"foreground_fraction": 0.5}, {"augment": "nnunet"},
                   {"loss": "dice_ce"}, {"deep_supervision": 1}):
        assert key_settings(**change) != base, change
    assert key_settings(postprocess="largest_component") == base  # the trained network is shared
    assert key_settings(test_time="flips") == base
    assert result_settings(UNetSettings(postprocess="drop_small")) == result_settings(UNetSettings())

    seen = {}
    monkeypatch.setattr(steps_seg, "per_case_stage", lambda ctx, name, settings, *a: seen.update(settings))
    for mode in ("none", "largest_component"):
        ctx = type("Ctx", (), {"settings": resolve_settings(overrides={"unet.postprocess": mode}), "device": "cpu", "volumes_key": "v",
                               "volumes": lambda self, split: []})()
        steps_seg.predictions(ctx, ("model-key", None), "test")
        assert seen["postprocess"] == mode
    keys = []
    for mode in ("none", "flips"):
        ctx = type("Ctx", (), {"settings": resolve_settings(overrides={"unet.test_time": mode}), "device": "cpu",
                               "volumes_key": "v", "volumes": lambda self, split: []})()
        steps_seg.predictions(ctx, ("model-key", None), "test")
        keys.append(dict(seen))
    assert "test_time" not in keys[0] and keys[1]["test_time"] == "flips"  # "none": the keys from before it


def _untrained(seed=0):
    settings = UNetSettings(channels=(4, 8, 16), patch_size=PATCH, activation="leakyrelu")
    torch.manual_seed(seed)
    return build_unet(settings).eval(), settings


@pytest.mark.parametrize("inference", ["sliding", "resize"])
def test_test_time_flips_average_the_mirrored_softmax(inference):
    model, settings = _untrained()
    image = np.random.default_rng(0).normal(size=PATCH).astype(np.float32)
    flips = dataclasses.replace(settings, test_time="flips", inference=inference)
    with torch.no_grad():
        x = torch.from_numpy(image)[None, None]
        mean = sum(model(x.flip(d) if d else x).softmax(1).flip(d) if d else model(x).softmax(1)
                   for d in ((), (2,), (3,), (2, 3))) / 4
    expected = mean.argmax(1)[0].numpy().astype(np.uint8)
    np.testing.assert_array_equal(predict_volume(model, image, flips), expected)
    plain = predict_volume(model, image, dataclasses.replace(settings, inference=inference))
    assert (plain != expected).any()  # an untrained network is not flip-equivariant: the averaging shows


def test_test_time_flips_make_the_prediction_mirror_equivariant():
    model, settings = _untrained(1)
    settings = dataclasses.replace(settings, test_time="flips")
    image = np.random.default_rng(1).normal(size=(20, 18, 16)).astype(np.float32)  # several windows
    for axis in (0, 1):
        mirrored = predict_volume(model, np.ascontiguousarray(np.flip(image, axis)), settings)
        np.testing.assert_array_equal(np.flip(mirrored, axis), predict_volume(model, image, settings))


def test_the_cpu_profile_post_processes_and_the_protocols_keep_the_paper_recipe():
    cpu = resolve(resolve_settings(profile="cpu").unet)
    # each measured on fold 1 (docs/REAL_DATA.md)
    assert cpu == dataclasses.replace(RECIPES["paper"], augment="intensity", postprocess="largest_component")
    assert tuple(resolve_settings(profile="cpu").unet.patch_size) == (64, 64, 64)  # the context large tumours need
    for protocol in ("paper", "official"):
        assert resolve(resolve_settings(protocol, "paper").unet) == RECIPES["paper"]
    assert resolve(resolve_settings(overrides={"unet.recipe": "nnunet_like"}).unet) == LIKE  # the opt-in
