"""ResNet50 builder: sizes and heads, ImageNet weights from a verified local file."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from clisc.errors import WeightsError
from clisc.foundation.resnet import IMAGENET_WEIGHTS, RESNET_HEADS, RESNET_SIZES, build_resnet50
from clisc.foundation.weights import WEIGHTS, sha256_file


@pytest.mark.parametrize("head", sorted(RESNET_HEADS))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_tiny_forward_backward_and_feature_maps(head, num_classes):
    torch.manual_seed(0)
    model, record = build_resnet50("random", size="tiny", head=head, num_classes=num_classes)
    assert record.tag == "resnet50-tiny=random"
    features = {}
    def keep(name: str):
        return lambda module, inputs, out: features.__setitem__(name, out)

    for name in ("layer3", "layer4"):
        getattr(model, name).register_forward_hook(keep(name))
    logits = model(torch.rand(8, 3, 64, 64))
    logits.sum().backward()
    assert logits.shape == (8, num_classes)
    assert features["layer3"].shape == (8, 1024, 4, 4) and features["layer4"].shape == (8, 2048, 2, 2)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("head, layer_shapes", [
    ("paper", [(2, 2048)]),
    ("official", [(256, 2048), (2, 256)]),
])
def test_heads(head, layer_shapes):
    model, _ = build_resnet50("random", size="tiny", head=head)
    linears = [m for m in model.fc.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == layer_shapes
    dropouts = [m.p for m in model.fc.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == ([0.5] if head == "official" else [])


@pytest.fixture(scope="module")
def base_resnet() -> nn.Module:
    """torchvision's own resnet50 (random, 1000 classes): the layout of the ImageNet file (built once)."""
    torch.manual_seed(1)
    return torchvision.models.resnet50(weights=None)


def test_sizes_share_module_names(base_resnet):
    tiny, _ = build_resnet50("random", size="tiny")
    assert set(RESNET_SIZES) == {"base", "tiny"}
    names = {n for n, _ in tiny.named_children()}
    assert names == {n for n, _ in base_resnet.named_children()} >= {"layer1", "layer4", "fc"}
    base, _ = build_resnet50("random", size="base")
    shapes = {k: v.shape for k, v in base.state_dict().items() if not k.startswith("fc.")}
    assert shapes == {k: v.shape for k, v in base_resnet.state_dict().items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def saved_backbone(base_resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("imagenet") / "resnet50-local.pth"
    torch.save(base_resnet.state_dict(), path)
    return path, sha256_file(path)


@pytest.fixture
def imagenet_file(saved_backbone, base_resnet, monkeypatch):
    """The saved state dict, registered under its own hash in place of the real ImageNet file."""
    path, sha = saved_backbone
    spec = dataclasses.replace(WEIGHTS[IMAGENET_WEIGHTS], sha256=sha, sha256_prefix=None,
                               size_bytes=path.stat().st_size)
    monkeypatch.setitem(WEIGHTS, IMAGENET_WEIGHTS, spec)
    return path, base_resnet


@pytest.mark.parametrize("head", sorted(RESNET_HEADS))
def test_imagenet_backbone_loads_from_local_file(imagenet_file, head):
    path, source = imagenet_file
    model, record = build_resnet50("imagenet", head=head, path=path)
    assert record.tag == f"{IMAGENET_WEIGHTS}={WEIGHTS[IMAGENET_WEIGHTS].sha256}"
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert model.fc[-1].out_features == 2 if head == "official" else model.fc.out_features == 2


def test_imagenet_refusals(imagenet_file, tmp_path):
    path, _ = imagenet_file
    truncated = tmp_path / "truncated.pth"
    with open(path, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))  # an interrupted copy: refused on size, before hashing
    with pytest.raises(WeightsError, match=f"{truncated}: 1048576 bytes, expected .* for {IMAGENET_WEIGHTS}"):
        build_resnet50("imagenet", path=truncated)
    with pytest.raises(WeightsError, match="ImageNet weights exist only for ResNet size 'base'"):
        build_resnet50("imagenet", size="tiny", path=path)
    with pytest.raises(WeightsError, match="unknown ResNet head 'wide'; known: paper, official"):
        build_resnet50("random", head="wide")
    with pytest.raises(WeightsError, match="unknown ResNet weights 'imagenet21k'"):
        build_resnet50("imagenet21k")


def test_imagenet_file_with_wrong_keys_is_refused(tmp_path, monkeypatch):
    tiny, _ = build_resnet50("random", size="tiny")
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)  # same names, other shapes: not a resnet50
    spec = dataclasses.replace(WEIGHTS[IMAGENET_WEIGHTS], sha256=sha256_file(path), sha256_prefix=None)
    monkeypatch.setitem(WEIGHTS, IMAGENET_WEIGHTS, spec)
    with pytest.raises(WeightsError, match=f"{path}: not a torchvision resnet50 state dict"):
        build_resnet50("imagenet", path=path)
