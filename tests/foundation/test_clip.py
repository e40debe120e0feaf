"""CLIP loading: tiny random model, offline pretrained errors, local checkpoint round trip."""
from __future__ import annotations

import open_clip
import pytest
import torch

from clisc.errors import WeightsError
from clisc.foundation import clip
from clisc.foundation.clip import CLIP_ARCHS, load_clip
from clisc.foundation.weights import sha256_file

PROMPTS = ["an image of normal brain tissue", "an image of a brain tumour", "a third prompt"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("tiny", "random")


def _embed(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return model.encode_images(images), model.encode_text(PROMPTS)


@pytest.mark.parametrize("shape", [(16, 3, 64, 64), (4, 3, 96, 80), (2, 1, 50, 50)])
def test_tiny_encodings_have_unit_norm(tiny, shape):
    images, texts = _embed(tiny, torch.rand(*shape, generator=torch.Generator().manual_seed(1)))
    assert images.shape == (shape[0], 64) and texts.shape == (len(PROMPTS), 64)
    torch.testing.assert_close(images.norm(dim=1), torch.ones(shape[0]))
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(len(PROMPTS)))


def test_tiny_random_is_deterministic_and_recorded(tiny):
    torch.manual_seed(0)
    again = load_clip("tiny", "random")
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for a, b in zip(_embed(tiny, images), _embed(again, images)):
        torch.testing.assert_close(a, b)
    assert tiny.record.tag == "clip:tiny=random" and tiny.image_size == 64
    assert tiny.logit_scale == pytest.approx(1 / 0.07)
    assert tiny.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert isinstance(tiny.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    with pytest.raises(ValueError, match="Bx1xHxW or Bx3xHxW"):
        tiny.encode_images(torch.rand(2, 2, 64, 64))


def test_local_checkpoint_round_trips(tiny, tmp_path):
    path = tmp_path / "tiny_clip.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_clip("tiny", str(path))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for a, b in zip(_embed(tiny, images), _embed(loaded, images)):
        torch.testing.assert_close(a, b)
    assert loaded.record.sha256 == sha256_file(path)
    openai_stats = (tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD))
    assert (loaded.mean, loaded.std) == openai_stats


def test_local_checkpoint_must_match_the_architecture(tiny, tmp_path):
    state = tiny.model.state_dict()
    state.pop("text_projection")
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=f"{path}: not a loadable open_clip checkpoint for CLIP tiny"):
        load_clip("tiny", str(path))
    with pytest.raises(WeightsError, match="no such CLIP checkpoint file"):
        load_clip("tiny", str(tmp_path / "absent.pt"))


HUB_CASES = [
    ("ViT-B-32-quickgelu", "pretrained", "timm/vit_base_patch32_clip_224.openai"),
    ("ViT-B-16-quickgelu", "pretrained", "timm/vit_base_patch16_clip_224.openai"),
    ("biomedclip", "pretrained", "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
    ("biomedclip", "random", "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
]


@pytest.fixture
def no_hub(monkeypatch):
    """Any hub request fails; biomedclip's extra package counts as installed."""
    def refuse(*args, **kwargs):
        raise OSError("We have no connection to the Hugging Face hub")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", refuse)
    monkeypatch.setattr(clip.importlib.util, "find_spec", lambda name: object())


@pytest.mark.parametrize("arch, weights, repo", HUB_CASES)
def test_hub_failure_gives_one_line_error(no_hub, monkeypatch, arch, weights, repo):
    monkeypatch.setattr(clip, "_hub_online", lambda: True)
    with pytest.raises(WeightsError) as err:
        load_clip(arch, weights)
    message = str(err.value)
    assert "\n" not in message and f"hub repo {repo} (" in message and "weights=<path>" in message
    assert "no connection to the Hugging Face hub" in message


@pytest.mark.parametrize("arch, weights, repo", HUB_CASES)
def test_offline_without_cache_fails_fast(no_hub, monkeypatch, arch, weights, repo):
    monkeypatch.setattr(clip, "_hub_online", lambda: False)
    monkeypatch.setattr(clip.huggingface_hub, "try_to_load_from_cache", lambda repo, filename: None)
    with pytest.raises(WeightsError, match=f"hub repo {repo} \\(hub unreachable or offline mode, .*"
                                           "not in the local cache\\); pass weights=<path>"):
        load_clip(arch, weights)


def test_hub_probe_respects_offline_mode(monkeypatch):
    monkeypatch.setattr(clip.huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert clip._hub_online() is False


def test_missing_extra_package_is_named(monkeypatch):
    monkeypatch.setattr(clip.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="CLIP biomedclip needs transformers; pip install transformers"):
        load_clip("biomedclip", "random")


def test_bad_arch_and_tiny_pretrained():
    with pytest.raises(WeightsError, match="unknown CLIP architecture 'ViT-Z'; known: ViT-B-32-quickgelu"):
        load_clip("ViT-Z")
    with pytest.raises(WeightsError, match="CLIP tiny has no pretrained weights"):
        load_clip("tiny", "pretrained")
    assert set(CLIP_ARCHS) == {"ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu", "biomedclip", "tiny",
                               "biomedclip-offline"}
