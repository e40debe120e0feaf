"""The paper-size smoke run's switches: schedule-length caps (SAM slices, classifier and VAE
iterations), hub-free random BiomedCLIP, the random-weights tag, the smoke overlay itself."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.settings import ConstrainedVaeSettings
from clisc.errors import CliscError
from clisc.foundation.sam import load_sam
from clisc.pipeline.settings import resolve_settings
from clisc.stages.classifier import ClassifierSettings, train_classifier
from clisc.stages.prompts import PromptSettings, prompts_from_mask
from clisc.stages.pseudo_labels import SamSegmenter, capped

ROOT = Path(__file__).resolve().parents[2]


def test_capped_keeps_evenly_spaced_slices_the_middle_one_alone() -> None:
    assert capped([3, 4, 5, 6, 7, 8, 9], 3) == [4, 6, 8]
    assert capped([3, 4, 5, 6, 7, 8, 9], 1) == [6]
    assert capped(list(range(10)), 10) == list(range(10)) and len(capped(list(range(11)), 10)) == 10
    assert capped([1, 2], 5) == [1, 2] and capped([1, 2, 3], None) == [1, 2, 3]


def test_sam_max_slices_encodes_only_the_capped_slices() -> None:
    torch.manual_seed(0)
    sam, _ = load_sam("tiny", "random")
    seen: list[int] = []
    handle = sam.image_encoder.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[0]))
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 40), bool)
    mask[10:20, 12:24] = True
    slices = [rng.normal(size=(40, 40)).astype(np.float32) + 3 * mask for _ in range(6)]
    prompts = [prompts_from_mask(mask, PromptSettings("box")) for _ in range(6)]
    prompts[0] = None  # unprompted slices never count against the cap
    try:
        logits = SamSegmenter(sam, batch_size=8, max_slices=2, model_tag="t").segment_logits(slices, prompts)
    finally:
        handle.remove()
    assert sum(seen) == 2
    assert [bool(np.isfinite(l).all()) for l in logits] == [False, False, True, False, True, False]
    assert SamSegmenter(sam, max_slices=2, model_tag="t").key_tag == "t-max2slices"
    assert SamSegmenter(sam, model_tag="t").key_tag == "t"  # uncapped stage keys are unchanged


def test_sam_max_slices_setting_is_checked() -> None:
    assert resolve_settings(overrides={"sam.max_slices": 2}).sam.max_slices == 2
    with pytest.raises(CliscError, match="max_slices must be a positive integer"):
        resolve_settings(overrides={"sam.max_slices": 0})


class _Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("cap, steps", [(None, 5), (2, 2)])
def test_classifier_iterations_per_epoch_caps_the_batches(cap, steps) -> None:
    model = _Counting()
    images, labels = torch.rand(40, 3, 8, 8), np.arange(40) % 2
    train_classifier(model, images, labels, ClassifierSettings(epochs=1, iterations_per_epoch=cap), seed=0,
                     progress=False)
    assert model.calls == steps


@pytest.mark.parametrize("cap, steps", [(None, 3), (1, 1)])
def test_vae_iterations_per_epoch_caps_the_batches(monkeypatch, cap, steps) -> None:
    from baselines import constrained_vae

    calls = []
    original = constrained_vae.vae_loss
    monkeypatch.setattr(constrained_vae, "vae_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    settings = ConstrainedVaeSettings(input_size=16, epochs=1, batch_size=2, iterations_per_epoch=cap)
    images = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    constrained_vae.train_vae(images, np.ones_like(images, bool), "amcons", settings, seed=0, progress=False)
    assert len(calls) == steps


def test_offline_biomedclip_has_the_hub_configs_shapes_and_gscorecam_layer() -> None:
    """Paper-size BiomedCLIP with random weights and no hub request: timm ViT-B/16 at 224, 768 channels."""
    from baselines.gscorecam import saliency_layer
    from clisc.foundation.clip import load_clip

    clip = load_clip("biomedclip-offline", "random")
    assert clip.image_size == 224 and clip.record.sha256 == "random"
    assert saliency_layer(clip.model.visual) is clip.model.visual.trunk.blocks[-1].norm2
    with torch.no_grad():
        image = clip.encode_images(torch.rand(1, 1, 240, 240))
        text = clip.encode_text(["a brain tumour"])
    assert image.shape == (1, 512) and text.shape == (1, 512)
    assert clip.model.visual.trunk.blocks[-1].norm2.normalized_shape == (768,)


def test_offline_swaps_only_hub_architectures_and_only_random_weights() -> None:
    from types import SimpleNamespace

    from baselines.slice_gate import clip_arch_of

    def ctx(**foundation):
        return SimpleNamespace(settings=resolve_settings(overrides={f"foundation.{k}": v for k, v in foundation.items()}))

    assert clip_arch_of(ctx(weights="random", offline=True), "biomedclip") == "biomedclip-offline"
    assert clip_arch_of(ctx(weights="random", offline=True), "ViT-B-32-quickgelu") == "ViT-B-32-quickgelu"
    assert clip_arch_of(ctx(weights="random"), "biomedclip") == "biomedclip"
    with pytest.raises(CliscError, match="foundation.offline=true builds random weights only"):
        clip_arch_of(ctx(offline=True), "biomedclip")


def test_smoke_overlay_is_schedule_length_only_and_resolves() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from paper_smoke import SCHEDULE_KEYS, schedule_overrides

    overrides = schedule_overrides()
    assert overrides and all(k.rsplit(".", 1)[-1] in SCHEDULE_KEYS for k in overrides)
    settings = resolve_settings("paper", "paper", {**overrides, "foundation.weights": "random"})
    assert settings.unet.patch_size == (128, 128, 128) and settings.unet.channels == (16, 32, 64, 128, 256)
    assert settings.classifier.input_size == 224 and settings.foundation.size == "base"


def test_official_unet_at_paper_size_resizes_to_128_cubed_and_back() -> None:
    """The official protocol's path only: its U-Net (16..256) on the whole volume resized to 128^3."""
    from clisc.stages.unet3d import UNetSettings, build_unet, predict_volume

    settings = resolve_settings("official", "paper").unet
    assert (settings.network, settings.inference, settings.patch_size) == ("official", "resize", (128, 128, 128))
    torch.manual_seed(0)
    model = build_unet(settings)
    seen = []
    model.register_forward_hook(lambda _m, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    image = np.random.default_rng(0).normal(size=(70, 90, 60)).astype(np.float32)
    labels = predict_volume(model, image, settings)
    assert seen == [((1, 1, 128, 128, 128), (1, 2, 128, 128, 128))]
    assert labels.shape == image.shape and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("tags,ok", [
    ({"weights": "clip=random;sam=random", "random_weights": "true", "synthetic_data": "true"}, True),
    ({"weights": "clip=pretrained", "random_weights": "false", "synthetic_data": "true"}, False),
    ({"weights": "none", "random_weights": "false", "synthetic_data": "true"}, True),  # FLAIR floor, U-Net
    ({"weights": "none", "random_weights": "false", "synthetic_data": "false"}, False),
])
def test_every_smoke_row_is_tagged_as_plumbing(tags, ok) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from paper_smoke import plumbing_problem

    assert (plumbing_problem(tags) == "") is ok
