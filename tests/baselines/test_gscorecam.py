"""gScoreCAM on tiny random ViTs (open_clip's own and a timm trunk laid out like BiomedCLIP's): shape,
range, channels kept by gradient, weights = softmax of the channel-masked images' logits."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from baselines.gscorecam import gscorecam, prefix_tokens, saliency_layer, tokens_to_maps, top_channels
from clisc.foundation.clip import ClipModel
from clisc.foundation.weights import WeightsRecord
from clisc.pipeline.models import load_clip_cached


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    return load_clip_cached("tiny", "random", "cpu")


@pytest.fixture(scope="module")
def timm_clip() -> ClipModel:
    """A CLIP whose image tower is a timm ViT (``visual.trunk``), as BiomedCLIP's, cut to 2 blocks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg={"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                        "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
        ).eval()
    model.visual.trunk.blocks = model.visual.trunk.blocks[:2]
    return ClipModel(model, open_clip.get_tokenizer("clisc-tiny-clip"), open_clip.OPENAI_DATASET_MEAN,
                     open_clip.OPENAI_DATASET_STD, 224, WeightsRecord("clip:timm-test", "random"))


def _text(clip: ClipModel) -> torch.Tensor:
    with torch.no_grad():
        return clip.encode_text(["a brain tumor"])[0]


def test_top_channels_rank_by_mean_gradient() -> None:
    grads = torch.zeros(5, 2, 2)
    grads[3] = 2.0  # mean 2.0
    grads[1] = 1.0  # mean 1.0
    grads[4] = torch.tensor([[8.0, -2.0], [0.0, 0.0]])  # mean 1.5
    grads[0] = torch.tensor([[9.0, -3.0], [-3.0, -3.0]])  # the largest pixel, but mean 0.0
    assert top_channels(grads, 3).tolist() == [3, 4, 1]
    assert len(top_channels(grads, 50)) == 5


def test_tokens_to_maps_drops_prefix_tokens_and_lays_patches_row_major() -> None:
    tokens = torch.arange(1 + 4).float()[None, :, None].repeat(1, 1, 3)  # 1 x (cls + 2x2) x 3
    maps = tokens_to_maps(tokens, prefix=1)
    assert maps.shape == (1, 3, 2, 2)
    assert maps[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    torch.testing.assert_close(tokens_to_maps(tokens.permute(1, 0, 2), 1, batch_first=False), maps)


def test_layers_of_both_vit_layouts(clip: ClipModel, timm_clip: ClipModel) -> None:
    assert saliency_layer(clip.model.visual) is clip.model.visual.transformer.resblocks[-1].ln_2
    assert saliency_layer(timm_clip.model.visual) is timm_clip.model.visual.trunk.blocks[-1].norm2
    assert prefix_tokens(clip.model.visual) == 1 and prefix_tokens(timm_clip.model.visual) == 1


def test_saliency_shape_range_and_channels_selected_by_gradient(clip: ClipModel) -> None:
    image = torch.rand(1, 3, 40, 30, generator=torch.Generator().manual_seed(0))
    text = _text(clip)
    saliency = gscorecam(clip, image, text, channels=10, batch_size=4, out_size=(50, 36))
    assert saliency.cam.shape == (50, 36) and saliency.cam.dtype == np.float32
    assert saliency.cam.min() >= 0.0 and saliency.cam.max() <= 1.0 and saliency.cam.max() > 0.5
    # channels: the 10 largest mean gradients of the logit at the last block's ln_2 patch tokens
    layer = clip.model.visual.transformer.resblocks[-1].ln_2
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = clip.normalise_images(image)
    logit = clip.logit_scale * clip.model.encode_image(x, normalize=True)[0] @ text
    (grad,) = torch.autograd.grad(logit, seen[0])
    handle.remove()
    expected = grad[0, 1:].mean(dim=0).topk(10).indices
    assert saliency.channels.tolist() == expected.tolist()
    # weights: softmax of the logits of the image masked by each kept (upsampled, min-max) map
    acts = seen[0][0, 1:].detach().T.reshape(-1, 4, 4)[torch.as_tensor(saliency.channels)]
    maps = torch.nn.functional.interpolate(acts[None], size=(64, 64), mode="bilinear", align_corners=True)[0]
    low, high = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
    with torch.no_grad():
        masked = x * ((maps - low) / (high - low + 1e-6))[:, None]
        scores = clip.logit_scale * clip.model.encode_image(masked, normalize=True) @ text
    np.testing.assert_allclose(saliency.weights, scores.softmax(0).numpy(), rtol=1e-4, atol=1e-6)
    assert saliency.weights.sum() == pytest.approx(1.0)


def test_more_channels_than_the_model_has_keeps_them_all(clip: ClipModel) -> None:
    saliency = gscorecam(clip, torch.rand(1, 1, 32, 32), _text(clip), channels=300)
    assert sorted(saliency.channels.tolist()) == list(range(64)) and saliency.cam.shape == (32, 32)


def test_timm_trunk_saliency(timm_clip: ClipModel) -> None:
    saliency = gscorecam(timm_clip, torch.rand(1, 3, 48, 40), _text(timm_clip), channels=8, batch_size=8)
    assert saliency.cam.shape == (48, 40) and len(saliency.channels) == 8
    assert 0.0 <= saliency.cam.min() and saliency.cam.max() <= 1.0
