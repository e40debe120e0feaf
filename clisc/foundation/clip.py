"""CLIP through open_clip: architectures as data, weights from open_clip's sources or a local file.

``CLIP_ARCHS`` names each architecture by its open_clip model name and pretrained tag. The OpenAI
models use the ``-quickgelu`` configs (plain ``ViT-B-16`` + ``openai`` builds the wrong activation).
"tiny" is ``configs/clisc-tiny-clip.json`` registered with ``open_clip.add_model_config``: a 2-layer
ViT (64 px, patch 16) and text transformer with 64-d embeddings, random weights only, for tests.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from clisc.errors import WeightsError
from clisc.foundation.weights import WeightsRecord, cached_sha256

log = logging.getLogger(__name__)

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "clisc-tiny-clip.json"
open_clip.add_model_config(TINY_CONFIG)

HF_HUB_PREFIX = "hf-hub:"
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ClipArch:
    """How open_clip builds one architecture: model name and pretrained tag (None for hf-hub names)."""

    model_name: str
    pretrained_tag: str | None


CLIP_ARCHS: dict[str, ClipArch] = {
    "ViT-B-32-quickgelu": ClipArch("ViT-B-32-quickgelu", "openai"),
    "ViT-B-16-quickgelu": ClipArch("ViT-B-16-quickgelu", "openai"),
    "biomedclip": ClipArch("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", None),
    "tiny": ClipArch(TINY_CONFIG.stem, None),
}


@dataclass
class ClipModel:
    """An open_clip model in eval mode with its tokenizer, normalisation and weights record."""

    model: torch.nn.Module
    tokenizer: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    record: WeightsRecord

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        """exp of the learned temperature: multiply cosine similarities by it before a softmax."""
        return float(self.model.logit_scale.detach().exp())

    def normalise_images(self, images: torch.Tensor) -> torch.Tensor:
        """Bx{1,3}xHxW in [0, 1] -> Bx3xSxS (S = image_size, bicubic squash) normalised by mean/std."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected Bx1xHxW or Bx3xHxW images, got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32).expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Bx{1,3}xHxW float in [0, 1] -> BxD L2-normalised image embeddings."""
        return self.model.encode_image(self.normalise_images(images), normalize=True)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """T prompts -> TxD L2-normalised text embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True)


def _arch(name: str) -> ClipArch:
    try:
        return CLIP_ARCHS[name]
    except KeyError:
        raise WeightsError(f"unknown CLIP architecture {name!r}; known: {', '.join(CLIP_ARCHS)}") from None


def _hub_repo(arch: ClipArch) -> str:
    """The Hugging Face hub repository open_clip fetches the arch's pretrained weights from."""
    if arch.model_name.startswith(HF_HUB_PREFIX):
        return arch.model_name[len(HF_HUB_PREFIX):]
    cfg = open_clip.get_pretrained_cfg(arch.model_name, arch.pretrained_tag or "")
    return cfg.get("hf_hub", "").rstrip("/") or cfg.get("url", "")


def _hub_error(name: str, arch: ClipArch, err: Exception) -> WeightsError:
    reason = " ".join(str(err).split())[:200] or type(err).__name__
    return WeightsError(f"cannot fetch CLIP {name} weights from the Hugging Face hub repo {_hub_repo(arch)} "
                        f"({reason}); pass weights=<path> to a local open_clip checkpoint")


def _fetch_pretrained(name: str, arch: ClipArch) -> Path:
    """Local file of the arch's pretrained checkpoint, downloaded (and cached) by open_clip."""
    try:
        if arch.pretrained_tag is None:
            return Path(open_clip.download_pretrained_from_hf(_hub_repo(arch)))
        cfg = open_clip.get_pretrained_cfg(arch.model_name, arch.pretrained_tag)
        return Path(open_clip.download_pretrained(cfg))
    except Exception as e:  # hub / network errors come in many classes (OSError, httpx, hub errors)
        raise _hub_error(name, arch, e) from None


def _hub_dir_checkpoint(directory: Path) -> Path:
    for filename in HUB_WEIGHT_FILES:
        if (directory / filename).is_file():
            return directory / filename
    raise WeightsError(f"{directory}: no {' or '.join(HUB_WEIGHT_FILES)} in this open_clip model folder")


@dataclass(frozen=True)
class _Source:
    """What to hand open_clip: model name (maybe ``local-dir:``), pretrained file, checkpoint to hash."""

    model_name: str
    pretrained: str | None
    checkpoint: Path | None


def _source(name: str, arch: ClipArch, weights: str) -> _Source:
    hub = arch.model_name.startswith(HF_HUB_PREFIX)
    if weights == "random":
        return _Source(arch.model_name, None, None)
    if weights == "pretrained":
        if arch.pretrained_tag is None and not hub:
            raise WeightsError(f"CLIP {name} has no pretrained weights; use weights='random' or a local path")
        checkpoint = _fetch_pretrained(name, arch)
        return _Source(arch.model_name, None if hub else str(checkpoint), checkpoint)
    path = Path(weights).expanduser()
    if hub:  # a hub snapshot folder: open_clip_config.json + weights + tokenizer files
        if not path.is_dir():
            raise WeightsError(f"{path}: CLIP {name} needs a local open_clip model folder "
                               f"(a snapshot of hub repo {_hub_repo(arch)})")
        return _Source(f"local-dir:{path}", None, _hub_dir_checkpoint(path))
    if not path.is_file():
        raise WeightsError(f"{path}: no such CLIP checkpoint file for {name}")
    return _Source(arch.model_name, str(path), path)


def _create(name: str, arch: ClipArch, weights: str, source: _Source, device: str | torch.device) -> Any:
    """open_clip model + tokenizer for ``source``; any failure becomes a one-line WeightsError."""
    try:
        model = open_clip.create_model(source.model_name, pretrained=source.pretrained, device=device,
                                       load_weights=source.checkpoint is not None, pretrained_text=False,
                                       require_pretrained=source.checkpoint is not None)
        return model, open_clip.get_tokenizer(source.model_name)
    except ImportError as e:
        raise WeightsError(f"CLIP {name} needs an extra package ({e}); pip install transformers") from None
    except Exception as e:  # strict-load mismatch, unpickling error, hub config fetch
        if source.checkpoint is None or weights == "pretrained":
            raise _hub_error(name, arch, e) from None
        reason = " ".join(str(e).split())[:200]
        raise WeightsError(f"{weights}: not a loadable open_clip checkpoint for CLIP {name} ({reason})") from None


def load_clip(arch: str = "ViT-B-32-quickgelu", weights: str = "pretrained",
              device: str | torch.device = "cpu") -> ClipModel:
    """Build CLIP ``arch`` in eval mode with ``weights`` = "pretrained", "random" or a local file path.

    A local file is loaded strictly into the arch (so OpenAI weights get QuickGELU) and the OpenAI
    mean/std are set explicitly; the record holds the file's sha256 ("random" for a random init).
    """
    spec = _arch(arch)
    source = _source(arch, spec, str(weights))
    model, tokenizer = _create(arch, spec, str(weights), source, device)
    if spec.model_name.startswith(HF_HUB_PREFIX):  # the hub config's own statistics
        preprocess = open_clip.get_model_preprocess_cfg(model)
        mean, std = tuple(preprocess["mean"]), tuple(preprocess["std"])
    else:  # OpenAI statistics whatever the source (open_clip's defaults for a plain file path)
        mean, std = tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)
    size = model.visual.image_size
    image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    sha = "random" if source.checkpoint is None else cached_sha256(source.checkpoint)
    log.info("CLIP %s loaded (%s)", arch, sha)
    return ClipModel(model.eval(), tokenizer, mean, std, image_size, WeightsRecord(f"clip:{arch}", sha))
