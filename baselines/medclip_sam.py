"""MedCLIP-SAM (Koleilat et al., "MedCLIP-SAM: bridging text and image towards universal medical image
segmentation", MICCAI 2024; code HealthX-Lab/MedCLIP-SAM @ 61af7dc, read for ``saliency_maps/``,
``crf/densecrf_sal.py`` and ``segment-anything/prompt_sam.py``).

Per slice: BiomedCLIP's gScoreCAM saliency for the text prompt (``baselines/gscorecam.py``: last ViT
block, top 300 channels by gradient, softmaxed channel scores) -> dense CRF, one iteration
(``baselines/crf.py``) -> the box of the largest region prompts SAM (box only, one mask). Options:
``finetune`` fine-tunes the CLIP first with DHN-NCE (``baselines/dhn_nce.py``) on the training
slices, captioned by their zero-shot CLIP label (tumour: the saliency prompt; normal: CLISC's normal
prompt); ``weak_supervision`` trains the project's 3D U-Net on the training volumes' MedCLIP-SAM
masks and predicts with it (the original trains a 2D network on its 2D pseudo-masks).

Departures (also in docs/DEPARTURES.md):
- Which slices get a mask: ``baselines.medclip_sam.slices`` (``baselines/slice_gate.py``); the
  original segments 2D images that all show a tumour. An empty CRF mask leaves the slice empty.
- The text prompt: the original asks the user; ``text_prompts`` defaults to the first brain-tumour
  prompt of the authors' follow-up code.
- Slices reach CLIP as the project's 2D model input (``clisc.stages.slice_input``: background black,
  brain min-max scaled) in 8 bits, squashed to its input size (the original reads 8-bit images
  through BiomedCLIP's resize + centre crop); the CRF sees the same 8-bit slice. Histogram
  equalisation only with MedCLIP-SAM's own ``equalize`` (off: its code has none; CLISC's
  ``sam.equalize`` never reaches it).
- SAM's mask is kept inside the brain, as for CLISC's SAM stages.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from baselines.crf import dense_crf, largest_region_box
from baselines.dhn_nce import finetune_clip
from baselines.gscorecam import gscorecam
from baselines.settings import MedClipSamSettings
from baselines.slice_gate import method_clip, slices_to_segment, zero_shot_labels
from clisc.data.preprocessing import Volume
from clisc.foundation.clip import ClipModel
from clisc.pipeline.context import RunContext
from clisc.pipeline.steps_cam import brain_slices
from clisc.pipeline.steps_seg import per_case_stage, predictions, segmenter, train_network
from clisc.stages.prompts import SamPrompt
from clisc.stages.pseudo_labels import SamSegmenter, prepare_slice
from clisc.stages.slice_input import axial_slices, brain_of, model_input_volume, volume_from_slices
from clisc.stages.slice_labels import NORMAL_PROMPT


@torch.no_grad()
def text_embedding(clip: ClipModel, prompts: tuple[str, ...] | list[str]) -> torch.Tensor:
    """``D`` L2-normalised mean of the prompts' normalised embeddings."""
    mean = clip.encode_text(list(prompts)).float().mean(dim=0)
    return mean / mean.norm()


def saliency_box(prepared: np.ndarray, clip: ClipModel, text: torch.Tensor, settings: MedClipSamSettings
                 ) -> np.ndarray | None:
    """MedCLIP-SAM's SAM box for one prepared ``HxWx3`` uint8 slice (gScoreCAM -> CRF -> largest
    region), or None when the CRF keeps nothing."""
    image = torch.from_numpy(prepared).permute(2, 0, 1)[None].float() / 255.0
    saliency = gscorecam(clip, image, text, settings.saliency_channels, settings.saliency_batch_size,
                         out_size=prepared.shape[:2])
    mask = dense_crf(prepared, saliency.cam, settings.crf_iterations, settings.crf_gaussian_sxy,
                     settings.crf_bilateral_sxy, settings.crf_bilateral_srgb, settings.crf_tau,
                     settings.crf_epsilon)
    return largest_region_box(mask)


def medclip_volume(image: np.ndarray, brain: np.ndarray, gate: np.ndarray, sam: SamSegmenter, clip: ClipModel,
                   text: torch.Tensor, settings: MedClipSamSettings, progress: bool = False, label: str = ""
                   ) -> np.ndarray:
    """MedCLIP-SAM's ``XxYxZ`` bool mask of a volume ``XxYxZ`` with its brain mask: slices with
    ``gate[z]`` get SAM's mask for their saliency box (inside the brain); the others stay empty."""
    inputs = model_input_volume(image, brain)
    slices = list(axial_slices(inputs))  # each YxX, the display layout
    prompts: list[SamPrompt | None] = [None] * len(slices)
    for z in tqdm(np.flatnonzero(gate), desc=f"MedCLIP-SAM {label}".strip(), unit="slice", disable=not progress,
                  leave=False):
        box = saliency_box(prepare_slice(slices[z], sam.equalize), clip, text, settings)
        if box is not None:
            prompts[z] = SamPrompt(box=box, points=np.zeros((0, 2)), point_labels=np.zeros(0, np.int64))
    if not any(p is not None for p in prompts):
        return np.zeros(image.shape, bool)
    return volume_from_slices(sam.segment(slices, prompts)) & brain


def finetuned_clip(ctx: RunContext, settings: MedClipSamSettings) -> tuple[str, ClipModel]:
    """The CLIP fine-tuned with DHN-NCE on every ``slices.stride``-th training brain slice that the
    zero-shot labels keep (a cached stage, checkpointed every epoch)."""
    base = method_clip(ctx, settings.clip_arch)
    labels_key, labels = zero_shot_labels(ctx, "train", settings.clip_arch)
    captions_by_label = {1: settings.text_prompts[0], 0: NORMAL_PROMPT}
    train = {k: v for k, v in dataclasses.asdict(settings).items() if k.startswith(("finetune", "dhn_"))}
    stage_settings = {"finetune": train, "captions": captions_by_label, "stride": ctx.settings.slices.stride,
                      "seed": ctx.seed, "equalize": settings.equalize, "clip": base.record.tag}
    key = ctx.key("medclip_finetune", stage_settings, [labels_key])

    def compute(out: Path) -> None:
        images, groups = [], []
        for volume in ctx.volumes("train"):
            zs = brain_slices(volume)[:: ctx.settings.slices.stride]
            zs = zs[labels[volume.case_id][zs] >= 0]
            inputs = axial_slices(model_input_volume(volume.image, brain_of(volume), zs))  # NxYxX
            for i, z in enumerate(zs):
                images.append(prepare_slice(inputs[i], settings.equalize))
                groups.append(int(labels[volume.case_id][z]))
        model = finetune_clip(
            base, images, [captions_by_label[g] for g in groups], np.asarray(groups),
            epochs=settings.finetune_epochs, batch_size=settings.finetune_batch_size, lr=settings.finetune_lr,
            weight_decay=settings.finetune_weight_decay, warmup_steps=settings.finetune_warmup_steps,
            temperature=settings.dhn_temperature, beta1=settings.dhn_beta1, beta2=settings.dhn_beta2,
            seed=ctx.seed, checkpoint_dir=ctx.scratch("medclip_finetune", key), progress=ctx.progress, log=ctx.echo)
        torch.save(model.state_dict(), out / "clip.pt")

    def load(path: Path) -> ClipModel:
        model = copy.deepcopy(base.model)
        model.load_state_dict(torch.load(path / "clip.pt", map_location=base.device, weights_only=True))
        return dataclasses.replace(base, model=model.eval())

    return ctx.stage("medclip_finetune", stage_settings, [labels_key], compute, load)


def masks(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """The zero-shot MedCLIP-SAM masks of ``split`` (cached per case)."""
    settings = ctx.settings.baselines.medclip_sam
    sam = segmenter(ctx, settings.equalize)
    clip = method_clip(ctx, settings.clip_arch)
    inputs = []
    if settings.finetune:
        clip_key, clip = finetuned_clip(ctx, settings)
        inputs.append(clip_key)
    gate_key, gates = slices_to_segment(ctx, split, settings.slices, settings.clip_arch, "medclip_sam")
    text = text_embedding(clip, settings.text_prompts)

    def run(volume: Volume) -> np.ndarray:
        return medclip_volume(volume.image, brain_of(volume), gates[volume.case_id], sam, clip, text, settings,
                              ctx.progress, volume.case_id)

    saliency = {k: v for k, v in dataclasses.asdict(settings).items()
                if not k.startswith(("finetune_", "dhn_")) and k != "weak_supervision"}
    stage_settings = {"split": split, "medclip_sam": saliency, "model": sam.key_tag, "clip": clip.record.tag}
    return per_case_stage(ctx, "medclip_sam", stage_settings, [gate_key, ctx.volumes_key, *inputs],
                          ctx.volumes(split), run)


def segment(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """MedCLIP-SAM's output on ``split``: its zero-shot masks, or with ``weak_supervision`` the
    predictions of the 3D U-Net trained on the training volumes' masks."""
    if not ctx.settings.baselines.medclip_sam.weak_supervision:
        return masks(ctx, split)
    train_key, train_masks = masks(ctx, "train")
    network = train_network(ctx, "medclip_sam_unet", [train_key], lambda: train_masks)
    return predictions(ctx, network, split)
