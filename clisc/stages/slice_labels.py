"""Stage 1: CLIP zero-shot slice labels (paper section 2.1.1, METHOD.md sections 2.1 and 3).

Each axial slice ``image[:, :, z].T`` (``clisc.stages.slice_input.axial_slices``) is scored against two prompts; the tumour probability is the
softmax over ``logit_scale * cosine`` of the (normal, tumour) prompts, index 1 = tumour. Labels are
1 (tumour), 0 (normal) or -1 (dropped by the code's confidence filter). The code's z smoothing and
its PIL truncation of the z-scored slice are switches, off by default (paper protocol).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from clisc.compute import autocast, check_precision
from clisc.stages.slice_input import axial_slices, model_input_slices

logger = logging.getLogger(__name__)

NORMAL_PROMPT = ("an image of brain tissue showing typical signal intensity without any regions of "
                 "abnormal intensity or suspicious mass")
TUMOUR_PROMPT = ("an image of brain tissue showing a tumor with uneven hyperintensity and irregular "
                 "borders distinct from surroundings")

DROPPED = -1
GEOMETRIES = ("squash", "resize_crop")


class ClipLike(Protocol):
    """What stage 1 needs from a CLIP model (``clisc.foundation.clip.ClipModel``)."""

    logit_scale: float
    image_size: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class SliceLabelSettings:
    """Stage-1 switches. Paper defaults; the code uses ``min_confidence=0.6``, ``z_smoothing=True``,
    ``pil_truncation=True`` and ``geometry="resize_crop"``.

    ``geometry``: how a slice becomes CLIP's SxS input: ``squash`` (the whole slice stretched to SxS,
    bilinear) or ``resize_crop`` (CLIP's own preprocessing, as the code's ``preprocess``: shorter side
    to S, bicubic, then the central SxS; the ends of the longer side are lost)."""

    min_confidence: float | None = None
    z_smoothing: bool = False
    pil_truncation: bool = False
    geometry: str = "squash"
    batch_size: int = 32
    precision: str = "fp32"  # CLIP image encoder autocast on CUDA: "fp32" | "bf16" | "fp16"

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}")


def minmax_slices(slices: np.ndarray) -> np.ndarray:
    """Scale each slice of ``NxHxW`` to [0, 1] by its own min and max (a constant slice -> 0);
    ``model_input_slices`` without a brain mask."""
    return model_input_slices(slices)


def resize_slices(slices: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``NxHxW`` slices to ``Nx3xSxS`` (bilinear, antialiased, 3 identical channels)."""
    x = torch.as_tensor(np.asarray(slices, dtype=np.float32))[:, None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.expand(-1, 3, -1, -1).contiguous()


def clip_geometry(image_size: int):
    """open_clip's own evaluation transform at ``image_size`` (shorter side resized to S, bicubic,
    antialiased; centre crop SxS; PIL images converted to RGB and to [0, 1] tensors) with an identity
    normalisation: :class:`clisc.foundation.clip.ClipModel` normalises by the model's mean and std."""
    return open_clip.image_transform(image_size, is_train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def slices_for_clip(slices: np.ndarray, image_size: int, pil_truncation: bool = False,
                    brain: np.ndarray | None = None, geometry: str = "squash") -> torch.Tensor:
    """CLIP input ``Nx3xSxS`` in [0, 1] from float slices ``NxHxW`` (S = ``image_size``).

    Default: ``model_input_slices`` (background black, per-slice min-max; ``brain`` ``NxHxW`` bool),
    then resized by ``geometry``: ``squash`` stretches the whole slice to SxS (bilinear);
    ``resize_crop`` is CLIP's own preprocessing (:func:`clip_geometry`, on the float tensor).
    ``pil_truncation`` reproduces the code, which hands the z-scored float slice to PIL: the slice is
    resized as floats, then PIL's float-to-8-bit conversion truncates to integers in [0, 255]
    (negatives -> 0), and ``ToTensor`` divides by 255; with ``resize_crop`` this is the code's
    ``preprocess(Image.fromarray(slice))`` itself (a mode "F" PIL image through :func:`clip_geometry`).
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    if geometry == "resize_crop":
        transform = clip_geometry(image_size)
        if pil_truncation:
            return torch.stack([transform(Image.fromarray(np.asarray(s, dtype=np.float32))) for s in slices])
        images = torch.as_tensor(model_input_slices(slices, brain), dtype=torch.float32)[:, None]
        return transform(images.expand(-1, 3, -1, -1)).clamp_(0.0, 1.0)
    if not pil_truncation:
        return resize_slices(model_input_slices(slices, brain), image_size).clamp_(0.0, 1.0)
    resized = resize_slices(slices, image_size)
    return torch.floor(resized.clamp(0.0, 255.0)) / 255.0


@torch.no_grad()
def tumour_probability(clip: ClipLike, slices: np.ndarray, settings: SliceLabelSettings,
                       brain: np.ndarray | None = None) -> np.ndarray:
    """P(tumour) per slice, ``N`` float32, for float slices ``NxHxW`` with their brain mask ``NxHxW``
    (see ``slices_for_clip``); softmax over the two prompts."""
    text = clip.encode_text([NORMAL_PROMPT, TUMOUR_PROMPT])  # 2xD
    check_precision(settings.precision, text.device, "slice_labels.precision")
    probs = []
    for start in range(0, len(slices), settings.batch_size):
        stop = start + settings.batch_size
        batch = slices_for_clip(slices[start:stop], clip.image_size, settings.pil_truncation,
                                None if brain is None else brain[start:stop], settings.geometry)
        with autocast(text.device, settings.precision):
            features = clip.encode_images(batch.to(text.device, text.dtype)).to(text.dtype)  # BxD
        logits = float(clip.logit_scale) * features @ text.T  # Bx2
        probs.append(logits.softmax(dim=-1)[:, 1].float().cpu().numpy())
    return np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)


def labels_from_probs(p: np.ndarray, min_confidence: float | None = None) -> np.ndarray:
    """Labels ``N`` int8 from P(tumour) ``N``: argmax (a tie -> normal, like ``np.argmax``); with
    ``min_confidence`` a slice whose winning probability is below it gets -1 (the code: 0.6, kept
    when ``>=``)."""
    p = np.asarray(p, dtype=np.float64)
    labels = (p > 0.5).astype(np.int8)
    if min_confidence is not None:
        labels[np.maximum(p, 1.0 - p) < min_confidence] = DROPPED
    return labels


def smooth_labels_z(labels: np.ndarray) -> np.ndarray:
    """The code's z smoothing of one volume's labels ``Z`` int8 (-1 = dropped), returned as ``Z`` int8.

    Exact rule: let ``kept`` be the slices with label != -1, in z order, and ``i`` a position in
    that list. Its neighbours are the list positions ``j`` with ``0 < |i - j| <= 5`` (up to 5 kept
    slices on each side) whose z index differs from slice ``i``'s by at most 6. If there are more
    than 8 neighbours (9 or 10), the slice's label becomes 1 when strictly more neighbours are 1
    than 0, else 0 (a tie gives 0). Neighbours vote with their original labels (all slices are
    updated simultaneously). Dropped slices stay -1 and never vote.
    """
    labels = np.asarray(labels, dtype=np.int8)
    z_kept = np.flatnonzero(labels != DROPPED)
    votes = labels[z_kept]
    out = labels.copy()
    for i, z in enumerate(z_kept):
        window = [j for j in range(max(0, i - 5), min(len(z_kept), i + 6))
                  if j != i and abs(int(z_kept[j]) - int(z)) <= 6]
        if len(window) > 8:
            tumour = int(votes[window].astype(np.int64).sum())
            out[z] = 1 if tumour > len(window) - tumour else 0
    return out


def label_volume(clip: ClipLike, image: np.ndarray, settings: SliceLabelSettings,
                 brain: np.ndarray | None = None) -> np.ndarray:
    """Stage-1 labels ``Z`` int8 of a volume ``XxYxZ`` (axial slices ``image[:, :, z]``) with its
    brain mask ``XxYxZ`` bool (``Volume.brain``; None: the whole slice, plain min-max).

    A slice without contrast (max == min: all background, zero or z-scored) gets 0 without asking
    CLIP; it counts as a kept normal slice in the z smoothing.
    """
    image = np.asarray(image, dtype=np.float32)
    slices = axial_slices(image)  # ZxYxX
    has_content = (slices.max(axis=(1, 2)) > slices.min(axis=(1, 2)))
    labels = np.zeros(slices.shape[0], dtype=np.int8)
    if has_content.any():
        masks = None if brain is None else axial_slices(np.asarray(brain, dtype=bool))[has_content]
        p = tumour_probability(clip, slices[has_content], settings, masks)
        labels[has_content] = labels_from_probs(p, settings.min_confidence)
    if settings.z_smoothing:
        labels = smooth_labels_z(labels)
    logger.debug("slice labels: %d tumour, %d normal, %d dropped", (labels == 1).sum(),
                 (labels == 0).sum(), (labels == DROPPED).sum())
    return labels
