"""SAM 2.1 (the optional ``sam2`` package, ``pip install -e .[sam2]``): Hiera image encoders as data.

``SAM2_CONFIGS`` maps a model name to the sam2 package's own Hydra config (``configs/sam2.1/...``) and
the registry name of its checkpoint. The image predictor squashes a slice to ``image_size`` x
``image_size`` (1024), scales it to [0, 1] and normalises it by the ImageNet mean/std
(``SAM2_MEAN``/``SAM2_STD``, sam2's ``SAM2Transforms``). ``TINY_SAM2_OVERRIDES`` shrink Hiera-T to a
128-px, 5-block encoder (about 0.1 s per slice on one CPU core) for tests and the ``tiny`` profile: random
weights only. The package is imported on use, so the rest of the suite runs without it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from clisc.errors import WeightsError

SAM2_MEAN = (0.485, 0.456, 0.406)  # on [0, 1] pixels, as sam2.utils.transforms.SAM2Transforms
SAM2_STD = (0.229, 0.224, 0.225)
SAM2_CONFIGS: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large"),
}
TINY_SAM2_OVERRIDES = (
    "++model.image_size=128",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.memory_attention.num_layers=1",  # video memory: never used on single images
)


def require_sam2() -> None:
    """WeightsError (one line) unless the optional ``sam2`` package is installed."""
    if importlib.util.find_spec("sam2") is None:
        raise WeightsError("SAM 2.1 needs the sam2 package: pip install -e .[sam2] "
                           "(SAM2_BUILD_CUDA=0 skips its optional CUDA extension)")


def build_sam2_model(config: str, overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    """A randomly initialised SAM2Base in eval mode on the CPU from a sam2 package config."""
    require_sam2()
    from sam2.build_sam import build_sam2

    return build_sam2(config, ckpt_path=None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides))


def load_sam2_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Load a sam2 checkpoint (``{"model": state_dict}``, as sam2's ``_load_checkpoint``) strictly."""
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a SAM 2.1 checkpoint for this architecture ({first_line})") from err


def image_predictor(model: torch.nn.Module) -> Any:
    """sam2's ``SAM2ImagePredictor`` for ``model``, its backbone feature sizes set from the model's image
    size (the predictor hard-codes those of 1024 px: 256, 128, 64)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    size = int(model.image_size)
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return predictor
