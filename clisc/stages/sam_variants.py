"""The SAM stage's other models behind ``SamSegmenter``'s interface (``segment``, ``segment_logits``,
``model_tag``, ``equalize``): MedSAM and SAM 2.1, and ``make_segmenter`` choosing by family.

MedSAM follows its published inference (bowang-lab/MedSAM ``MedSAM_Inference.py``): the slice squashed
to 1024 x 1024 (bicubic; the script uses skimage's order-3 resize with anti-aliasing, here torch's
antialiased bicubic), truncated to uint8, min-max scaled to [0, 1] over the image, encoded without
SAM's mean/std or padding; prompts scaled by 1024/W, 1024/H; single-mask output; the 256 x 256
low-resolution probabilities (sigmoid) resized bilinearly to the slice, > 0.5. MedSAM was trained with
box prompts only (its prompt encoder frozen): CLISC's point prompts reach the point embeddings SAM
learnt, which MedSAM never adapted; ``box+points`` gives MedSAM both (docs/FOUNDATION_MODELS.md).

SAM 2.1 runs sam2's own ``SAM2ImagePredictor`` (``set_image_batch`` + ``predict_batch`` with points
and box, ``multimask_output=False``, logits at the slice's size); its image features are not cached
(``sam.embedding_cache`` applies to the SAM and MedSAM encoders).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clisc.compute import autocast, check_precision
from clisc.foundation.sam import SAM_ARCHS
from clisc.stages.prompts import SamPrompt
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter, logits_canvas, prepare_slice

PROBABILITY_EPS = 1e-6  # MedSAM thresholds probabilities at 0.5; logits are returned as logit(p)


class SquareResize:
    """The MedSAM / SAM 2 geometry: an ``HxW`` image squashed to ``size x size`` (no aspect kept,
    no padding), coordinates scaled per axis. Same methods as segment_anything's ``ResizeLongestSide``."""

    def __init__(self, size: int):
        self.target_length = size

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``HxWx3`` uint8 -> ``SxSx3`` uint8 (antialiased bicubic, clipped, truncated as the script's astype)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        out = F.interpolate(tensor, size=(self.target_length,) * 2, mode="bicubic", align_corners=False,
                            antialias=True)
        return out[0].permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``...x2`` (x, y) pixel coordinates of an ``HxW`` image -> the ``SxS`` frame."""
        h, w = original_size
        return np.asarray(coords, dtype=float) * np.array([self.target_length / w, self.target_length / h])

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``Bx4`` (x0, y0, x1, y1) -> the ``SxS`` frame (``box / [W, H, W, H] * S``)."""
        return self.apply_coords(np.asarray(boxes, dtype=float).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def get_preprocess_shape(self, h: int, w: int, target: int) -> tuple[int, int]:
        return target, target


def min_max_unit(batch: torch.Tensor) -> torch.Tensor:
    """``Bx3xSxS`` pixels -> each image min-max scaled to [0, 1] over all its channels (MedSAM's input)."""
    flat = batch.reshape(batch.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-8)
    return (batch - low) / span


class MedSamSegmenter(SamSegmenter):
    """``SamSegmenter`` with MedSAM's input normalisation, geometry and mask upsampling (module doc)."""

    def __init__(self, sam, *args, **kwargs):
        super().__init__(sam, *args, **kwargs)
        self.transform = SquareResize(sam.image_encoder.img_size)

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return min_max_unit(batch)

    def _upsample(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        probs = F.interpolate(torch.sigmoid(low_res), size=original_size, mode="bilinear", align_corners=False)
        return torch.logit(probs[:, 0], eps=PROBABILITY_EPS)


class Sam2Segmenter:
    """SAM 2.1 over 2D slices through sam2's ``SAM2ImagePredictor``, one prompt set per slice."""

    def __init__(self, model: torch.nn.Module, batch_size: int = 8, equalize: bool = False,
                 device: str | torch.device = "cpu", model_tag: str = "sam2", precision: str = "fp32",
                 max_slices: int | None = None):
        from clisc.foundation.sam2_models import image_predictor

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_precision(precision, device, "sam.precision")
        self.device = torch.device(device)
        self.predictor = image_predictor(model.to(self.device).eval())
        self.batch_size, self.equalize, self.precision = batch_size, equalize, precision
        self.mask_threshold = float(self.predictor.mask_threshold)
        self._model_tag = model_tag
        if max_slices is not None and max_slices < 1:
            raise ValueError(f"max_slices must be >= 1 or None, got {max_slices}")
        self.max_slices = max_slices

    key_tag = SamSegmenter.key_tag

    @property
    def model_tag(self) -> str:
        return self._model_tag if self.precision == "fp32" else f"{self._model_tag}-{self.precision}"

    @torch.inference_mode()
    def _batch_logits(self, images: list[np.ndarray], prompts: list[SamPrompt]) -> np.ndarray:
        with autocast(self.device, self.precision):
            self.predictor.set_image_batch(images)
        points = [p.points if p.has_points else None for p in prompts]
        labels = [p.point_labels if p.has_points else None for p in prompts]
        boxes = [p.box for p in prompts]
        masks, _, _ = self.predictor.predict_batch(points, labels, boxes, multimask_output=False, return_logits=True)
        return np.stack([m[0] for m in masks]).astype(np.float32)

    def segment_logits(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """Mask logits ``NxHxW`` float32 for ``N`` same-shaped ``HxW`` slices; -inf where no prompt."""
        logits, prompted = logits_canvas(slices, prompts, self.max_slices)
        for start in tqdm(range(0, len(prompted), self.batch_size), desc="SAM 2", unit="batch", disable=None,
                          leave=False):
            chunk = prompted[start:start + self.batch_size]
            images = [prepare_slice(slices[i], self.equalize) for i in chunk]
            logits[chunk] = self._batch_logits(images, [prompts[i] for i in chunk])  # type: ignore[misc]
        return logits

    def segment(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """Masks ``NxHxW`` bool (logits > the predictor's threshold, 0); empty where the prompt is None."""
        return self.segment_logits(slices, prompts) > self.mask_threshold


def make_segmenter(arch: str, model: torch.nn.Module, batch_size: int, equalize: bool,
                   cache: EmbeddingCache | None, device: str | torch.device, model_tag: str,
                   precision: str = "fp32", max_slices: int | None = None) -> SamSegmenter | Sam2Segmenter:
    """The segmenter of ``arch``'s family (``clisc.foundation.sam.SAM_ARCHS``) around a built model."""
    family = SAM_ARCHS[arch].family
    if family == "sam2":
        return Sam2Segmenter(model, batch_size, equalize, device, model_tag, precision, max_slices)
    cls = MedSamSegmenter if family == "medsam" else SamSegmenter
    return cls(model, batch_size, equalize, cache, device, model_tag=model_tag, precision=precision,
               max_slices=max_slices)
