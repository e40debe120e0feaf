"""SAM architectures and loading: the tiny model, random/file weights, records and tags."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clisc.errors import WeightsError
from clisc.foundation.sam import SAM_ARCHS, load_sam, model_tag


@pytest.fixture(scope="module")
def tiny_sam():
    torch.manual_seed(0)
    return load_sam("tiny", "random")


def test_registry_names_weights_for_the_official_archs() -> None:
    assert {name: arch.weights_name for name, arch in SAM_ARCHS.items()} == {
        "vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h", "tiny": None,
        "medsam": "medsam_vit_b", "medsam_tiny": None, "sam2.1_tiny": None,
        "sam2.1_hiera_t": "sam2.1_hiera_tiny", "sam2.1_hiera_s": "sam2.1_hiera_small",
        "sam2.1_hiera_b+": "sam2.1_hiera_base_plus", "sam2.1_hiera_l": "sam2.1_hiera_large",
    }


def test_tiny_random_sam_runs_one_image(tiny_sam) -> None:
    sam, record = tiny_sam
    assert record.name == "sam_tiny" and record.sha256 == "random"
    assert not sam.training and sam.image_encoder.img_size == 256
    image = torch.randint(0, 256, (1, 3, 256, 256)).float()
    with torch.inference_mode():
        embedding = sam.image_encoder(sam.preprocess(image))
    assert embedding.shape == (1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size)


def test_random_init_follows_the_global_seed() -> None:
    torch.manual_seed(3)
    first, _ = load_sam("tiny", "random")
    torch.manual_seed(3)
    second, _ = load_sam("tiny", "random")
    torch.manual_seed(4)
    third, _ = load_sam("tiny", "random")
    assert model_tag(first) == model_tag(second) != model_tag(third)


def test_checkpoint_path_round_trip(tiny_sam, tmp_path: Path) -> None:
    sam, _ = tiny_sam
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    loaded, record = load_sam("tiny", path)
    assert record.name == "sam_tiny:tiny.pth" and len(record.sha256) == 64
    for key, value in sam.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert model_tag(loaded, record) == f"sam_tiny-tiny.pth-{record.sha256[:16]}"


@pytest.mark.parametrize(
    "arch, weights, message",
    [
        ("vit_q", "random", "unknown SAM architecture"),
        ("tiny", "pretrained", "no pretrained weights"),
        ("tiny", "missing.pth", "not found"),
        ("tiny", "WRONG", "not a SAM checkpoint"),
    ],
)
def test_bad_requests_are_weights_errors(arch: str, weights: str, message: str, tmp_path: Path) -> None:
    if weights == "missing.pth":
        weights = str(tmp_path / weights)
    if weights == "WRONG":
        weights = str(tmp_path / "wrong.pth")
        torch.save({"not": torch.zeros(1)}, weights)
    with pytest.raises(WeightsError, match=message):
        load_sam(arch, weights)


def test_pretrained_offline_is_a_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no cached file and no network the official weights cannot be had: one-line WeightsError."""
    import clisc.foundation.sam as sam_module

    def offline(name: str, **_: object) -> Path:
        raise WeightsError(f"{name}: cannot download (offline)")

    monkeypatch.setattr(sam_module, "resolve_weights", offline)
    with pytest.raises(WeightsError, match="sam_vit_b"):
        load_sam("vit_b", "pretrained")
