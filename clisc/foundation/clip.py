"""CLIP through open_clip: architectures as data, weights from open_clip's sources or a local file.

``CLIP_ARCHS`` names each architecture by its open_clip model name and pretrained tag. The OpenAI
models use the ``-quickgelu`` configs (plain ``ViT-B-16`` + ``openai`` builds the wrong activation).
"tiny" is ``configs/clisc-tiny-clip.json`` registered with ``open_clip.add_model_config``: a 2-layer
ViT (64 px, patch 16) and text transformer with 64-d embeddings, random weights only, for tests.
"biomedclip-offline" (``configs/clisc-biomedclip-offline.json``, random weights only) has BiomedCLIP's
shapes without a hub request (``OFFLINE_ARCHS``; the paper-size smoke run on random weights).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from clisc.errors import WeightsError
from clisc.foundation.weights import WeightsRecord, cached_sha256

log = logging.getLogger(__name__)

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "clisc-tiny-clip.json"
open_clip.add_model_config(TINY_CONFIG)
# BiomedCLIP's shapes without the hub (random weights only, ``foundation.offline``): the hub config's timm
# ViT-B/16 image tower at 224 (768 channels, 512-d projection), and for its PubMedBERT text tower a
# BERT-base-sized open_clip transformer (12 x 768, context 256) with CLIP's own tokenizer
OFFLINE_BIOMEDCLIP_CONFIG = Path(__file__).resolve().parent / "configs" / "clisc-biomedclip-offline.json"
open_clip.add_model_config(OFFLINE_BIOMEDCLIP_CONFIG)

HF_HUB_PREFIX = "hf-hub:"
HUB_WEIGHT_FILES = (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)  # open_clip's preference order
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ClipArch:
    """How open_clip builds one architecture: model name, pretrained tag (None for hf-hub names) and
    the extra packages it needs beyond open_clip's own."""

    model_name: str
    pretrained_tag: str | None
    requires: tuple[str, ...] = ()


CLIP_ARCHS: dict[str, ClipArch] = {
    "ViT-B-32-quickgelu": ClipArch("ViT-B-32-quickgelu", "openai"),
    "ViT-B-16-quickgelu": ClipArch("ViT-B-16-quickgelu", "openai"),
    "ViT-L-14-quickgelu": ClipArch("ViT-L-14-quickgelu", "openai"),
    "biomedclip": ClipArch("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", None,
                           requires=("transformers",)),  # PubMedBERT text tower and tokenizer
    "tiny": ClipArch(TINY_CONFIG.stem, None),
    "biomedclip-offline": ClipArch(OFFLINE_BIOMEDCLIP_CONFIG.stem, None, requires=("timm",)),
}
OFFLINE_ARCHS = {"biomedclip": "biomedclip-offline"}  # hub-only architectures -> their vendored stand-ins


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
    """The registry entry ``name`` whose extra packages are installed, else WeightsError."""
    if name not in CLIP_ARCHS:
        raise WeightsError(f"unknown CLIP architecture {name!r}; known: {', '.join(CLIP_ARCHS)}")
    arch = CLIP_ARCHS[name]
    missing = [package for package in arch.requires if importlib.util.find_spec(package) is None]
    if missing:
        raise WeightsError(f"CLIP {name} needs {', '.join(missing)}; pip install {' '.join(missing)}")
    return arch


def _hub_repo(arch: ClipArch) -> str:
    """The Hugging Face hub repository open_clip fetches the arch's pretrained weights from."""
    if arch.model_name.startswith(HF_HUB_PREFIX):
        return arch.model_name[len(HF_HUB_PREFIX):]
    cfg = open_clip.get_pretrained_cfg(arch.model_name, arch.pretrained_tag or "")
    return os.path.split(cfg["hf_hub"])[0] if cfg.get("hf_hub") else cfg.get("url", "")


def _root_cause(err: BaseException) -> str:
    """One line for the innermost exception of a chain (open_clip wraps hub errors twice)."""
    while (inner := err.__cause__ or err.__context__) is not None:
        err = inner
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def _hub_error(name: str, arch: ClipArch, err: Exception | str) -> WeightsError:
    reason = _root_cause(err) if isinstance(err, BaseException) else err
    local = "model folder" if arch.model_name.startswith(HF_HUB_PREFIX) else "checkpoint"
    return WeightsError(f"cannot fetch CLIP {name} from the Hugging Face hub repo {_hub_repo(arch)} "
                        f"({reason}); pass weights=<path> to a local open_clip {local}")


def _hub_online() -> bool:
    """False in HF offline mode or when the hub endpoint does not accept a TCP connection within a few
    seconds (the hub client would otherwise retry for most of a minute before failing)."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the hub client try
    endpoint = urlparse(huggingface_hub.constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _cached_hub_file(repo: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` already in the local Hugging Face cache for ``repo``, if any."""
    for filename in filenames:
        found = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _hub_dir_checkpoint(directory: Path) -> Path:
    found = [directory / f for f in HUB_WEIGHT_FILES if (directory / f).is_file()]
    if not found:
        raise WeightsError(f"{directory}: no {' or '.join(HUB_WEIGHT_FILES)} in this open_clip model folder")
    return found[0]


@dataclass(frozen=True)
class _Source:
    """What to hand open_clip: model name (maybe ``local-dir:``), pretrained file, checkpoint to hash."""

    model_name: str
    pretrained: str | None
    checkpoint: Path | None


def _pretrained_source(name: str, arch: ClipArch) -> _Source:
    """open_clip's own download (hub, cached) when online, else the local hub cache, else WeightsError."""
    hub, repo, online = arch.model_name.startswith(HF_HUB_PREFIX), _hub_repo(arch), _hub_online()
    try:
        if hub and online:
            checkpoint = Path(open_clip.pretrained.download_pretrained_from_hf(repo))
            return _Source(arch.model_name, None, checkpoint)
        if online:
            checkpoint = Path(open_clip.download_pretrained(
                open_clip.get_pretrained_cfg(arch.model_name, arch.pretrained_tag or "")))
            return _Source(arch.model_name, str(checkpoint), checkpoint)
    except Exception as e:  # hub / network errors come in many classes (OSError, httpx, hub errors)
        raise _hub_error(name, arch, e) from None
    cached = _cached_hub_file(repo, (HF_CONFIG_NAME,) if hub else HUB_WEIGHT_FILES)
    if cached is None:
        raise _hub_error(name, arch, "hub unreachable or offline mode, and not in the local cache")
    if hub:
        return _Source(f"local-dir:{cached.parent}", None, _hub_dir_checkpoint(cached.parent))
    return _Source(arch.model_name, str(cached), cached)


def _source(name: str, arch: ClipArch, weights: str) -> _Source:
    hub = arch.model_name.startswith(HF_HUB_PREFIX)
    if weights == "random" and hub and not _hub_online():  # the architecture lives in the hub config
        config = _cached_hub_file(_hub_repo(arch), (HF_CONFIG_NAME,))
        if config is None:
            raise _hub_error(name, arch, "hub unreachable or offline mode, and its config not in the local "
                                         "cache")
        return _Source(f"local-dir:{config.parent}", None, None)
    if weights == "random":
        return _Source(arch.model_name, None, None)
    if weights == "pretrained":
        if arch.pretrained_tag is None and not hub:
            raise WeightsError(f"CLIP {name} has no pretrained weights; use weights='random' or a local path")
        return _pretrained_source(name, arch)
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
    except Exception as e:  # strict-load mismatch, unpickling error, hub config fetch
        if source.checkpoint is None or weights == "pretrained":
            raise _hub_error(name, arch, e) from None
        reason = _root_cause(e)
        raise WeightsError(f"{weights}: not a loadable open_clip checkpoint for CLIP {name} "
                           f"({reason})") from None


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
