"""SAM (segment_anything) architectures as data, and loading with a weights record.

``SAM_ARCHS`` maps an architecture name to how it is built and which pretrained weights it takes:
"vit_b", "vit_l" and "vit_h" use segment_anything's own ``sam_model_registry`` builders (image size
1024, image embedding ``Bx256x64x64``); "tiny" is a Sam assembled from segment_anything's classes
after ``TINY_SAM_CONFIG`` (image size 256, embedding ``Bx32x16x16``) for tests and benchmarks: it has
no pretrained weights and runs one 256x256 image in a few milliseconds on a CPU.
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


@dataclass(frozen=True)
class SamArch:
    """How to build one SAM architecture (randomly initialised) and the weights name it takes.

    ``weights_name`` is a name known to ``clisc.foundation.weights.resolve_weights``, or None where no
    pretrained weights exist.
    """

    build: Callable[[], Sam]
    weights_name: str | None


SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch(build=partial(sam_model_registry["vit_b"], checkpoint=None), weights_name="sam_vit_b"),
    "vit_l": SamArch(build=partial(sam_model_registry["vit_l"], checkpoint=None), weights_name="sam_vit_l"),
    "vit_h": SamArch(build=partial(sam_model_registry["vit_h"], checkpoint=None), weights_name="sam_vit_h"),
    "tiny": SamArch(build=partial(build_sam_from_config, TINY_SAM_CONFIG), weights_name=None),
}


def _load_checkpoint(sam: Sam, path: Path) -> None:
    """Load a state dict file into ``sam``; a missing, unreadable or mismatching file is a WeightsError."""
    if not path.is_file():
        raise WeightsError(f"{path}: SAM checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a SAM checkpoint for this architecture ({first_line})") from err


def load_sam(arch: str = "vit_b", weights: str | Path = "pretrained", device: str | torch.device = "cpu"
             ) -> tuple[Sam, WeightsRecord]:
    """Build SAM ``arch`` in eval mode on ``device`` and say which weights it holds.

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
    _load_checkpoint(sam, path)
    record = WeightsRecord(name=record_name, sha256=cached_sha256(path))
    return sam.to(device).eval(), record


def model_tag(sam: Sam, record: WeightsRecord | None = None) -> str:
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
