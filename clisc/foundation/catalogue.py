"""Every foundation model a run can choose, as data: its setting, source, file, size, sha256 and input
normalisation, and what of it is present and verified on this machine (``clisc weights``).

Imports nothing heavy (no torch model code), so settings validation and the CLI listing stay fast. SAM
stage models (``sam.model``) take files of the weights registry (``clisc.foundation.weights``); CLIP
models (``foundation.clip_arch``) come through open_clip from the Hugging Face hub, whose publishers
give no size or checksum: the file's sha256 is recorded with each run instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clisc.errors import WeightsError
from clisc.foundation.weights import WEIGHTS, default_cache_dir, weight_spec

OPENAI_NORM = "squashed to the image size (bicubic), (x - OpenAI CLIP mean) / std on [0, 1]"
HUB_CHECKSUM = "none published (the hub lists no size or checksum of record); sha256 recorded per run"


@dataclass(frozen=True)
class ModelEntry:
    """One choice of a foundation-model setting. ``weights``: a registry name (SAM stage, ResNet), or
    None for open_clip hub models, which name their ``hub_repo`` and ``hub_files`` instead."""

    setting: str  # "sam.model" | "foundation.clip_arch" | "" (not a choice: the classifier backbone)
    value: str
    title: str
    normalisation: str
    weights: str | None = None
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ()
    requires: str = ""  # the pip extra it needs beyond the base install
    default: bool = False


_SAM_SQUARE = "longest side resized to 1024, (x - SAM pixel mean) / std on 0-255, zero-padded to 1024 x 1024"
_MEDSAM = "squashed to 1024 x 1024 (bicubic), min-max to [0, 1]; no mean/std, no padding (MedSAM_Inference.py)"
_SAM2 = "squashed to 1024 x 1024, x / 255, (x - ImageNet mean) / std (sam2 SAM2Transforms)"
_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("sam.model", "vit_b", "SAM ViT-B", _SAM_SQUARE, "sam_vit_b", default=True),
    ModelEntry("sam.model", "vit_l", "SAM ViT-L", _SAM_SQUARE, "sam_vit_l"),
    ModelEntry("sam.model", "vit_h", "SAM ViT-H", _SAM_SQUARE, "sam_vit_h"),
    ModelEntry("sam.model", "medsam", "MedSAM (ViT-B)", _MEDSAM, "medsam_vit_b"),
    ModelEntry("sam.model", "sam2.1_hiera_t", "SAM 2.1 Hiera-T", _SAM2, "sam2.1_hiera_tiny", requires="sam2"),
    ModelEntry("sam.model", "sam2.1_hiera_s", "SAM 2.1 Hiera-S", _SAM2, "sam2.1_hiera_small", requires="sam2"),
    ModelEntry("sam.model", "sam2.1_hiera_b+", "SAM 2.1 Hiera-B+", _SAM2, "sam2.1_hiera_base_plus", requires="sam2"),
    ModelEntry("sam.model", "sam2.1_hiera_l", "SAM 2.1 Hiera-L", _SAM2, "sam2.1_hiera_large", requires="sam2"),
    ModelEntry("foundation.clip_arch", "ViT-B-32-quickgelu", "CLIP ViT-B/32 (OpenAI)", OPENAI_NORM,
               hub_repo="timm/vit_base_patch32_clip_224.openai", hub_files=_HUB_FILES, default=True),
    ModelEntry("foundation.clip_arch", "ViT-B-16-quickgelu", "CLIP ViT-B/16 (OpenAI)", OPENAI_NORM,
               hub_repo="timm/vit_base_patch16_clip_224.openai", hub_files=_HUB_FILES),
    ModelEntry("foundation.clip_arch", "ViT-L-14-quickgelu", "CLIP ViT-L/14 (OpenAI)", OPENAI_NORM,
               hub_repo="timm/vit_large_patch14_clip_224.openai", hub_files=_HUB_FILES),
    ModelEntry("foundation.clip_arch", "biomedclip", "BiomedCLIP (PubMedBERT + ViT-B/16)",
               "squashed to 224, (x - mean) / std of its hub config's preprocess_cfg",
               hub_repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", hub_files=_HUB_FILES,
               requires="biomedclip"),
    ModelEntry("", "resnet50", "ResNet50 ImageNet (classifier)", "(x - ImageNet mean) / std on [0, 1]",
               "resnet50_imagenet1k_v1"),
)


def choices(setting: str) -> tuple[str, ...]:
    """The values ``setting`` (``sam.model``, ``foundation.clip_arch``) may take, in catalogue order."""
    return tuple(m.value for m in MODELS if m.setting == setting)


def entry(setting: str, value: str) -> ModelEntry:
    for model in MODELS:
        if model.setting == setting and model.value == value:
            return model
    raise KeyError(f"{setting}={value}")


@dataclass(frozen=True)
class Status:
    """One row of ``clisc weights``: where the file comes from and what is known of it here."""

    entry: ModelEntry
    source: str
    file: str
    size: str
    sha256: str
    verified: str


def _registry_status(model: ModelEntry, cache_dir: Path) -> Status:
    from clisc.foundation.weights import _check_file, cached_sha256

    spec = weight_spec(model.weights or "")
    path = cache_dir / spec.filename
    size = str(spec.size_bytes) if spec.size_bytes is not None else "not published"
    published = spec.sha256 or (f"prefix {spec.sha256_prefix}" if spec.sha256_prefix else "not published")
    if not path.is_file():
        verified = f"not present (expected at {path})"
    elif spec.sha256 is None and spec.sha256_prefix is None:
        verified = f"present, sha256 {cached_sha256(path)}: no published checksum to compare"
    else:
        try:
            _check_file(spec, path)
            verified = "present, size and checksum OK"
        except WeightsError as err:
            verified = f"present, FAILS verification: {err}"
    return Status(model, spec.url, spec.filename, size, published, verified)


def _hub_status(model: ModelEntry) -> Status:
    from clisc.foundation.weights import cached_sha256

    found = None
    try:
        import huggingface_hub

        for name in model.hub_files:
            hit = huggingface_hub.try_to_load_from_cache(model.hub_repo or "", name)
            if isinstance(hit, str):
                found = Path(hit)
                break
    except ImportError:
        pass
    verified = ("not present in the local Hugging Face cache" if found is None
                else f"present ({found.name}), sha256 {cached_sha256(found)}: no published checksum to compare")
    return Status(model, f"Hugging Face hub {model.hub_repo} (through open_clip)", " or ".join(model.hub_files),
                  "not published", "not published", verified)


def statuses(cache_dir: str | Path | None = None) -> list[Status]:
    """Every model's row; reads (and hashes, once: the sidecar memo) only files already present."""
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return [_registry_status(m, directory) if m.weights in WEIGHTS else _hub_status(m) for m in MODELS]


def markdown_table() -> str:
    """The catalogue as a Markdown table (docs/FOUNDATION_MODELS.md holds this output; a test keeps it so):
    setting, model, file, source, size, sha256, input normalisation."""
    lines = ["| setting | model | file | source | bytes | sha256 | input |", "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        if model.weights in WEIGHTS:
            spec = WEIGHTS[model.weights]
            file, source = f"`{spec.filename}`", spec.url
            size = str(spec.size_bytes) if spec.size_bytes is not None else "not published"
            sha = (f"`{spec.sha256}`" if spec.sha256 else
                   f"prefix `{spec.sha256_prefix}`" if spec.sha256_prefix else "not published")
        else:
            file, source = " or ".join(f"`{f}`" for f in model.hub_files), f"hub `{model.hub_repo}`"
            size, sha = "not published", "not published"
        choice = f"`{model.setting}={model.value}`" if model.setting else "(classifier)"
        extra = f" (extra `[{model.requires}]`)" if model.requires else ""
        default = " (default)" if model.default else ""
        lines.append(f"| {choice}{default} | {model.title}{extra} | {file} | {source} | {size} | {sha} | "
                     f"{model.normalisation} |")
    return "\n".join(lines) + "\n"
