"""The slice-label stage's CLIP choices (``foundation.clip_arch``): registry, normalisation, a tiny
random-weight forward with the two prompts, and the setting + weights in the stage key."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from clisc.errors import CliscError
from clisc.foundation import catalogue
from clisc.foundation.clip import CLIP_ARCHS
from clisc.pipeline.context import RunContext
from clisc.pipeline.models import load_clip_cached
from clisc.pipeline.settings import resolve_settings
from clisc.stages.slice_labels import SliceLabelSettings, tumour_probability

OPENAI_CHOICES = ("ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu")


def test_clip_choices_are_the_catalogue_and_the_registry():
    assert catalogue.choices("foundation.clip_arch") == (*OPENAI_CHOICES, "biomedclip")
    assert set(catalogue.choices("foundation.clip_arch")) <= set(CLIP_ARCHS)
    assert resolve_settings("paper").foundation.clip_arch == "ViT-B-32-quickgelu"  # the default


@pytest.mark.parametrize("arch", OPENAI_CHOICES)
def test_openai_choices_build_quickgelu_with_openai_statistics(arch):
    """OpenAI weights need QuickGELU (plain ViT-B-16 + openai only warns) and OpenAI's mean/std."""
    config = open_clip.get_model_config(arch)
    assert config["quick_gelu"] is True
    pretrained = open_clip.get_pretrained_cfg(arch, "openai")
    assert tuple(pretrained["mean"]) == open_clip.OPENAI_DATASET_MEAN
    assert tuple(pretrained["std"]) == open_clip.OPENAI_DATASET_STD
    repo = catalogue.entry("foundation.clip_arch", arch).hub_repo
    assert pretrained["hf_hub"].rstrip("/") == repo


def test_tiny_clip_normalises_with_openai_statistics_and_scores_both_prompts():
    clip = load_clip_cached("tiny", "random", "cpu")
    assert clip.mean == open_clip.OPENAI_DATASET_MEAN and clip.std == open_clip.OPENAI_DATASET_STD
    images = torch.full((2, 1, 30, 40), 0.5)
    normalised = clip.normalise_images(images)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    assert normalised.shape == (2, 3, clip.image_size, clip.image_size)
    assert torch.allclose(normalised, (0.5 - mean) / std, atol=1e-5)
    slices = np.random.default_rng(0).random((3, 30, 40)).astype(np.float32)
    probability = tumour_probability(clip, slices, SliceLabelSettings())  # softmax over the two prompts
    assert probability.shape == (3,) and ((probability > 0) & (probability < 1)).all()


def test_unknown_clip_arch_is_a_one_line_setting_error():
    with pytest.raises(CliscError, match="setting foundation.clip_arch='ViT-Z': clip_arch must be one of"):
        resolve_settings("paper", "tiny", {"foundation.clip_arch": "ViT-Z"})


@pytest.mark.parametrize("arch", [*OPENAI_CHOICES, "biomedclip"])
def test_clip_arch_and_weights_reach_the_slice_label_key(arch, synthetic_dataset, tmp_path, monkeypatch):
    """At the model's own size the key names the CLIP built and its weights' name + sha256 (a stub
    stands in for the model: no weights here); at ``tiny`` every choice runs the one tiny stand-in,
    so they share its cache entry."""
    from types import SimpleNamespace

    from clisc.foundation.weights import WeightsRecord
    from clisc.pipeline import steps_cam

    seen = {}

    def fake_stage(self, name, settings, inputs, compute, load):
        seen[name] = settings
        return self.key(name, settings, inputs), None

    def fake_clip(name, weights, device):
        return SimpleNamespace(record=WeightsRecord(f"clip:{name}", f"sha-of-{name}"))

    monkeypatch.setattr(RunContext, "stage", fake_stage)
    monkeypatch.setattr(steps_cam, "load_clip_cached", fake_clip)
    keys = {}
    for choice in (arch, "ViT-B-32-quickgelu" if arch != "ViT-B-32-quickgelu" else "biomedclip"):
        settings = resolve_settings("paper", "tiny", {"foundation.clip_arch": choice, "foundation.size": "base"})
        ctx = RunContext(synthetic_dataset, settings, 0, tmp_path, progress=False, echo=lambda _: None)
        keys[choice], _ = steps_cam.clip_labels(ctx)
        assert seen["slice_labels"]["clip"] == choice
        assert seen["slice_labels"]["clip_weights"] == f"clip:{choice}=sha-of-{choice}"
    assert len(set(keys.values())) == 2
    monkeypatch.undo()
    monkeypatch.setattr(RunContext, "stage", fake_stage)
    tiny = {steps_cam.clip_labels(RunContext(synthetic_dataset, resolve_settings(
        "paper", "tiny", {"foundation.clip_arch": c}), 0, tmp_path, progress=False, echo=lambda _: None))[0]
        for c in (arch, "ViT-B-32-quickgelu")}
    assert len(tiny) == 1 and seen["slice_labels"]["clip_weights"] == "clip:tiny=random"
