"""ResNet50 slice classifier (torchvision) with the paper's or the public code's head.

``RESNET_SIZES`` and ``RESNET_HEADS`` are data. "base" is torchvision's resnet50; "tiny" is the same
``ResNet(Bottleneck, ...)`` class with one block per stage and a quarter of the bottleneck width, so
module names (``layer1``..``layer4``, ``fc``) and the 2048-channel output are unchanged and Layer-CAM
target layers work on both. Feature maps for a BxCxHxW input: layer3 ``Bx1024x(H/16)x(W/16)``,
layer4 ``Bx2048x(H/32)x(W/32)``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from clisc.errors import WeightsError
from clisc.foundation.weights import WeightsRecord, cached_sha256, resolve_weights

IMAGENET_WEIGHTS = "resnet50_imagenet1k_v1"

RESNET_SIZES: dict[str, dict] = {
    "base": {"layers": [3, 4, 6, 3], "width_per_group": 64},  # torchvision resnet50
    "tiny": {"layers": [1, 1, 1, 1], "width_per_group": 16},  # tests / benchmarks
}

RESNET_HEADS: dict[str, dict] = {
    "paper": {"hidden": None, "dropout": 0.0},  # Linear(2048, num_classes)
    "official": {"hidden": 256, "dropout": 0.5},  # public code: Linear-ReLU-Dropout-Linear
}


def _choice(kind: str, value: str, registry: dict) -> dict:
    if value not in registry:
        raise WeightsError(f"unknown ResNet {kind} {value!r}; known: {', '.join(registry)}")
    return registry[value]


def build_head(in_features: int, num_classes: int, head: str = "paper") -> nn.Module:
    """Classification head ``BxF -> BxK`` after ``RESNET_HEADS[head]``."""
    cfg = _choice("head", head, RESNET_HEADS)
    if cfg["hidden"] is None:
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Linear(in_features, cfg["hidden"]), nn.ReLU(inplace=True),
                         nn.Dropout(cfg["dropout"]), nn.Linear(cfg["hidden"], num_classes))


def _load_imagenet(model: ResNet, path: str | Path | None) -> WeightsRecord:
    """Load the ImageNet backbone (fc excluded) into ``model``; the record names the verified file."""
    file = resolve_weights(IMAGENET_WEIGHTS, path=path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{file}: cannot read as a torch state dict ({type(e).__name__})") from None
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(backbone, strict=False)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:200]
        raise WeightsError(f"{file}: not a torchvision resnet50 state dict ({reason})") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(f"{file}: not a torchvision resnet50 state dict "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return WeightsRecord(IMAGENET_WEIGHTS, cached_sha256(file))


def build_resnet50(weights: str = "imagenet", size: str = "base", head: str = "paper",
                   num_classes: int = 2, path: str | Path | None = None) -> tuple[nn.Module, WeightsRecord]:
    """ResNet50 ``Bx3xHxW -> BxK`` logits and the record of its backbone weights.

    ``weights``: "imagenet" (torchvision IMAGENET1K_V1 via ``resolve_weights``; ``path`` = a local copy,
    checksum verified; base size only) or "random". The head is always freshly initialised.
    """
    cfg = _choice("size", size, RESNET_SIZES)
    _choice("head", head, RESNET_HEADS)
    if weights not in ("imagenet", "random"):
        raise WeightsError(f"unknown ResNet weights {weights!r}; use 'imagenet' or 'random'")
    if weights == "imagenet" and size != "base":
        raise WeightsError(f"ImageNet weights exist only for ResNet size 'base', not {size!r}")
    model = ResNet(Bottleneck, cfg["layers"], width_per_group=cfg["width_per_group"])
    if weights == "imagenet":
        record = _load_imagenet(model, path)
    else:
        record = WeightsRecord(f"resnet50-{size}", "random")
    model.fc = build_head(model.fc.in_features, num_classes, head)
    return model, record
