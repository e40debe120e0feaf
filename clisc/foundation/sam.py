"""The SAM stage's models as data (``sam.model``), and loading with a weights record.

``SAM_ARCHS`` maps a model name to how it is built, which pretrained weights it takes, its family
(how the segmenter feeds it, ``clisc.stages.sam_variants``), its input normalisation and the tiny
random-weight stand-in the ``tiny`` profile swaps in:

- "vit_b", "vit_l", "vit_h": segment_anything's ``sam_model_registry`` builders (image size 1024,
  embedding ``Bx256x64x64``); input resized on its longest side, normalised by SAM's pixel mean/std
  (0-255 scale), zero-padded to 1024.
- "medsam": the ViT-B architecture with MedSAM's weights; input squashed to 1024 x 1024 and min-max
  scaled to [0, 1] (no mean/std, no padding), as MedSAM's ``MedSAM_Inference.py``.
- "sam2.1_hiera_t/s/b+/l": SAM 2.1 through the optional ``sam2`` package (``sam2_models``).
- "tiny", "medsam_tiny", "sam2.1_tiny": random-weight models of each family for tests: a Sam after
  ``TINY_SAM_CONFIG`` (image size 256, embedding ``Bx32x16x16``) and a 128-px Hiera.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from clisc.errors import WeightsError
from clisc.foundation.weights import WeightsRecord, cached_sha256, resolve_weights

TINY_SAM_CONFIG: dict[str, Any] = {
    "image_size": 256,
    "patch_size": 16,
    "prompt_embed_dim": 32,
    "encoder": {
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "window_size": 4,
        "global_attn_indexes": (1,),
    },
    "mask_in_chans": 4,
    "decoder": {"depth": 2, "mlp_dim": 64, "num_heads": 2, "iou_head_depth": 2, "iou_head_hidden_dim": 32},
}


def build_sam_from_config(config: Mapping[str, Any]) -> Sam:
    """A randomly initialised Sam in eval mode, laid out like segment_anything's ``_build_sam``.

    ``config`` holds ``image_size``, ``patch_size``, ``prompt_embed_dim``, ``mask_in_chans`` and the
    ``encoder`` (ImageEncoderViT) and ``decoder`` (TwoWayTransformer + MaskDecoder heads) settings; see
    ``TINY_SAM_CONFIG``. The image embedding is ``Bx(prompt_embed_dim)x(S/p)x(S/p)``.
    """
    size, patch, dim = config["image_size"], config["patch_size"], config["prompt_embed_dim"]
    enc, dec = config["encoder"], config["decoder"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=size,
            patch_size=patch,
            embed_dim=enc["embed_dim"],
            depth=enc["depth"],
            num_heads=enc["num_heads"],
            mlp_ratio=enc["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            window_size=enc["window_size"],
            global_attn_indexes=tuple(enc["global_attn_indexes"]),
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size),
            mask_in_chans=config["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=dec["depth"], embedding_dim=dim, mlp_dim=dec["mlp_dim"], num_heads=dec["num_heads"]
            ),
            transformer_dim=dim,
            iou_head_depth=dec["iou_head_depth"],
            iou_head_hidden_dim=dec["iou_head_hidden_dim"],
        ),
    )
    return sam.eval()


SAM_FAMILIES = ("sam", "medsam", "sam2")
@dataclass(frozen=True)
class SamArch:
    """How to build one SAM-stage model (randomly initialised), the weights name it takes, its
    ``family`` (one of ``SAM_FAMILIES``) and ``tiny``, the random-weight stand-in of the ``tiny`` profile.

    ``weights_name`` is a name known to ``clisc.foundation.weights.resolve_weights``, or None where no
    pretrained weights exist.
    """

    build: Callable[[], torch.nn.Module]
    weights_name: str | None
    family: str = "sam"  # how the segmenter feeds it; its normalisation in words: clisc.foundation.catalogue
    tiny: str = "tiny"


def _sam2_arch(name: str) -> SamArch:
    from clisc.foundation.sam2_models import SAM2_CONFIGS, build_sam2_model

    config, weights = SAM2_CONFIGS[name]
    return SamArch(build=partial(build_sam2_model, config), weights_name=weights, family="sam2", tiny="sam2.1_tiny")


def _build_tiny_sam2() -> torch.nn.Module:
    from clisc.foundation.sam2_models import SAM2_CONFIGS, TINY_SAM2_OVERRIDES, build_sam2_model

    return build_sam2_model(SAM2_CONFIGS["sam2.1_hiera_t"][0], TINY_SAM2_OVERRIDES)


SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch(build=partial(sam_model_registry["vit_b"], checkpoint=None), weights_name="sam_vit_b"),
    "vit_l": SamArch(build=partial(sam_model_registry["vit_l"], checkpoint=None), weights_name="sam_vit_l"),
    "vit_h": SamArch(build=partial(sam_model_registry["vit_h"], checkpoint=None), weights_name="sam_vit_h"),
    "medsam": SamArch(build=partial(sam_model_registry["vit_b"], checkpoint=None), weights_name="medsam_vit_b",
                      family="medsam", tiny="medsam_tiny"),
    **{name: _sam2_arch(name) for name in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")},
    "tiny": SamArch(build=partial(build_sam_from_config, TINY_SAM_CONFIG), weights_name=None),
    "medsam_tiny": SamArch(build=partial(build_sam_from_config, TINY_SAM_CONFIG), weights_name=None,
                           family="medsam", tiny="medsam_tiny"),
    "sam2.1_tiny": SamArch(build=_build_tiny_sam2, weights_name=None, family="sam2", tiny="sam2.1_tiny"),
}
SAM_MODELS = tuple(name for name, arch in SAM_ARCHS.items() if arch.weights_name is not None)  # ``sam.model``


def _load_checkpoint(sam: torch.nn.Module, path: Path, family: str = "sam") -> None:
    """Load a state dict file into ``sam``; a missing, unreadable or mismatching file is a WeightsError."""
    if not path.is_file():
        raise WeightsError(f"{path}: SAM checkpoint not found")
    if family == "sam2":
        from clisc.foundation.sam2_models import load_sam2_checkpoint

        return load_sam2_checkpoint(sam, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a SAM checkpoint for this architecture ({first_line})") from err


def load_sam(arch: str = "vit_b", weights: str | Path = "pretrained", device: str | torch.device = "cpu"
             ) -> tuple[torch.nn.Module, WeightsRecord]:
    """Build SAM-stage model ``arch`` (a ``Sam``, or a ``SAM2Base`` for the sam2 family) in eval mode on ``device`` and say which weights it holds.

    ``weights``: "pretrained" resolves the architecture's official checkpoint through
    ``resolve_weights`` (a WeightsError when it cannot be had, e.g. offline); "random" builds without a
    checkpoint, initialised from torch's global seed (record sha256 "random"); anything else is the
    path of a checkpoint file, loaded strictly and recorded by its sha256.
    """
    if arch not in SAM_ARCHS:
        raise WeightsError(f"unknown SAM architecture {arch!r}; known: {', '.join(SAM_ARCHS)}")
    spec = SAM_ARCHS[arch]
    if weights == "random":
        sam = spec.build()
        return sam.to(device).eval(), WeightsRecord(name=spec.weights_name or f"sam_{arch}", sha256="random")
    if weights == "pretrained":
        if spec.weights_name is None:
            raise WeightsError(f"SAM architecture {arch!r} has no pretrained weights; use weights='random'")
        path = resolve_weights(spec.weights_name)  # verified against the published sha256
        record_name = spec.weights_name
    else:  # a user's checkpoint (possibly fine-tuned): loaded strictly, recorded by its own hash
        path = Path(weights).expanduser()
        record_name = f"sam_{arch}:{path.name}"
    sam = spec.build()
    _load_checkpoint(sam, path, spec.family)
    record = WeightsRecord(name=record_name, sha256=cached_sha256(path))
    return sam.to(device).eval(), record


def model_tag(sam: torch.nn.Module, record: WeightsRecord | None = None) -> str:
    """A short string naming the model's weights, to key cached image embeddings.

    Pretrained or file weights are named by their record (name + sha256 prefix). Random weights (or no
    record) are named by a sha1 of the parameters and buffers themselves, so two randomly initialised
    models never share cached embeddings.
    """
    if record is not None and record.sha256 != "random":
        return f"{record.name.replace(':', '-')}-{record.sha256[:16]}"
    digest = hashlib.sha1()
    for key, tensor in sam.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    name = record.name if record is not None else "sam"
    return f"{name}-random-{digest.hexdigest()[:16]}"
