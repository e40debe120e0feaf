"""gScoreCAM (Chen et al., ACCV 2022) for open_clip ViTs, as MedCLIP-SAM runs it (HealthX-Lab/MedCLIP-SAM
@ 61af7dc, ``saliency_maps/pytorch_grad_cam/gscore_cam.py`` and ``base_cam.py``; read, not copied).

For one image and one text embedding: the tokens at the output of the last block's second LayerNorm
(BiomedCLIP: ``visual.trunk.blocks[-1].norm2``; open_clip's own ViT: ``transformer.resblocks[-1].ln_2``)
form ``C`` activation maps over the patch grid (prefix tokens dropped). The ``k`` channels with the
largest mean gradient of the image-text logit are kept; each map is upsampled to the input,
min-max normalised and multiplies the (normalised) input image; the logit of each such masked image
is its score; the weights are the softmax of the scores, and the saliency is ReLU of the weighted sum
of the kept maps, min-max normalised and resized to the output size.

Departure: the public code softmaxes over all ``C`` channels with score 0 for the unselected ones (a
weight ``exp(0) / Z``, negligible against logits of tens); here unselected channels weigh exactly 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clisc.errors import CliscError
from clisc.foundation.clip import ClipModel


@dataclass
class Saliency:
    """``cam``: ``HxW`` float32 in [0, 1]; ``channels``: the ``k`` channel indices kept (by
    decreasing mean gradient); ``weights``: their ``k`` softmax weights (summing to 1)."""

    cam: np.ndarray
    channels: np.ndarray
    weights: np.ndarray


def saliency_layer(visual: nn.Module) -> nn.Module:
    """The module whose output tokens gScoreCAM reads: the last block's second LayerNorm."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks"):  # timm ViT (BiomedCLIP)
        return trunk.blocks[-1].norm2
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):  # open_clip VisionTransformer
        return transformer.resblocks[-1].ln_2
    raise CliscError(f"gScoreCAM needs a ViT image tower; {type(visual).__name__} has none")


def prefix_tokens(visual: nn.Module) -> int:
    """How many tokens precede the patch tokens (class and register tokens)."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        return int(getattr(trunk, "num_prefix_tokens", 1))
    return 1 if getattr(visual, "class_embedding", None) is not None else 0


def tokens_to_maps(tokens: torch.Tensor, prefix: int, batch_first: bool = True) -> torch.Tensor:
    """``BxNxC`` (or ``NxBxC``) tokens -> ``BxCxhxw`` maps of the ``h*w = N - prefix`` patch tokens."""
    if not batch_first:
        tokens = tokens.permute(1, 0, 2)
    patches = tokens[:, prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise CliscError(f"gScoreCAM: {patches.shape[1]} patch tokens do not form a square grid")
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], side, side)


def top_channels(grads: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` channels of ``Cxhxw`` gradients with the largest mean (signed, as the
    original's "average gradient" importance), largest first."""
    return grads.float().mean(dim=(1, 2)).topk(min(k, grads.shape[0])).indices


def _minmax(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """Each ``...xhxw`` map scaled to [0, 1] by its own min and max."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low + eps)


def _logits(clip: ClipModel, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``B`` image-text logits ``logit_scale x cosine`` of normalised ``Bx3xSxS`` images."""
    features = clip.model.encode_image(images, normalize=True)
    return clip.logit_scale * features.float() @ text.float()


def gscorecam(clip: ClipModel, image: torch.Tensor, text: torch.Tensor, channels: int = 300,
              batch_size: int = 128, out_size: tuple[int, int] | None = None) -> Saliency:
    """gScoreCAM saliency of one image ``1x{1,3}xHxW`` in [0, 1] for a ``D`` L2-normalised text
    embedding; the map is returned at ``out_size`` (default ``HxW``)."""
    visual = clip.model.visual
    layer = saliency_layer(visual)
    batch_first = getattr(getattr(visual, "transformer", None), "batch_first", True)
    x = clip.normalise_images(image)
    text = text.to(x.device)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            logit = _logits(clip, x, text).sum()
            (grads,) = torch.autograd.grad(logit, captured[0])
    finally:
        handle.remove()
    prefix = prefix_tokens(visual)
    acts = tokens_to_maps(captured[0].detach(), prefix, batch_first)[0].float()  # Cxhxw
    grads = tokens_to_maps(grads, prefix, batch_first)[0]
    kept = top_channels(grads, channels)
    with torch.no_grad():
        maps = F.interpolate(acts[kept][None], size=x.shape[-2:], mode="bilinear", align_corners=True)[0]
        maps = _minmax(maps, 1e-6)  # kxSxS
        scores = torch.cat([
            _logits(clip, x * maps[start:start + batch_size, None].to(x.dtype), text)
            for start in range(0, len(kept), batch_size)
        ])
        weights = torch.nan_to_num(scores, nan=0.0).softmax(dim=0)
        cam = torch.relu((weights[:, None, None] * acts[kept]).sum(dim=0))
        cam = _minmax(cam, 1e-8)
        size = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
        cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
    return Saliency(cam.cpu().numpy().astype(np.float32), kept.cpu().numpy(), weights.cpu().numpy())
