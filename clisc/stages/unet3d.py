"""3D U-Net stage: build, train on (pseudo-)labels, predict whole volumes.

Paper (section 3.1): a 3D U-Net (Cicek et al.) with 128^3 input, four down/up-samplings, channels
(16, 32, 64, 128, 256), SGD lr 0.01, batch 2, 400 epochs. Public code (METHOD.md section 3): random
rot90/flip of the whole volume, then a random 128^3 crop at native resolution (``unet_augment``), cross-entropy only, momentum 0.9, weight decay
1e-4, poly decay (power 0.9) per iteration, checkpoint chosen on ground-truth validation Dice, and
inference by resizing the whole volume to 128^3 and back.

Volumes are ``XxYxZ`` numpy arrays (images float32, labels uint8 0/1); torch batches ``BxCxXxYxZ``.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clisc.cache import atomic_write_bytes, stable_hash
from clisc.compute import as_channels_last, autocast, channels_last, check_precision, grad_scaler
from clisc.errors import DataError
from clisc.evaluation.metrics import dice
from clisc.stages.unet_augment import AUGMENTATIONS, patch_transform
from clisc.stages.unet_official import ACTIVATIONS, OfficialUNet3D
from clisc.stages.unet_recipe import (SegmentationLoss, class_labels, first_sample, postprocess, resolve,
                                      test_time_predictor)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "unet_training.pt"
NUM_CLASSES = 2


@dataclass(frozen=True)
class UNetSettings:
    """How the 3D U-Net is built, trained and applied (defaults: the paper / public code)."""

    network: str = "monai"  # "monai" | "official" (port of the public code's unet_3D)
    activation: str = "relu"  # "relu" (Cicek, the code) | "leakyrelu" (slope 0.01, MONAI's DynUNet default)
    augmentation: str = "axial"  # "axial" (crop, then axial rot90 + independent flips) | "official" (see unet_augment)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    patch_size: tuple[int, int, int] = (128, 128, 128)
    batch_size: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    epochs: int = 400
    iterations_per_epoch: int | None = None  # None: one pass over the training volumes
    inference: str = "sliding"  # "sliding" | "resize" (the code's whole-volume resize)
    sw_overlap: float = 0.5
    select_on_gt_validation: bool = False  # official: keep the epoch with the best validation Dice
    precision: str = "fp32"  # CUDA autocast of training and inference: "fp32" | "bf16" | "fp16" (+ GradScaler)
    channels_last: bool = False  # NDHWC model and batches (channels_last_3d)
    loader_workers: int | None = None  # processes loading + augmenting volumes; None: 0 on CPU, up to 4 on CUDA
    # the training recipe (clisc.stages.unet_recipe): "paper" | "nnunet_like"; each ingredient below, when
    # not None, replaces the recipe's value
    recipe: str = "paper"
    foreground_fraction: float | None = None  # share of patches centred on a label voxel (paper 0: random)
    augment: str | None = None  # "flips" (paper: rot90 + flips) | "intensity" (+ intensity) | "nnunet" (+ affine too)
    loss: str | None = None  # "ce" (paper) | "dice_ce"
    deep_supervision: int | None = None  # lower-resolution outputs added to the loss (paper 0)
    postprocess: str | None = None  # of predicted masks: "none" (paper) | "largest_component" | "drop_small"
    test_time: str | None = None  # inference: "none" (paper) | "flips" (softmax averaged over X/Y mirrorings)

    def __post_init__(self) -> None:
        resolve(self)  # refuses an unknown recipe or ingredient value
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}")


def build_unet(settings: UNetSettings, out_channels: int = NUM_CLASSES, deep_supervision: bool = True) -> nn.Module:
    """A 3D U-Net ``Bx1xXxYxZ -> Bx{out_channels}xXxYxZ`` (logits: 2 classes unless a caller predicts
    more, e.g. Sim2Real's layers); X, Y, Z divisible by 2^(levels-1).

    "monai": ``monai.networks.nets.DynUNet`` in Cicek's layout: one level per width, two 3x3x3
    conv-InstanceNorm-activation per level, the first level at full resolution, down-sampling by a
    stride-2 convolution (Cicek: max-pool), transposed-convolution up-sampling + concatenation.
    "official": the public code's network (:class:`OfficialUNet3D`): max-pool down, trilinear up,
    dropout 0.3. Both use ``settings.activation`` (ReLU, or LeakyReLU of slope 0.01). With the recipe's
    ``deep_supervision`` n > 0 (and ``deep_supervision`` True; "monai" only) the training-mode output is
    DynUNet's ``Bx(1+n)x{out_channels}xXxYxZ`` stack (lower-resolution heads upsampled to the input); in
    eval mode it is the full-resolution logits as without.
    """
    heads = resolve(settings).deep_supervision if deep_supervision else 0
    if settings.network == "monai":
        levels = len(settings.channels)
        if heads > levels - 2:
            raise ValueError(f"deep_supervision {heads} needs more than {levels} levels")
        act = ("relu", {"inplace": True}) if settings.activation == "relu" else \
            ("leakyrelu", {"inplace": True, "negative_slope": 0.01})
        return DynUNet(spatial_dims=3, in_channels=1, out_channels=out_channels, kernel_size=[3] * levels,
                       strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1),
                       filters=list(settings.channels), norm_name="instance", act_name=act, res_block=False,
                       deep_supervision=heads > 0, deep_supr_num=max(1, heads))
    if heads:
        raise ValueError("deep_supervision needs unet.network=monai")
    if settings.network == "official":
        return OfficialUNet3D(in_channels=1, out_channels=out_channels, channels=settings.channels,
                              activation=settings.activation)
    raise ValueError(f"unknown network {settings.network!r}; expected 'monai' or 'official'")


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for one epoch (or one item of an epoch: ``epoch_seed(epoch seed, item)``), so its
    draws do not depend on the epochs (items) before it."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _batch_order(n_volumes: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """``steps x batch_size`` volume indices: concatenated random permutations of the volumes."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(n_volumes) for _ in range(math.ceil(needed / n_volumes))])
    return order[:needed].reshape(steps, batch_size)


class PatchDataset(Dataset):
    """Augmented training patches for epochs ``first_epoch .. settings.epochs - 1``, in training order.

    Item ``k`` is slot ``k % batch_size`` of step ``k // batch_size`` (steps run on across epochs):
    the volume :func:`_batch_order` puts there, loaded on access from ``images``/``labels`` (any
    sequences, e.g. volumes read lazily from the preprocessed cache), padded, cropped and augmented by
    :func:`~clisc.stages.unet_augment.patch_transform` (``settings.augmentation`` and the recipe) seeded with (epoch seed, step,
    slot). An item depends on
    nothing else, so any number of DataLoader workers gives the same batches. Returns an image
    ``1xPxPxP`` float32 and a label ``PxPxP`` int64.
    """

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], settings: UNetSettings,
                 seed: int, steps: int, first_epoch: int = 0):
        self.images, self.labels, self.settings = images, labels, settings
        self.seed, self.steps, self.first_epoch = seed, steps, first_epoch
        self.transform = patch_transform(settings)
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, steps x batch volume indices)

    def __len__(self) -> int:
        return (self.settings.epochs - self.first_epoch) * self.steps * self.settings.batch_size

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = self.settings.batch_size
        step, slot = divmod(int(k), batch_size)
        epoch, step = self.first_epoch + step // self.steps, step % self.steps
        this_epoch = epoch_seed(self.seed, epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, _batch_order(len(self.images), self.steps, batch_size, this_epoch))
        i = int(self._order[1][step, slot])
        self.transform.set_random_state(seed=epoch_seed(this_epoch, step * batch_size + slot))
        sample = first_sample(self.transform({"image": np.asarray(self.images[i], np.float32)[None],
                                              "label": np.asarray(self.labels[i], np.uint8)[None]}))
        return (torch.as_tensor(np.asarray(sample["image"]), dtype=torch.float32),
                torch.as_tensor(np.asarray(sample["label"]), dtype=torch.int64)[0])


def loader_workers(settings: UNetSettings, device: str | torch.device) -> int:
    """``settings.loader_workers``, or when None: 0 on a CPU (the CPU trains), else up to 4 of the
    host's cores (volumes are decompressed, cropped and augmented while the GPU trains)."""
    if settings.loader_workers is not None:
        return settings.loader_workers
    return 0 if torch.device(device).type != "cuda" else max(1, min(4, (os.cpu_count() or 2) - 1))


def patch_loader(dataset: Dataset, settings: UNetSettings, device: torch.device) -> DataLoader:
    """Batches of ``dataset`` in its order, by :func:`loader_workers` processes (pinned for CUDA)."""
    workers = loader_workers(settings, device)
    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)


def _fingerprint(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], settings: UNetSettings,
                 seed: int, with_validation: bool) -> str:
    """Checks the pairs (equal ``XxYxZ`` shapes, at least one) in one pass, loading each volume once,
    and returns what identifies a training run, so that a checkpoint is only resumed by the same run."""
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images (and at least one): {len(images)} vs {len(labels)}")
    content = []
    for i in range(len(images)):
        img, lab = np.asarray(images[i]), np.asarray(labels[i])
        if img.shape != lab.shape or img.ndim != 3:
            raise ValueError(f"volume {i}: image {img.shape} and label {lab.shape} must be equal XxYxZ")
        content.append((tuple(img.shape), float(img.astype(np.float64).sum()), int((lab > 0).sum())))
    return stable_hash({"settings": result_settings(settings), "seed": seed, "data": content,
                        "validation": with_validation})


def result_settings(settings: UNetSettings) -> dict:
    """The settings that make a trained network, as a dict: all but the loader workers and how its
    predictions are made and post-processed (the prediction stages key those: :func:`prediction_settings`).
    ``postprocess`` stays in, as "none", and ``test_time`` is left out, so networks keep the keys they had
    before ``test_time`` existed."""
    fields = dataclasses.asdict(dataclasses.replace(settings, loader_workers=None, postprocess="none"))
    return {k: v for k, v in fields.items() if k != "test_time"}


def prediction_settings(settings: UNetSettings) -> dict:
    """What, beside the trained network and the volumes, makes :func:`predict_volume`'s output: the key
    settings of every U-Net prediction stage."""
    recipe = resolve(settings)
    return {"inference": settings.inference, "overlap": settings.sw_overlap, "precision": settings.precision,
            "channels_last": settings.channels_last, "postprocess": recipe.postprocess,
            **({"test_time": recipe.test_time} if recipe.test_time != "none" else {})}


def check_patch(settings: UNetSettings, axial_rotation: bool | None = None) -> None:
    """Refuse a patch size the network cannot halve ``levels - 1`` times, or one an axial rot90 of the
    patch cannot turn (``axial_rotation``; default: ``augmentation == "axial"``; the official recipe
    turns the whole volume before cropping, so any patch fits it)."""
    factor = 2 ** (len(settings.channels) - 1)
    if any(p % factor for p in settings.patch_size):
        raise ValueError(f"patch_size {settings.patch_size} must be divisible by {factor}")
    if axial_rotation is None:
        axial_rotation = settings.augmentation == "axial"
    if axial_rotation and settings.patch_size[0] != settings.patch_size[1]:
        raise ValueError(f"patch_size {settings.patch_size}: X and Y must match for axial rot90")


def poly_lr_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 base_lr: float, iteration: int, max_iterations: int, power: float) -> None:
    """One optimiser step at the poly learning rate ``base_lr * (1 - iteration / max_iterations) ** power``
    (nnU-Net's schedule, the code's), through ``scaler`` (:func:`clisc.compute.grad_scaler`: active for fp16)."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * (1.0 - iteration / max_iterations) ** power
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_unet(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], settings: UNetSettings, seed: int,
               device: str | torch.device = "cpu",
               val: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
               progress: bool = True, checkpoint_dir: Path | None = None,
               on_epoch_end: Callable[[int, float], None] | None = None,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> nn.Module:
    """Train a 3D U-Net on ``XxYxZ`` float32 images and ``XxYxZ`` uint8 labels; returns it in eval mode.

    Each step draws ``batch_size`` volumes (a fresh random permutation per pass), crops a
    ``patch_size`` patch of each (see :func:`~clisc.stages.unet_recipe.training_transform`), and takes one SGD step on the
    recipe's loss (:class:`~clisc.stages.unet_recipe.SegmentationLoss`) with lr ``lr * (1 - it / max_it) ** poly_power``. All randomness (weights,
    order, augmentation, dropout) derives from ``seed`` and the epoch number, so training is
    deterministic on CPU and resuming gives the same result as not stopping.

    With ``settings.select_on_gt_validation`` and ``val`` (images, ground-truth labels) the weights
    of the epoch with the best mean validation Dice are returned (the public code's ground-truth use;
    it validates every 200 iterations, here after every epoch); otherwise those of the last epoch.
    With ``checkpoint_dir``, model, optimiser, epoch and best weights are written atomically after
    every epoch and training resumes from them when present. ``on_epoch(epoch, {"loss": mean loss[,
    "val_dice": ...]})`` (epochs count from 1) is called before that save, so a record it keeps is never
    behind the checkpoint; ``on_epoch_end(epoch, mean_loss)`` is called after it.
    """
    check_patch(settings)
    device = torch.device(device)
    check_precision(settings.precision, device, "unet.precision")
    select = settings.select_on_gt_validation and val is not None
    fingerprint = _fingerprint(images, labels, settings, seed, select)
    if select:
        _fingerprint(*val, settings, seed, False)
    steps = settings.iterations_per_epoch or math.ceil(len(images) / settings.batch_size)
    max_iterations = settings.epochs * steps
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = channels_last(build_unet(settings).to(device), settings.channels_last, dims=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                    weight_decay=settings.weight_decay)
        scaler = grad_scaler(device, settings.precision)
        state = {"epoch": 0, "best_dice": -1.0, "best_model": None}
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        if checkpoint is not None and checkpoint.exists():
            state = _load_checkpoint(checkpoint, fingerprint, model, optimizer, scaler, device)
            log.info("resuming U-Net training from %s after epoch %d", checkpoint, state["epoch"])
        loss_fn = SegmentationLoss(resolve(settings))
        batches = iter(patch_loader(PatchDataset(images, labels, settings, seed, steps, state["epoch"]),
                                     settings, device))
        epochs = tqdm(range(state["epoch"], settings.epochs), desc="3D U-Net", disable=not progress,
                      initial=state["epoch"], total=settings.epochs)
        for epoch in epochs:
            model.train()
            torch.manual_seed(epoch_seed(seed, epoch))
            losses = []
            for step in range(steps):
                image_batch, label_batch = next(batches)
                image_batch = as_channels_last(image_batch.to(device, non_blocking=True), settings.channels_last)
                with autocast(device, settings.precision):
                    loss = loss_fn(model(image_batch), label_batch.to(device, non_blocking=True))
                poly_lr_step(loss, optimizer, scaler, settings.lr, epoch * steps + step, max_iterations,
                             settings.poly_power)
                losses.append(float(loss.detach()))
            mean_loss = float(np.mean(losses))
            state["epoch"] = epoch + 1
            metrics = {"loss": mean_loss}
            if select:
                val_dice = metrics["val_dice"] = float(np.mean([dice(predict_volume(model, img, settings, device), lab)
                                                                 for img, lab in zip(*val)]))
                if val_dice > state["best_dice"]:
                    state["best_dice"] = val_dice
                    state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                log.info("epoch %d: loss %.4f, validation Dice %.4f", epoch + 1, mean_loss, val_dice)
            else:
                log.info("epoch %d: loss %.4f", epoch + 1, mean_loss)
            epochs.set_postfix(loss=f"{mean_loss:.4f}")
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, fingerprint, model, optimizer, scaler, state)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, mean_loss)
    if select and state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    return model.eval()


def _save_checkpoint(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, state: dict) -> None:
    """Write model, optimiser, loss scale and progress so that a reader sees the old or the whole new file."""
    buffer = io.BytesIO()
    torch.save({"fingerprint": fingerprint, "epoch": state["epoch"], "best_dice": state["best_dice"],
                "best_model": state["best_model"], "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, device: torch.device) -> dict:
    """Restore model, optimiser and loss scale from ``path``; the run's progress is returned."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file: the user must remove it
        raise DataError(path, f"unreadable U-Net checkpoint ({error.__class__.__name__}); delete it to restart") from error
    if saved.get("fingerprint") != fingerprint:
        raise DataError(path, "checkpoint belongs to another training run (settings, seed or data differ); "
                              "delete it or use another checkpoint_dir")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    return {"epoch": int(saved["epoch"]), "best_dice": float(saved["best_dice"]), "best_model": saved["best_model"]}


def predict_volume(model: nn.Module, image: np.ndarray, settings: UNetSettings,
                   device: str | torch.device = "cpu", threshold: float = 0.5) -> np.ndarray:
    """Label map ``XxYxZ`` uint8 (argmax of the two classes, or tumour probability > ``threshold``) of an
    ``XxYxZ`` float32 image.

    "sliding": MONAI sliding-window inference, window ``patch_size``, overlap ``sw_overlap``, gaussian
    blending (a volume smaller than the window is padded). "resize": the public code's
    ``test_single_volume``: ``scipy.ndimage.zoom`` of the whole image to ``patch_size`` with order 0
    (nearest, as the code does for the image too), one forward pass, and order-0 zoom of the label
    map back to the image's shape. The recipe's ``test_time`` "flips" averages the softmax of the X/Y
    mirrored inputs in each window (:func:`~clisc.stages.unet_recipe.test_time_predictor`). Then the
    recipe's ``postprocess`` (:func:`~clisc.stages.unet_recipe.postprocess`).
    """
    device = torch.device(device)
    check_precision(settings.precision, device, "unet.precision")
    was_training = model.training
    model.eval()
    image = np.asarray(image, dtype=np.float32)
    recipe = resolve(settings)

    def network(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, settings.precision):
            return model(as_channels_last(batch, settings.channels_last)).float()

    forward = test_time_predictor(network, recipe)

    with torch.no_grad():
        if settings.inference == "sliding":
            tensor = torch.from_numpy(image)[None, None].to(device)
            logits = sliding_window_inference(tensor, roi_size=settings.patch_size, sw_batch_size=settings.batch_size,
                                              predictor=forward, overlap=settings.sw_overlap, mode="gaussian")
            prediction = class_labels(torch.as_tensor(logits), recipe, threshold)[0].cpu().numpy().astype(np.uint8)
        elif settings.inference == "resize":
            factors = [p / s for p, s in zip(settings.patch_size, image.shape)]
            small = ndi.zoom(image, factors, order=0)
            logits = forward(torch.from_numpy(small)[None, None].to(device))
            small_labels = class_labels(logits, recipe, threshold)[0].cpu().numpy().astype(np.uint8)
            back = [s / p for s, p in zip(image.shape, small_labels.shape)]
            prediction = ndi.zoom(small_labels, back, order=0)
        else:
            raise ValueError(f"unknown inference {settings.inference!r}; expected 'sliding' or 'resize'")
    model.train(was_training)
    if prediction.shape != image.shape:
        raise RuntimeError(f"prediction {prediction.shape} does not match image {image.shape}")
    return postprocess(prediction, recipe)
