"""Table 1's Sim2Real row: stage 1 of Zhang et al., "Self-supervised tumor segmentation with sim2real
adaptation" (JBHI 2023; public code xiaoman-zhang/Layer-Decomposition, ``BT_CODE/train.py``).

A 3D U-Net learns to segment synthetic tumours (``baselines.tumour_simulator``: a fresh tumour pasted
into a training volume for every sample) and is applied to the real test volumes (sliding window,
argmax, inside the brain). As the code, the network also predicts the two layers the input is made
of (the tumour-free "normal" volume and the tumour layer) with L1 losses on the whole patch and
inside the tumour (``baselines.sim2real.layer_decomposition``); the mask is learned with Dice + cross
entropy on two softmax classes (the code: Dice on one sigmoid channel).

Where it departs from the paper and the code (``docs/DEPARTURES.md``, baselines):

* **host volumes**: the paper pastes into healthy brains (OASIS). BraTS has none: the training
  volumes are the hosts, so their real tumours would be taught as background. With
  ``host_slices=healthy`` (default, the spirit of the paper) the voxels outside the synthetic tumour
  count in the loss only on the slices ``baselines.healthy_source`` calls tumour-free: CLIP's normal
  slices (``clip``, label-free) or the segmentation's (``ground_truth``, a GT switch);
  ``host_slices=healthy_strict`` drops those slices altogether, synthetic tumour included (the
  default's kept tumour voxels without their background raise the tumour's share of the loss);
  ``host_slices=ground_truth`` (a GT switch) drops only the segmentation's tumour grown by
  ``host_margin_mm``, so the normal tissue beside and around the real tumour is taught as background
  too (the slice rules leave out the middle of the brain, where the simulator pastes, in most
  volumes); ``host_slices=all`` pastes into the volumes as they are.
* **training**: the ``unet`` settings' network, batch and poly schedule (CLISC's U-Net, so the rows
  differ by their training data) with ``baselines.sim2real.optimizer`` (``sgd``:
  the ``unet`` settings'; ``adam``: the code's Adam), for ``baselines.sim2real.epochs`` epochs (the
  code: Adam 1e-2 with ReduceLROnPlateau, 500 epochs with early stopping on the training loss, its
  own U-Net). Patches of ``baselines.sim2real.patch_size`` (default: ``unet.patch_size``; one that
  holds the whole cropped brain is the code's view) with random axial rot90 / flips
  (``augment=intensity`` adds nnU-Net's intensity augmentation of the input; the code has none), a
  share ``tumour_crop`` centred on the synthetic tumour (the code resizes the whole brain to 128^3, so
  its tumour is always in view); the last epoch is kept (the code keeps the best test Dice).
* **inference**: ``baselines.sim2real.inference``: sliding window on the preprocessed grid
  (default; the code resizes the brain to 128^3: ``resize``), masked to the brain; Sim2Real's own
  setting, so CLISC's ``unet.inference`` (``resize`` in its ``official`` protocol) never reaches it.
  ``threshold`` (0.5: the code's argmax) and ``test_time`` (``flips``: nnU-Net's mirroring) are its
  own too.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from baselines.healthy import healthy_slices
from baselines.settings import Sim2RealSettings
from baselines.tumour_simulator import simulate_tumour
from clisc.cache import atomic_write_bytes
from clisc.compute import as_channels_last, autocast, channels_last, check_precision, grad_scaler
from clisc.data.preprocessing import Volume
from clisc.errors import DataError
from clisc.pipeline.context import RunContext
from clisc.pipeline.curves import HISTORY_FILE, EpochRecorder, read_history
from clisc.pipeline.settings import GROUND_TRUTH
from clisc.pipeline.steps_cam import labelled_volumes
from clisc.pipeline.steps_seg import per_case_stage
from clisc.stages.slice_input import brain_of
from clisc.stages.unet_recipe import augment_intensity
from clisc.stages.unet3d import (NUM_CLASSES, UNetSettings, build_unet, check_patch, epoch_seed, patch_loader,
                                 poly_lr_step, predict_volume, prediction_settings, result_settings)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "sim2real_training.pt"
LAYERS = 2  # extra output channels with layer decomposition: normal layer, tumour layer


HostRegion = np.ndarray | None  # healthy slices ``Z'`` int, healthy voxels ``XxYxZ`` bool, or None (all)


def loss_weight(shape: tuple[int, int, int], tumour: np.ndarray, healthy_z: HostRegion,
                keep_tumour: bool = True) -> np.ndarray:
    """``XxYxZ`` float32 weight of each voxel in the loss: 1 on the ``healthy_z`` slices (all slices
    when None) and, with ``keep_tumour``, inside the synthetic ``tumour`` ``XxYxZ``; 0 elsewhere (real
    tumour may be there). ``healthy_z`` may instead be an ``XxYxZ`` bool mask of the voxels that count
    (:func:`host_voxels`): 1 there, synthetic tumour or not, 0 elsewhere."""
    if healthy_z is None:
        return np.ones(shape, np.float32)
    if healthy_z.dtype == bool:
        if healthy_z.shape != tuple(shape):
            raise ValueError(f"healthy voxel mask {healthy_z.shape} does not match the volume {tuple(shape)}")
        return healthy_z.astype(np.float32)
    weight = np.zeros(shape, np.float32)
    weight[:, :, np.asarray(healthy_z, int)] = 1.0
    if keep_tumour:
        weight[tumour] = 1.0
    return weight


def host_voxels(label: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """``XxYxZ`` bool: the voxels farther than ``margin_mm`` from the segmentation's tumour (``label``
    ``XxYxZ``, > 0 is tumour); all of them when it has none."""
    tumour = np.asarray(label) > 0
    if not tumour.any():
        return np.ones(tumour.shape, bool)
    return ndimage.distance_transform_edt(~tumour, sampling=spacing) > margin_mm


def _patch(arrays: list[np.ndarray], tumour: np.ndarray, patch: tuple[int, int, int], tumour_crop: float,
           rng: np.random.Generator) -> list[np.ndarray]:
    """The same patch of every ``[C]xXxYxZ`` array: zero-padded to ``patch``, cropped (centred on a
    random ``tumour`` voxel with probability ``tumour_crop``, else anywhere), rotated k x 90 degrees
    in the axial plane (k uniform in 0..3) and flipped in x and y (probability 1/2 each)."""
    shape = tumour.shape
    pads = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for p, n in zip(patch, shape)]
    padded = [np.pad(a, [(0, 0)] * (a.ndim - 3) + pads) for a in arrays]
    full = [n + lo + hi for n, (lo, hi) in zip(shape, pads)]
    if rng.random() < tumour_crop and tumour.any():
        voxels = np.argwhere(tumour)
        centre = voxels[rng.integers(len(voxels))] + [lo for lo, _ in pads]
        starts = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, full)]
    else:
        starts = [int(rng.integers(0, n - p + 1)) for p, n in zip(patch, full)]
    box = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    k, flip_x, flip_y = int(rng.integers(4)), rng.random() < 0.5, rng.random() < 0.5
    out = []
    for a in padded:
        a = np.rot90(a[(...,) + box], k, axes=(-3, -2))
        if flip_x:
            a = np.flip(a, axis=-3)
        if flip_y:
            a = np.flip(a, axis=-2)
        out.append(np.ascontiguousarray(a))
    return out


class SyntheticTumourPatches(Dataset):
    """Training patches with a fresh synthetic tumour each, for epochs ``first_epoch ..
    settings.epochs - 1`` (``steps`` x ``batch_size`` items an epoch).

    Item ``k`` draws from a generator seeded by (seed, epoch, step, slot) only: a host volume (uniform
    over ``volumes``, as the code's ``random.randint``), a tumour (:func:`simulate_tumour`) and a patch
    (:func:`_patch`), so any number of DataLoader workers gives the same batches. Returns image
    ``1xPxPxP`` float32, label ``PxPxP`` int64, loss weight ``PxPxP`` float32 (:func:`loss_weight`),
    layers ``2xPxPxP`` float32 (the host volume, the tumour layer).
    """

    def __init__(self, volumes: Sequence[Volume], healthy_z: Sequence[HostRegion], settings: Sim2RealSettings,
                 unet: UNetSettings, seed: int, steps: int, first_epoch: int = 0):
        if len(volumes) == 0 or len(volumes) != len(healthy_z):
            raise ValueError(f"need one healthy-slice entry per volume (and a volume): "
                             f"{len(volumes)} vs {len(healthy_z)}")
        self.volumes, self.healthy_z, self.settings, self.unet = volumes, healthy_z, settings, unet
        self.seed, self.steps, self.first_epoch = seed, steps, first_epoch

    def __len__(self) -> int:
        return (self.settings.epochs - self.first_epoch) * self.steps * self.unet.batch_size

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        step, slot = divmod(int(k), self.unet.batch_size)
        epoch, step = self.first_epoch + step // self.steps, step % self.steps
        rng = np.random.default_rng([self.seed, epoch, step, slot])
        i = int(rng.integers(len(self.volumes)))
        volume = self.volumes[i]
        brain = brain_of(volume)
        sim = simulate_tumour(volume.image, brain, volume.spacing, self.settings, rng)
        weight = loss_weight(volume.image.shape, sim.mask, self.healthy_z[i],
                             keep_tumour=self.settings.host_slices != "healthy_strict")
        image, label, weight, layers = _patch(
            [sim.image[None], sim.mask.astype(np.int64), weight, np.stack([volume.image, sim.tumour_layer])],
            sim.mask, self.unet.patch_size, self.settings.tumour_crop, rng)
        if self.settings.augment == "intensity":
            image = augment_intensity(image, int(rng.integers(2 ** 31)))
        return (torch.from_numpy(image.astype(np.float32)), torch.from_numpy(label),
                torch.from_numpy(weight), torch.from_numpy(layers.astype(np.float32)))


def sim2real_loss(output: torch.Tensor, label: torch.Tensor, weight: torch.Tensor,
                  layers: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a batch and its parts: ``output`` ``BxCxXxYxZ`` (2 class logits, then with ``layers``
    the normal and tumour layers), ``label`` ``BxXxYxZ`` int64, ``weight`` ``BxXxYxZ`` (voxels of weight
    0 do not count), ``layers`` ``Bx2xXxYxZ`` targets or None.

    Weighted cross entropy + soft Dice of the tumour class over the batch (1 - (2 I + e) / (P + T + e));
    with layers, as the code: L1 of each layer over the weighted voxels plus L1 of each layer inside
    the tumour (when the batch has one).
    """
    weight = weight.float()
    total_weight = weight.sum().clamp(min=1.0)
    logits = output[:, :NUM_CLASSES].float()
    ce = (F.cross_entropy(logits, label, reduction="none") * weight).sum() / total_weight
    tumour_p, target = torch.softmax(logits, dim=1)[:, 1] * weight, (label == 1).float() * weight
    eps = 1e-5
    dice = 1.0 - (2.0 * (tumour_p * target).sum() + eps) / (tumour_p.sum() + target.sum() + eps)
    loss, parts = ce + dice, {"ce": float(ce.detach()), "dice_loss": float(dice.detach())}
    if layers is not None:
        predicted = output[:, NUM_CLASSES:NUM_CLASSES + LAYERS].float()
        error = (predicted - layers).abs()  # Bx2xXxYxZ
        l1 = (error * weight[:, None]).sum() / (total_weight * LAYERS)
        inside = target > 0
        if inside.any():
            l1 = l1 + error.permute(1, 0, 2, 3, 4)[:, inside].mean(dim=1).sum()
        loss, parts["l1_layers"] = loss + l1, float(l1.detach())
    return loss, parts


class TumourLogits(nn.Module):
    """The two class logits ``Bx2xXxYxZ`` of a network that also predicts layers (for inference)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, :NUM_CLASSES]


def build_network(settings: Sim2RealSettings, unet: UNetSettings) -> nn.Module:
    """The ``unet`` settings' 3D U-Net with 2 class logits (+ 2 layers with ``layer_decomposition``)."""
    return build_unet(unet, NUM_CLASSES + (LAYERS if settings.layer_decomposition else 0), deep_supervision=False)


def build_optimizer(model: nn.Module, settings: Sim2RealSettings, unet: UNetSettings) -> torch.optim.Optimizer:
    """``settings.optimizer``: the ``unet`` settings' SGD, or the code's Adam (at ``unet.lr``, with its
    weight decay); the poly schedule then sets the learning rate of every step."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=unet.lr, weight_decay=unet.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=unet.lr, momentum=unet.momentum, weight_decay=unet.weight_decay)


def train_sim2real(volumes: Sequence[Volume], healthy_z: Sequence[HostRegion], settings: Sim2RealSettings,
                   unet: UNetSettings, seed: int, device: str | torch.device = "cpu", progress: bool = True,
                   checkpoint_dir: Path | None = None, run_id: str = "",
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> nn.Module:
    """Train the network on synthetic tumours in ``volumes``; returns it in eval mode.

    ``steps = settings.iterations_per_epoch`` (or one pass over the volumes) optimiser steps per epoch
    (:func:`build_optimizer`) with ``unet``'s lr and poly decay. Deterministic given ``seed`` on a CPU. With
    ``checkpoint_dir`` model, optimiser and epoch are written atomically after every epoch (tagged
    ``run_id``) and training resumes from them; ``on_epoch(epoch, {"loss": ..., parts})`` is called
    before that save.
    """
    check_patch(unet, axial_rotation=True)  # its own axial rot90 of the patch
    device = torch.device(device)
    check_precision(unet.precision, device, "unet.precision")
    steps = settings.iterations_per_epoch or math.ceil(len(volumes) / unet.batch_size)
    max_iterations = settings.epochs * steps
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = channels_last(build_network(settings, unet).to(device), unet.channels_last, dims=3)
        optimizer = build_optimizer(model, settings, unet)
        scaler = grad_scaler(device, unet.precision)
        first_epoch = 0
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        if checkpoint is not None and checkpoint.exists():
            first_epoch = _load_checkpoint(checkpoint, run_id, model, optimizer, scaler, device)
            log.info("resuming Sim2Real training from %s after epoch %d", checkpoint, first_epoch)
        batches = iter(patch_loader(SyntheticTumourPatches(volumes, healthy_z, settings, unet, seed, steps, first_epoch),
                                    unet, device))
        bar = tqdm(range(first_epoch, settings.epochs), desc="Sim2Real U-Net", disable=not progress,
                   initial=first_epoch, total=settings.epochs)
        for epoch in bar:
            model.train()
            torch.manual_seed(epoch_seed(seed, epoch))
            rows = []
            for step in range(steps):
                image, label, weight, layers = (t.to(device, non_blocking=True) for t in next(batches))
                with autocast(device, unet.precision):
                    output = model(as_channels_last(image, unet.channels_last))
                loss, parts = sim2real_loss(output, label, weight, layers if settings.layer_decomposition else None)
                poly_lr_step(loss, optimizer, scaler, unet.lr, epoch * steps + step, max_iterations, unet.poly_power)
                rows.append({"loss": float(loss.detach()), **parts})
            metrics = {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
            log.info("epoch %d: %s", epoch + 1, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            if checkpoint is not None:
                buffer = io.BytesIO()
                torch.save({"run_id": run_id, "epoch": epoch + 1, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, buffer)
                atomic_write_bytes(checkpoint, buffer.getvalue())
    return model.eval()


def _load_checkpoint(path: Path, run_id: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, device: torch.device) -> int:
    """Restore a checkpoint of the same run; returns the number of finished epochs."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file: the user must remove it
        raise DataError(path, f"unreadable Sim2Real checkpoint ({error.__class__.__name__}); "
                              "delete it to restart") from error
    if saved.get("run_id") != run_id:
        raise DataError(path, "checkpoint belongs to another Sim2Real training run; delete it to restart")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    return int(saved["epoch"])


def segment_volume(network: nn.Module, volume: Volume, unet: UNetSettings, device: str | torch.device,
                   threshold: float = 0.5) -> np.ndarray:
    """Tumour mask ``XxYxZ`` bool of a volume: ``unet.inference`` (sliding window by default) of the
    class logits, argmax (or tumour probability > ``threshold``), inside the brain."""
    labels = predict_volume(TumourLogits(network), volume.image, unet, device, threshold)
    return labels.astype(bool) & brain_of(volume)


def sim2real_unet(ctx: RunContext) -> UNetSettings:
    """The ``unet`` settings Sim2Real trains and predicts with: no checkpoint choice on labels, its
    own ``inference``, ``test_time`` and ``patch_size`` when set (not CLISC's ``unet.inference`` /
    ``unet.test_time``) and its own patch augmentation (axial rot90 / flips of its patches, whatever
    CLISC's ``unet.augmentation``)."""
    settings, unet = ctx.settings.baselines.sim2real, ctx.settings.unet
    return dataclasses.replace(unet, select_on_gt_validation=False, inference=settings.inference,
                               test_time=settings.test_time, augmentation=UNetSettings.augmentation,
                               patch_size=tuple(settings.patch_size) or unet.patch_size)


# recipe ingredients of the supervised U-Net's training that Sim2Real's does not read: it crops, augments
# (:func:`_patch`) and weighs its loss (:func:`sim2real_loss`) itself, with no deep supervision
UNREAD_RECIPE = {"foreground_fraction": None, "augment": None, "loss": None, "deep_supervision": None}


def training_key(unet: UNetSettings) -> dict:
    """The U-Net settings that key a trained network: not how it is applied, nor the loader workers, nor
    the recipe ingredients Sim2Real's training does not read (:data:`UNREAD_RECIPE`, keyed as unset)."""
    read = dataclasses.replace(unet, **UNREAD_RECIPE)
    return {k: v for k, v in result_settings(read).items() if k not in ("inference", "sw_overlap")}


def network_inputs(ctx: RunContext) -> tuple[dict, list[str], Callable[[], list[HostRegion]]]:
    """What keys the Sim2Real network (settings, input keys) and, called when it is trained, the host
    region of each training volume (:func:`loss_weight`'s ``healthy_z``)."""
    settings = ctx.settings.baselines.sim2real
    volumes = ctx.volumes("train")
    inputs = [ctx.volumes_key]
    if settings.host_slices == GROUND_TRUTH:
        volumes = labelled_volumes(ctx, "train", "baselines.sim2real.host_slices=ground_truth")
        inputs.append(f"host-voxels-gt-{ctx.volumes_key}")

        def hosts() -> list[HostRegion]:
            return [host_voxels(v.label, v.spacing, settings.host_margin_mm) for v in volumes]
    elif settings.host_slices != "all":
        healthy_key, healthy = healthy_slices(ctx)
        inputs.append(healthy_key)

        def hosts() -> list[HostRegion]:
            return [healthy[c] for c in volumes.case_ids]
    else:
        def hosts() -> list[HostRegion]:
            return [None] * len(volumes)
    # training never infers (inference, threshold, test_time); the margin is read only with
    # host_slices=ground_truth; the augmentation is keyed only when not the code's flips (earlier keys unchanged);
    # the patch size is keyed as the unet's (sim2real_unet)
    unread = ({"inference", "threshold", "test_time", "patch_size"}
              | ({"host_margin_mm"} if settings.host_slices != GROUND_TRUTH else set())
              | ({"augment"} if settings.augment == "flips" else set()))
    training = {k: v for k, v in dataclasses.asdict(settings).items() if k not in unread}
    return {"sim2real": training, "unet": training_key(sim2real_unet(ctx)), "seed": ctx.seed}, inputs, hosts


def trained_network(ctx: RunContext) -> tuple[str, nn.Module]:
    """The cached Sim2Real network trained on the training split (resumable per epoch)."""
    settings = ctx.settings.baselines.sim2real
    unet = sim2real_unet(ctx)
    key_settings, inputs, hosts = network_inputs(ctx)
    key = ctx.key("sim2real_network", key_settings, inputs)

    def compute(out: Path) -> None:
        volumes = ctx.volumes("train")
        scratch = ctx.scratch("sim2real_network", key)
        curve = EpochRecorder(scratch / HISTORY_FILE)
        model = train_sim2real(volumes, hosts(), settings, unet, ctx.seed, ctx.device, ctx.progress,
                               checkpoint_dir=scratch, run_id=key, on_epoch=curve)
        curve.write(out / HISTORY_FILE)
        torch.save(model.state_dict(), out / "model.pt")

    def load(path: Path) -> nn.Module:
        ctx.histories["sim2real_network"] = read_history(path / HISTORY_FILE)
        model = build_network(settings, unet)
        model.load_state_dict(torch.load(path / "model.pt", map_location=ctx.device, weights_only=True))
        return model.to(ctx.device).eval()

    return ctx.stage("sim2real_network", key_settings, inputs, compute, load)


def segment(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """The method's output on ``split``: the trained network's mask of each case (cached per case)."""
    network_key, network = trained_network(ctx)
    unet = sim2real_unet(ctx)
    threshold = ctx.settings.baselines.sim2real.threshold

    def run(volume: Volume) -> np.ndarray:
        return segment_volume(network, volume, unet, ctx.device, threshold)

    # the threshold is keyed only when it is not the argmax's 0.5 (earlier keys unchanged)
    settings = {"split": split, **prediction_settings(unet), **({"threshold": threshold} if threshold != 0.5 else {})}
    return per_case_stage(ctx, "sim2real", settings, [network_key, ctx.volumes_key], ctx.volumes(split), run)
