"""Stage 3: Layer-CAM against a hand-computed case, hygiene (hooks, grads, mode), post-processing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clisc.stages.cam import (best_threshold, binarise_cams, cam_to_mask, layer_cam, otsu_threshold,
                              postprocess_cam_volume)

FC_WEIGHT = torch.tensor([[-1.0, -0.5, -2.0],  # class 0: all negative -> an all-zero CAM
                          [2.0, -1.0, 0.5]])  # class 1: channel 1 must be ignored (ReLU of gradient)


class GapNet(nn.Module):
    """1x1 conv ``features`` -> in-place ReLU ``act`` -> global average pool -> dropout -> ``fc``.

    For class c the score is ``sum_k w_ck mean(act_k)``, so at ``act`` the gradient is ``w_ck / (h w)``
    and at ``features`` it is ``w_ck / (h w)`` where ``features_k > 0``, else 0.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(FC_WEIGHT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.act(self.features(x)).mean(dim=(2, 3))))


def hand_cam(model: GapNet, images: torch.Tensor, layer: str, class_index: int) -> np.ndarray:
    """Layer-CAM ``BxHxW`` written out from the formulas above, min-max normalised per image."""
    w = model.features.weight.detach()[:, :, 0, 0].numpy()  # KxC
    pre = np.einsum("kc,bchw->bkhw", w, images.numpy())
    h, wd = pre.shape[-2:]
    weights = FC_WEIGHT[class_index].numpy()[None, :, None, None] / (h * wd)
    if layer == "act":
        activation, gradient = np.maximum(pre, 0), np.broadcast_to(weights, pre.shape)
    else:
        activation, gradient = pre, weights * (pre > 0)
    cam = np.maximum((np.maximum(gradient, 0) * activation).sum(axis=1), 0)
    low = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (cam - low) / np.where(span > 0, span, 1), 0)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, 6, 7)).astype(np.float32))


@pytest.mark.parametrize("layer", ["act", "features"])
def test_layer_cam_matches_the_hand_computation(images: torch.Tensor, layer: str) -> None:
    model = GapNet()
    cam = layer_cam(model, images, layers=(layer,))
    assert cam.shape == (3, 6, 7) and cam.dtype == np.float32
    np.testing.assert_allclose(cam, hand_cam(model, images, layer, 1), atol=1e-5)
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)


def test_upsampling_fusion_and_batching(images: torch.Tensor) -> None:
    model = GapNet()
    big = layer_cam(model, images, layers=("act",), out_size=(12, 14))
    expected = F.interpolate(torch.from_numpy(hand_cam(model, images, "act", 1))[:, None].float(),
                             size=(12, 14), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(big, expected, atol=1e-5)
    fused = layer_cam(model, images, layers=("features", "act"))
    np.testing.assert_allclose(fused, np.maximum(layer_cam(model, images, ("features",)),
                                                 layer_cam(model, images, ("act",))), atol=1e-6)
    one_by_one = np.concatenate([layer_cam(model, images[i:i + 1], ("act",)) for i in range(3)])
    np.testing.assert_allclose(layer_cam(model, images, ("act",)), one_by_one, atol=1e-6)


def test_all_negative_class_gives_zero(images: torch.Tensor) -> None:
    assert float(np.abs(layer_cam(GapNet(), images, ("act",), class_index=0)).max()) == 0.0


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_hygiene_grads_hooks_mode(images: torch.Tensor) -> None:
    model = GapNet().train()
    layer_cam(model, images, ("act", "features"))
    assert model.training and no_hooks(model) and not images.requires_grad
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(IndexError):
        layer_cam(model, images, ("act",), class_index=5)
    assert model.training and no_hooks(model)
    with pytest.raises(ValueError, match="layer9"):
        layer_cam(model, images, ("layer9",))


def test_tiny_resnet_layers() -> None:
    from clisc.foundation.resnet import build_resnet50

    model, _ = build_resnet50(weights="random", size="tiny", head="official")
    x = torch.rand(2, 3, 64, 64)
    cam = layer_cam(model, x)  # layer3: 4x4 maps upsampled to 64x64
    assert cam.shape == (2, 64, 64) and cam.min() >= 0 and cam.max() <= 1
    both = layer_cam(model, x, ("layer3", "layer4"), out_size=(32, 32))
    assert both.shape == (2, 32, 32) and no_hooks(model)


@pytest.mark.parametrize("threshold, expected", [(0.5, [False, True, True]), (0.8, [False, False, True])])
def test_cam_to_mask(threshold: float, expected: list[bool]) -> None:
    assert cam_to_mask(np.array([[0.2, 0.5, 0.9]]), threshold)[0].tolist() == expected


def cube(volume: np.ndarray, corner: tuple[int, int, int], side: int) -> None:
    x, y, z = corner
    volume[x:x + side, y:y + side, z:z + side] = True


def test_postprocess_opening_and_component_ratio() -> None:
    volume = np.zeros((30, 30, 30), dtype=bool)
    cube(volume, (1, 1, 1), 5)  # 125 voxels: the largest
    cube(volume, (10, 10, 10), 4)  # 64 >= 125 / 3: kept
    cube(volume, (20, 20, 20), 3)  # 27 < 125 / 3: dropped
    volume[27, 2, 2] = True  # a lone voxel: removed by the opening
    expected = np.zeros_like(volume)
    cube(expected, (1, 1, 1), 5)
    cube(expected, (10, 10, 10), 4)
    out = postprocess_cam_volume(volume)
    assert out.dtype == bool and np.array_equal(out, expected)


def test_postprocess_components_are_26_connected() -> None:
    volume = np.zeros((20, 20, 20), dtype=bool)
    cube(volume, (0, 0, 0), 3)
    cube(volume, (3, 3, 3), 3)  # touches the first cube only at a corner: one 54-voxel component
    volume[12:14, 12:14, 12:17] = True  # 20 voxels >= 54 / 3: kept
    volume[16:18, 16:18, 0:4] = True  # 16 voxels < 18: dropped
    out = postprocess_cam_volume(volume, opening=False)
    assert out.sum() == 54 + 20 and not out[16:18, 16:18, 0:4].any()


def test_otsu_splits_two_modes_between_them() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.8, 0.03, 100)]).clip(0, 1)
    t = otsu_threshold(values)
    assert 0.25 < t < 0.7  # any edge in the gap splits the same classes; the first wins
    assert ((values >= t) == (values > 0.5)).all()
    assert otsu_threshold(np.full(10, 0.4)) is None  # one occupied bin: nothing to split


def test_binarise_fixed_and_otsu_per_slice_and_per_volume() -> None:
    """Slice 0's CAM is bright (0.9 on 0.6), slice 1's faint (0.3 on 0.1): per slice each keeps its
    own peak; over the volume one threshold keeps slice 0 whole and slice 1 empty; zeros (slice 2,
    no CAM) never count."""
    cams = np.zeros((6, 6, 3), np.float32)
    cams[:, :, 0], cams[:2, :2, 0] = 0.6, 0.9
    cams[:, :, 1], cams[:2, :2, 1] = 0.1, 0.3
    peak = np.zeros((6, 6), bool)
    peak[:2, :2] = True
    fixed = binarise_cams(cams, "fixed", 0.5)
    assert fixed[:, :, 0].all() and not fixed[:, :, 1:].any()
    per_slice = binarise_cams(cams, "otsu_slice")
    assert np.array_equal(per_slice[:, :, 0], peak) and np.array_equal(per_slice[:, :, 1], peak)
    per_volume = binarise_cams(cams, "otsu_volume")
    assert per_volume[:, :, 0].all() and not per_volume[:, :, 1:].any()
    assert not per_slice[:, :, 2].any()
    with pytest.raises(ValueError, match="rule"):
        binarise_cams(cams, "otsu")


def test_gt_threshold_search_scores_raw_binarisation_like_the_code() -> None:
    """The code (find_best_binary_threshold) scores ``cam >= t`` without opening or component
    filter, over volumes with a non-empty label. Stray voxels at CAM 0.2 hurt every t <= 0.2 here;
    an opening would remove them and make every t tie (first best: 0.05)."""
    label = np.zeros((12, 12, 12), bool)
    cube(label, (3, 3, 3), 5)
    cam = np.where(label, 0.9, 0.0).astype(np.float32)
    cam[0, 0, 0] = cam[11, 0, 11] = cam[0, 11, 0] = 0.2
    empty_label_volume = (np.full_like(cam, 0.95), np.zeros_like(label))  # skipped, as in the code
    grid = (0.05, 0.1, 0.2, 0.25, 0.5)
    best, scores = best_threshold([cam, empty_label_volume[0]], [label, empty_label_volume[1]], grid)
    assert best == 0.25 and scores[3] == scores[4] == 1.0 and scores[0] < 1.0
