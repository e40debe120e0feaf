"""Which axial slices the 2D foundation-model baselines (SaLIP, MedCLIP-SAM) segment at all.

Both originals work on 2D images that all show their target, and SaLIP's 3D path segments every slice
of a volume; on BraTS most slices hold no tumour, so a 3D port has to decide which slices get a mask.
``baselines.<method>.slices`` chooses:

- ``clip`` (default, label-free): the slices that CLISC's stage-1 zero-shot labelling
  (``clisc.stages.slice_labels.label_volume``, its two prompts) calls tumour, with the baselines'
  own labelling rule (``baselines.zero_shot``: the paper's argmax under every protocol, see
  :func:`zero_shot_rule`) and the baseline's OWN CLIP (SaLIP: ViT-B/32; MedCLIP-SAM: BiomedCLIP);
- ``all``: every brain slice (SaLIP's 3D path as published);
- ``ground_truth``: the slices holding tumour in the segmentation (a ground-truth use: the originals'
  setting, where every test image contains the target).

Every other slice is empty. The CLIP labels are a cached stage per split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clisc.errors import CliscError
from clisc.foundation.clip import OFFLINE_ARCHS, ClipModel
from clisc.pipeline.context import RunContext, load_arrays, save_arrays
from clisc.pipeline.models import TINY, load_clip_cached
from clisc.pipeline.settings import GROUND_TRUTH
from clisc.pipeline.steps_cam import brain_slices, gt_slice_labels, labelled_volumes
from clisc.stages.pseudo_labels import capped
from clisc.stages.slice_input import brain_of
from clisc.stages.slice_labels import SliceLabelSettings, label_volume


def clip_arch_of(ctx: RunContext, arch: str) -> str:
    """The CLIP a baseline runs: its own ``arch``, the tiny one under ``foundation.size=tiny``, or the
    hub-free stand-in of a hub-only ``arch`` under ``foundation.offline`` (random weights only)."""
    fs = ctx.settings.foundation
    if fs.size == TINY:
        return TINY
    if fs.offline:
        if fs.weights != "random":
            raise CliscError(f"foundation.offline=true builds random weights only, not foundation.weights={fs.weights}")
        return OFFLINE_ARCHS.get(arch, arch)
    return arch


def method_clip(ctx: RunContext, arch: str) -> ClipModel:
    """A baseline's CLIP (shared, loaded once per process); its weights are recorded with the run."""
    clip = load_clip_cached(clip_arch_of(ctx, arch), ctx.settings.foundation.weights, ctx.device)
    ctx.weights[clip.record.name] = clip.record.tag
    return clip


def zero_shot_rule(ctx: RunContext) -> SliceLabelSettings:
    """The baselines' zero-shot labelling rule: ``baselines.zero_shot`` (never CLISC's
    ``slice_labels`` choices, which its ``official`` protocol sets to the public code's), with
    CLISC's compute settings (``slice_labels.batch_size``, ``.precision``)."""
    s = ctx.settings
    own = s.baselines.zero_shot
    return SliceLabelSettings(min_confidence=own.min_confidence, z_smoothing=own.z_smoothing,
                              pil_truncation=own.pil_truncation, batch_size=s.slice_labels.batch_size,
                              precision=s.slice_labels.precision)


def zero_shot_labels(ctx: RunContext, split: str, arch: str) -> tuple[str, dict[str, np.ndarray]]:
    """CLISC's stage-1 labels of every slice of ``split`` with CLIP ``arch`` and the baselines' rule
    (:func:`zero_shot_rule`): ``Z`` int8 per case (1 tumour, 0 normal, -1 dropped by a confidence
    filter, when ``baselines.zero_shot.min_confidence`` asks for one)."""
    s = ctx.settings
    name = clip_arch_of(ctx, arch)
    rule = zero_shot_rule(ctx)

    def compute(out: Path) -> None:
        clip = method_clip(ctx, arch)
        labels = {v.case_id: label_volume(clip, v.image, rule, brain_of(v))
                  for v in ctx.volumes(split)}
        save_arrays(out / "labels.npz", labels)
        (out / "weights.json").write_text(json.dumps({clip.record.name: clip.record.tag}))

    def load(path: Path) -> dict[str, np.ndarray]:
        ctx.weights.update(json.loads((path / "weights.json").read_text()))
        return load_arrays(path / "labels.npz")

    settings = {"split": split, "clip": name, "weights": s.foundation.weights, "labels": rule}
    return ctx.stage("zero_shot_labels", settings, [ctx.volumes_key], compute, load)


def slices_to_segment(ctx: RunContext, split: str, gate: str, arch: str, method: str = "baselines"
                      ) -> tuple[str, dict[str, np.ndarray]]:
    """``(key, {case_id: Z bool})``: the slices of each volume of ``split`` that get a mask (``method``
    names the setting in the one-line error when the ground-truth gate finds a case without labels),
    at most ``sam.max_slices`` of them per volume (evenly spaced, ``capped``): the per-slice work
    before SAM (mask generator, saliency) is then capped with SAM's."""
    key, gates = _gates(ctx, split, gate, arch, method)
    cap = ctx.settings.sam.max_slices
    if cap is None:
        return key, gates
    out = {}
    for case, gate_z in gates.items():
        kept = np.zeros_like(gate_z, dtype=bool)
        kept[capped(np.flatnonzero(gate_z).tolist(), cap)] = True
        out[case] = kept
    return f"{key}-max{cap}slices", out


def _gates(ctx: RunContext, split: str, gate: str, arch: str, method: str) -> tuple[str, dict[str, np.ndarray]]:
    if gate == "clip":
        key, labels = zero_shot_labels(ctx, split, arch)
        return key, {case: lab == 1 for case, lab in labels.items()}
    if gate == GROUND_TRUTH:
        volumes = labelled_volumes(ctx, split, f"baselines.{method}.slices=ground_truth")
    else:
        volumes = ctx.volumes(split)
    gates = {}
    for volume in volumes:
        gate_z = np.zeros(volume.image.shape[2], bool)
        if gate == GROUND_TRUTH:
            gate_z = gt_slice_labels(volume).astype(bool)
        else:  # "all"
            gate_z[brain_slices(volume)] = True
        gates[volume.case_id] = gate_z
    return f"slices-{gate}-{split}-{ctx.volumes_key}", gates
