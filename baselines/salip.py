"""SaLIP (Aleem et al., "Test-time adaptation with SaLIP: a cascade of SAM and CLIP for zero-shot
medical image segmentation", CVPR-W 2024; code aleemsidra/SaLIP @ 94815e9, read for its 3D path
``sam_clip_3d.py`` and the crop scoring of ``sam_clip.py``).

Per slice: SAM's automatic mask generator proposes regions -> regions larger than
``max_area_fraction`` of the slice are dropped (``sam_clip.py``'s area filter) -> each region is cut
out as a masked crop (the region's pixels, zero elsewhere, cropped to its box) -> CLIP scores every
crop against the mean embedding of ``prompts`` (``100 x cosine``) -> the best crop's box prompts SAM
for one mask (``multimask_output=False``). No training.

Departures (also in docs/DEPARTURES.md):
- Which slices get a mask: ``baselines.salip.slices`` (``baselines/slice_gate.py``); the original's
  3D path segments every slice (``all``). A slice whose regions are all filtered out stays empty
  (the original would crash on an empty crop list).
- Generator settings are fixed a priori (label-free): 32 points per side, predicted-IoU and stability
  thresholds 0.5 (values of the original's search grids; SAM's own 0.88 / 0.95 are tuned for natural
  images), its NMS thresholds 0.9 and one crop layer. The original picks them by a random search
  scored with ground-truth Dice on test images ("test-time adaptation"): ``tta_on_gt`` runs that
  search, seeded, on validation volumes (a ground-truth use).
- ``min_mask_region_area`` is applied by ``clean_regions`` (scipy) after the generator instead of by
  segment_anything's OpenCV post-processing (OpenCV is not a dependency); the generator's second NMS
  after that clean-up is not re-run.
- The crops reach CLIP squashed to its input size (``ClipModel.normalise_images``) rather than
  through CLIP's resize + centre crop, like every CLIP input of this project.
- SAM and CLIP see the project's 2D model input (``clisc.stages.slice_input``: background black, brain
  min-max scaled; ``prepare_slice``: 8 bits, 3 channels; histogram-equalised only with SaLIP's own
  ``equalize``, off: its code has none, CLISC's ``sam.equalize`` never reaches it) and SAM's output is
  kept inside the brain, as for CLISC's SAM stages.

Embeddings: the generator's predictor is a ``CachedPredictor`` whose full-slice image embedding comes
from the pipeline's ``SamSegmenter`` (its batched encoder and embedding cache), and the final box
prompt is decoded by the same segmenter, so each slice is encoded once for both passes. The crop
layers' images (sub-windows upscaled to SAM's input) are encoded by the predictor itself, uncached.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from tqdm import tqdm

from baselines.settings import SalipSettings
from baselines.slice_gate import method_clip, slices_to_segment
from clisc.data.preprocessing import Volume
from clisc.errors import CliscError
from clisc.foundation.clip import ClipModel
from clisc.pipeline.context import RunContext
from clisc.pipeline.steps_cam import labelled_volumes
from clisc.pipeline.steps_seg import per_case_stage, segmenter
from clisc.stages.prompts import SamPrompt
from clisc.stages.pseudo_labels import SamSegmenter, prepare_slice
from clisc.stages.slice_input import axial_slices, brain_of, model_input_volume, volume_from_slices

# The random search of the original's 3D path (sam_mask_generator_params in sam_clip_3d.py): points
# per side 16, 32 or 64 (here half, once and twice ``points_per_side``, which is 32 by default, so
# that the small profiles search a small grid), and these thresholds.
TTA_POINTS_FACTORS = (0.5, 1.0, 2.0)
TTA_GRID: dict[str, tuple] = {
    "pred_iou_thresh": (0.2, 0.5, 0.8, 0.9),
    "stability_score_thresh": (0.2, 0.5, 0.8, 0.95),
}


def tta_grid(settings: SalipSettings) -> dict[str, tuple]:
    """The search grid of ``adapt_on_gt`` (the original's for the default ``points_per_side``)."""
    points = tuple(max(1, int(round(settings.points_per_side * f))) for f in TTA_POINTS_FACTORS)
    return {"points_per_side": points, **TTA_GRID}


class CachedPredictor(SamPredictor):
    """A ``SamPredictor`` that takes the embedding of a full slice (shape ``full_shape``) from a
    ``SamSegmenter`` (cache lookup or its encoder) instead of running the encoder itself; images of
    another shape (the generator's crop layers) are encoded as usual."""

    def __init__(self, segmenter: SamSegmenter):
        super().__init__(segmenter.sam)
        self.segmenter = segmenter
        self.full_shape: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if image.shape[:2] != self.full_shape:
            super().set_image(image, image_format)
            return
        self.reset_image()
        self.original_size = image.shape[:2]
        self.input_size = self.transform.get_preprocess_shape(*image.shape[:2], self.transform.target_length)
        self.features = self.segmenter.embed([np.ascontiguousarray(image)])[0][None]
        self.is_image_set = True


class CropSafeMaskGenerator(SamAutomaticMaskGenerator):
    """segment_anything's generator, except that a crop keeping no mask records its crop boxes as an
    empty ``0x4`` tensor: upstream makes it ``torch.tensor([])`` (shape ``0``), and with crop layers
    (the published ``crop_n_layers=1``) a slice on which no crop keeps a mask then fails in
    ``box_area`` (IndexError) instead of giving no region."""

    def _process_crop(self, *args: Any, **kwargs: Any):
        data = super()._process_crop(*args, **kwargs)
        if len(data["rles"]) == 0:
            data["crop_boxes"] = torch.zeros((0, 4))
        return data


def mask_generator(segmenter: SamSegmenter, settings: SalipSettings) -> SamAutomaticMaskGenerator:
    """SAM's automatic mask generator with ``settings``' parameters and a ``CachedPredictor``; SAM
    ViT-B/L/H only (MedSAM's and SAM 2.1's inputs differ from what the generator feeds)."""
    if type(segmenter) is not SamSegmenter:
        raise CliscError("SaLIP runs segment_anything's automatic mask generator: set sam.model to vit_b, "
                         "vit_l or vit_h")
    generator = CropSafeMaskGenerator(
        segmenter.sam,
        points_per_side=settings.points_per_side,
        points_per_batch=settings.points_per_batch,
        pred_iou_thresh=settings.pred_iou_thresh,
        stability_score_thresh=settings.stability_score_thresh,
        box_nms_thresh=settings.box_nms_thresh,
        crop_n_layers=settings.crop_n_layers,
        crop_nms_thresh=settings.crop_nms_thresh,
        crop_n_points_downscale_factor=settings.crop_n_points_downscale_factor,
        min_mask_region_area=0,  # applied by clean_regions (segment_anything's needs OpenCV)
        output_mode="binary_mask",
    )
    generator.predictor = CachedPredictor(segmenter)
    return generator


def _drop_small(mask: np.ndarray, min_area: int, keep_largest: bool) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_area`` pixels (with
    ``keep_largest``, the largest stays when all are small)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes >= min_area
    if keep_largest and not keep.any():
        keep[np.argmax(sizes)] = True
    return np.concatenate([[False], keep])[labels]


def clean_regions(records: list[dict[str, Any]], min_area: int) -> list[dict[str, Any]]:
    """The generator's ``min_mask_region_area`` rule: in each region, holes and islands smaller than
    ``min_area`` pixels are filled / removed (the largest island stays); boxes (XYWH, inclusive
    extremes as segment_anything's) and areas are recomputed; regions left empty are dropped."""
    if min_area <= 0:
        return records
    cleaned = []
    for record in records:
        mask = np.asarray(record["segmentation"], bool)
        mask = ~_drop_small(~mask, min_area, keep_largest=False)  # fill small holes
        mask = _drop_small(mask, min_area, keep_largest=True)  # remove small islands
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        x0, y0 = int(cols.min()), int(rows.min())
        bbox = [x0, y0, int(cols.max()) - x0, int(rows.max()) - y0]
        cleaned.append({**record, "segmentation": mask, "bbox": bbox, "area": int(rows.size)})
    return cleaned


def area_filter(records: list[dict[str, Any]], shape: tuple[int, int], max_fraction: float) -> list[dict[str, Any]]:
    """The regions whose area is below ``max_fraction`` of an ``HxW`` slice (``sam_clip.py``'s rule)."""
    limit = max_fraction * shape[0] * shape[1]
    return [r for r in records if r["area"] < limit]


def masked_crops(image: np.ndarray, records: list[dict[str, Any]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(crops, boxes)``: for each region with a non-degenerate box, the ``HxWx3`` uint8 image times
    the region's mask cut to the box ``image[y:y+h, x:x+w]`` (as the original), and its SAM box
    ``[x, y, x+w, y+h]`` (x = column)."""
    crops, boxes = [], []
    for record in records:
        x, y, w, h = (int(round(v)) for v in record["bbox"])
        if w <= 0 or h <= 0:
            continue
        masked = image * np.asarray(record["segmentation"], bool)[:, :, None]
        crops.append(np.ascontiguousarray(masked[y:y + h, x:x + w]))
        boxes.append(np.array([x, y, x + w, y + h], dtype=np.float64))
    return crops, boxes


@torch.no_grad()
def prompt_embedding(clip: ClipModel, prompts: tuple[str, ...] | list[str]) -> torch.Tensor:
    """``D`` L2-normalised mean of the prompts' raw text embeddings (the original's ensembling)."""
    tokens = clip.tokenizer(list(prompts)).to(clip.device)
    mean = clip.model.encode_text(tokens).float().mean(dim=0)
    return mean / mean.norm()


@torch.no_grad()
def crop_scores(clip: ClipModel, crops: list[np.ndarray], text: torch.Tensor) -> np.ndarray:
    """``N`` scores ``100 x cosine(crop, text)`` of ``N`` ``hxwx3`` uint8 crops against a ``D`` text
    embedding; each crop is squashed to CLIP's input size."""
    if not crops:
        return np.zeros(0, np.float32)
    batch = torch.cat([
        clip.normalise_images(torch.from_numpy(c).permute(2, 0, 1)[None].float() / 255.0) for c in crops
    ])
    features = clip.model.encode_image(batch, normalize=True).float()
    return (100.0 * features @ text.to(features.device)).cpu().numpy()


def best_box(prepared: np.ndarray, generator: SamAutomaticMaskGenerator, clip: ClipModel, text: torch.Tensor,
             settings: SalipSettings) -> np.ndarray | None:
    """SaLIP's box for one prepared ``HxWx3`` uint8 slice: the box of the region CLIP scores highest
    among the generator's regions that survive clean-up and the area filter; None when none does."""
    predictor = generator.predictor
    if isinstance(predictor, CachedPredictor):
        predictor.full_shape = prepared.shape[:2]
    records = clean_regions(generator.generate(prepared), settings.min_mask_region_area)
    records = area_filter(records, prepared.shape[:2], settings.max_area_fraction)
    crops, boxes = masked_crops(prepared, records)
    if not crops:
        return None
    return boxes[int(np.argmax(crop_scores(clip, crops, text)))]


def salip_volume(image: np.ndarray, brain: np.ndarray, gate: np.ndarray, sam: SamSegmenter,
                 generator: SamAutomaticMaskGenerator, clip: ClipModel, text: torch.Tensor, settings: SalipSettings,
                 progress: bool = False, label: str = "") -> np.ndarray:
    """SaLIP's ``XxYxZ`` bool mask of a volume ``XxYxZ`` with its brain mask: slices with ``gate[z]``
    get SAM's mask for their best box (inside the brain); the others stay empty."""
    inputs = model_input_volume(image, brain)
    slices = list(axial_slices(inputs))  # each YxX, the display layout
    prompts: list[SamPrompt | None] = [None] * len(slices)
    for z in tqdm(np.flatnonzero(gate), desc=f"SaLIP {label}".strip(), unit="slice", disable=not progress,
                  leave=False):
        box = best_box(prepare_slice(slices[z], sam.equalize), generator, clip, text, settings)
        if box is not None:
            prompts[z] = SamPrompt(box=box, points=np.zeros((0, 2)), point_labels=np.zeros(0, np.int64))
    if not any(p is not None for p in prompts):
        return np.zeros(image.shape, bool)
    return volume_from_slices(sam.segment(slices, prompts)) & brain


def _slice_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of one slice, 1 when both are empty (the original's ``dice_coeff`` convention)."""
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * (pred & truth).sum() / total)


def adapt_on_gt(ctx: RunContext, settings: SalipSettings) -> tuple[str, SalipSettings]:
    """The original's test-time adaptation, a ground-truth use: ``tta_iterations`` random draws from
    ``tta_grid(settings)``, each scored by the mean slice Dice against the ground truth on ``tta_slices``
    evenly spaced slices of ``tta_volumes`` random validation volumes (seeded by the run's seed);
    returns ``settings`` with the best draw's generator parameters."""
    sam, clip = segmenter(ctx, settings.equalize), method_clip(ctx, settings.clip_arch)
    gate_key, gates = slices_to_segment(ctx, "valid", settings.slices, settings.clip_arch, "salip")

    def compute(out: Path) -> None:
        rng = np.random.default_rng(ctx.seed)
        volumes = labelled_volumes(ctx, "valid", "baselines.salip.tta_on_gt")
        chosen = [volumes[i] for i in rng.choice(len(volumes), min(settings.tta_volumes, len(volumes)), replace=False)]
        text = prompt_embedding(clip, settings.prompts)
        best, best_score, trials = None, -1.0, []
        for _ in range(settings.tta_iterations):
            draw = {key: values[rng.integers(len(values))] for key, values in tta_grid(settings).items()}
            trial = dataclasses.replace(settings, **draw)
            generator = mask_generator(sam, trial)
            scores = []
            for volume in chosen:
                depth = volume.image.shape[2]
                spacing = max(depth // settings.tta_slices, 1)
                zs = np.arange(spacing, depth, spacing)
                gate = np.zeros(depth, bool)
                gate[zs] = gates[volume.case_id][zs]
                pred = salip_volume(volume.image, brain_of(volume), gate, sam, generator, clip, text, trial)
                scores.append(np.mean([_slice_dice(pred[:, :, z], volume.label[:, :, z] > 0) for z in zs]))
            score = float(np.mean(scores))
            trials.append({**{k: float(v) for k, v in draw.items()}, "dice": score})
            if score > best_score:
                best, best_score = draw, score
        (out / "tta.json").write_text(json.dumps({"best": best, "trials": trials}, default=float))

    def load(path: Path) -> dict:
        return json.loads((path / "tta.json").read_text())["best"]

    stage_settings = {"salip": settings, "seed": ctx.seed, "model": sam.key_tag}
    key, best = ctx.stage("salip_tta", stage_settings, [ctx.volumes_key, gate_key], compute, load)
    draw = {k: type(getattr(settings, k))(v) for k, v in best.items()}
    return key, dataclasses.replace(settings, **draw)


def segment(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """SaLIP's output on ``split``: one mask per case (cached per case)."""
    settings = ctx.settings.baselines.salip
    sam, clip = segmenter(ctx, settings.equalize), method_clip(ctx, settings.clip_arch)
    inputs = []
    if settings.tta_on_gt:
        tta_key, settings = adapt_on_gt(ctx, settings)
        inputs.append(tta_key)
    gate_key, gates = slices_to_segment(ctx, split, settings.slices, settings.clip_arch, "salip")
    generator = mask_generator(sam, settings)
    text = prompt_embedding(clip, settings.prompts)

    def run(volume: Volume) -> np.ndarray:
        return salip_volume(volume.image, brain_of(volume), gates[volume.case_id], sam, generator, clip, text,
                            settings, ctx.progress, volume.case_id)

    stage_settings = {"split": split, "salip": settings, "model": sam.key_tag, "clip": clip.record.tag}
    return per_case_stage(ctx, "salip", stage_settings, [gate_key, ctx.volumes_key, *inputs],
                          ctx.volumes(split), run)
