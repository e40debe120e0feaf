"""Stage 1: prompts, CLIP input, probabilities, labels, the code's z smoothing, whole volumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clisc.stages.slice_labels import (NORMAL_PROMPT, TUMOUR_PROMPT, SliceLabelSettings, label_volume,
                                       labels_from_probs, slices_for_clip, smooth_labels_z,
                                       tumour_probability)


class FakeClip:
    """CLIP stand-in: text features e0 (normal), e1 (tumour); an image's feature is the unit vector
    (1 - m, m) of its mean brightness m, so cos(normal) = (1 - m) / n and cos(tumour) = m / n."""

    logit_scale = 10.0
    image_size = 8

    def __init__(self) -> None:
        self.images_seen = 0
        self.texts: list[str] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.texts = list(texts)
        return torch.eye(2)[: len(texts)]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, self.image_size, self.image_size)
        self.images_seen += len(images)
        m = images.mean(dim=(1, 2, 3))
        return torch.nn.functional.normalize(torch.stack([1 - m, m], dim=1), dim=1)


def test_prompts_are_the_papers() -> None:
    assert NORMAL_PROMPT == ("an image of brain tissue showing typical signal intensity without any "
                             "regions of abnormal intensity or suspicious mass")
    assert TUMOUR_PROMPT == ("an image of brain tissue showing a tumor with uneven hyperintensity and "
                             "irregular borders distinct from surroundings")


def test_slices_for_clip_minmax_per_slice() -> None:
    rng = np.random.default_rng(0)
    slices = np.stack([rng.normal(5, 3, (12, 10)), np.full((12, 10), 7.0)]).astype(np.float32)
    x = slices_for_clip(slices, 8)
    assert x.shape == (2, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 2])
    assert float(x[0].min()) >= 0 and float(x[0].max()) <= 1 and float(x[0].max()) > 0.5
    assert float(x[1].abs().max()) == 0.0  # a constant slice carries nothing


def test_pil_truncation_matches_pil() -> None:
    values = np.array([[-1.5, 0.4, 0.6, 1.5], [2.49, 3.0, -0.2, 300.0]], dtype=np.float32)
    square = np.tile(values, (2, 1))[:, :4]  # 4x4, no resize at image_size 4
    truncated = slices_for_clip(square[None], 4, pil_truncation=True)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(square).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(truncated, pil)


def _open_clip_preprocess(size: int):
    """open_clip's own evaluation transform of the tiny model (as ``create_model_and_transforms``
    gives it), and the suite's ClipModel of the same architecture."""
    import open_clip

    from clisc.foundation.clip import TINY_CONFIG, load_clip

    _, _, preprocess = open_clip.create_model_and_transforms(TINY_CONFIG.stem)
    clip = load_clip("tiny", "random")
    assert clip.image_size == size
    return preprocess, clip


def test_official_geometry_is_open_clips_own_preprocessing_on_a_non_square_slice() -> None:
    """``geometry=resize_crop`` + ``pil_truncation`` is the code's ``preprocess(Image.fromarray(slice))``:
    shorter side to S (bicubic), centre crop, PIL's 8-bit truncation; normalised by ClipModel."""
    preprocess, clip = _open_clip_preprocess(64)
    rng = np.random.default_rng(0)
    z_scored = (rng.normal(size=(40, 90)) * 60).astype(np.float32)  # rows = y (H), columns = x (W)
    ours = clip.normalise_images(slices_for_clip(z_scored[None], 64, pil_truncation=True, geometry="resize_crop"))
    theirs = preprocess(Image.fromarray(z_scored))[None]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    squashed = clip.normalise_images(slices_for_clip(z_scored[None], 64, pil_truncation=True))
    assert (squashed - theirs).abs().max() > 0.1


def test_resize_crop_keeps_the_centre_and_loses_the_ends_of_the_long_side() -> None:
    slices = np.zeros((1, 30, 60), np.float32)
    slices[0, :, :10] = 1.0  # a bright band at one end of the long side (x)
    slices[0, 10:20, 25:35] = 0.5  # and something in the middle
    cropped = slices_for_clip(slices, 16, geometry="resize_crop")
    squashed = slices_for_clip(slices, 16)
    assert cropped.shape == squashed.shape == (1, 3, 16, 16)
    assert float(cropped.max()) < 0.75  # the band is cut away (the 16 central of 32 columns)
    assert float(squashed[0, 0, :, 0].min()) > 0.9  # squashing keeps it
    import open_clip

    reference = open_clip.image_transform(16, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3)(
        torch.from_numpy(slices)[:, None].expand(-1, 3, -1, -1))
    torch.testing.assert_close(cropped, reference.clamp(0, 1))


def test_clip_geometry_by_protocol_and_refused_values() -> None:
    from clisc.pipeline.settings import resolve_settings

    assert resolve_settings("paper").slice_labels.geometry == "squash"
    assert resolve_settings("official").slice_labels.geometry == "resize_crop"
    with pytest.raises(ValueError, match="geometry"):
        SliceLabelSettings(geometry="pad")


def test_tumour_probability_is_softmax_of_scaled_cosines() -> None:
    clip = FakeClip()
    slices = np.zeros((3, 8, 8), dtype=np.float32)
    slices[0, :2] = 1.0  # 16/64 bright -> m = 0.25 after min-max
    slices[1, :6] = 1.0  # m = 0.75
    slices[2, :4] = 1.0  # m = 0.5
    p = tumour_probability(clip, slices, SliceLabelSettings(batch_size=2))
    m = np.array([0.25, 0.75, 0.5])
    cosines = np.stack([1 - m, m], 1) / np.hypot(1 - m, m)[:, None]
    logits = 10.0 * cosines
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert clip.texts == [NORMAL_PROMPT, TUMOUR_PROMPT]
    np.testing.assert_allclose(tumour_probability(clip, slices, SliceLabelSettings(batch_size=32)), p)


@pytest.mark.parametrize("min_confidence, expected", [
    (None, [0, 0, 1, 1, 1, 0]),
    (0.6, [0, -1, -1, 1, 1, 0]),
    (0.9, [0, -1, -1, -1, 1, -1]),
])
def test_labels_from_probs(min_confidence: float | None, expected: list[int]) -> None:
    labels = labels_from_probs(np.array([0.05, 0.5, 0.55, 0.7, 0.95, 0.3]), min_confidence)
    assert labels.dtype == np.int8
    assert labels.tolist() == expected


def code_smoothing(labels: list[int]) -> list[int]:
    """The public code's loop transcribed literally (kept slices as (z, label) pairs)."""
    slice_list = [(z, label) for z, label in enumerate(labels) if label != -1]
    out = list(labels)
    for i, (idx, pred) in enumerate(slice_list):
        around = []
        for j in range(max(0, i - 5), min(len(slice_list), i + 6)):
            if j == i:
                continue
            if abs(idx - slice_list[j][0]) > 6:
                continue
            around.append(slice_list[j][1])
        if len(around) > 8:
            cnt_1 = sum(around)
            pred = 1 if cnt_1 > len(around) - cnt_1 else 0
        out[idx] = pred
    return out


@pytest.mark.parametrize("labels, expected", [
    ([0] * 5 + [1] + [0] * 5, [0] * 11),  # 10 neighbours, majority 0
    ([1] * 4 + [0] + [1] * 4, [1] * 4 + [0] + [1] * 4),  # only 8 neighbours: unchanged
    ([0] * 6 + [1] * 5, [0] * 7 + [1] * 4),  # z5: tie 5/5 -> 0; z6: 5 zeros vs 4 ones -> 0
    ([1] * 5 + [0] + [1] * 5, [1] * 11),
    ([1] * 5 + [-1, -1, 0] + [1] * 5, [1] * 5 + [-1, -1, 1] + [1] * 5),  # dropped slices skipped
    ([1] * 5 + [-1] * 6 + [0] + [1] * 5, [1] * 5 + [-1] * 6 + [0] + [1] * 5),  # z gap > 6: too few
])
def test_smooth_labels_z_hand_cases(labels: list[int], expected: list[int]) -> None:
    assert smooth_labels_z(np.array(labels, dtype=np.int8)).tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_smooth_labels_z_equals_the_code(seed: int) -> None:
    labels = np.random.default_rng(seed).choice([-1, 0, 1], size=60, p=[0.2, 0.4, 0.4]).astype(np.int8)
    assert smooth_labels_z(labels).tolist() == code_smoothing(labels.tolist())


def test_label_volume_background_filter_and_smoothing() -> None:
    clip = FakeClip()
    volume = np.zeros((8, 8, 14), dtype=np.float32)
    volume[:6, :, 1:13] = 1.0  # bright majority -> m = 0.75 -> tumour
    volume[:2, :, 4] = 1.0
    volume[2:, :, 4] = 0.0  # m = 0.25 -> normal, inside a run of tumour slices
    plain = label_volume(clip, volume, SliceLabelSettings())
    assert plain.dtype == np.int8 and plain.shape == (14,)
    assert plain[0] == 0 and plain[13] == 0 and plain[4] == 0 and plain[5] == 1
    assert clip.images_seen == 12  # the two blank slices never reach CLIP
    smoothed = label_volume(clip, volume, SliceLabelSettings(z_smoothing=True))
    assert smoothed.tolist() == code_smoothing(plain.tolist())
    assert smoothed[4] == 1
    strict = label_volume(clip, volume, SliceLabelSettings(min_confidence=0.999))
    assert set(strict[1:13].tolist()) == {-1} and strict[0] == 0


def test_tiny_open_clip_end_to_end() -> None:
    from clisc.foundation.clip import load_clip

    clip = load_clip("tiny", "random")
    volume = np.random.default_rng(1).normal(size=(20, 24, 4)).astype(np.float32)
    p = tumour_probability(clip, np.moveaxis(volume, 2, 0), SliceLabelSettings(batch_size=3))
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))
    labels = label_volume(clip, volume, SliceLabelSettings(pil_truncation=True))
    assert labels.shape == (4,) and set(labels.tolist()) <= {0, 1}


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_is_refused_on_cpu(precision: str) -> None:
    from clisc.errors import CliscError

    with pytest.raises(CliscError, match=f"slice_labels.precision={precision} needs a CUDA device"):
        tumour_probability(FakeClip(), np.zeros((2, 8, 8), np.float32), SliceLabelSettings(precision=precision))


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_half_precision_clip_stays_close_to_fp32(precision: str) -> None:
    from clisc.foundation.clip import load_clip

    clip = load_clip("tiny", "random", device="cuda")
    slices = np.random.default_rng(2).normal(size=(6, 40, 36)).astype(np.float32)
    reference = tumour_probability(clip, slices, SliceLabelSettings())
    half = tumour_probability(clip, slices, SliceLabelSettings(precision=precision))
    assert half.dtype == np.float32 and np.abs(half - reference).max() < 0.02
