"""Stage 2: the slice classifier trained on CLIP labels (paper section 3.1, METHOD.md section 3).

Adam, cross-entropy, shuffled batches, class 1 = tumour. Paper: 200 epochs, constant lr 1e-4, the
last epoch is kept. Official code: StepLR(7, 0.1), 400 epochs, the epoch with the best accuracy on
ground-truth-labelled validation slices is kept (``select_on_gt_validation``, a ground-truth use).
The model itself comes from ``clisc.foundation.resnet.build_resnet50(head=settings.head)``.
"""
from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clisc.compute import as_channels_last, autocast, channels_last, check_precision, grad_scaler, prefetch
from clisc.stages.slice_input import model_input_slices
from clisc.stages.slice_labels import resize_slices

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "step")


@dataclass(frozen=True)
class ClassifierSettings:
    """Training settings; paper defaults. ``head`` is handed to ``build_resnet50`` by the caller."""

    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    input_size: int = 224
    head: str = "paper"
    schedule: str = "constant"
    select_on_gt_validation: bool = False
    precision: str = "fp32"  # training autocast on CUDA: "fp32" | "bf16" | "fp16" (+ GradScaler)
    channels_last: bool = False  # NHWC model and batches (faster convolutions on CUDA tensor cores)
    # schedule length: at most this many batches per epoch (None: one pass over the slices, the paper)
    iterations_per_epoch: int | None = None


def slices_to_input(slices: np.ndarray, input_size: int, brain: np.ndarray | None = None) -> torch.Tensor:
    """Classifier input ``Nx3xSxS`` float32 in [0, 1] from slices ``NxHxW`` and their brain mask
    ``NxHxW`` bool: ``model_input_slices`` (black background, min-max per slice), bilinear resize
    to SxS, 3 identical channels (the code: no mean/std normalisation)."""
    return resize_slices(model_input_slices(slices, brain), input_size).clamp_(0.0, 1.0)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Eval-mode logits ``Nx2`` (on CPU) of images ``Nx3xSxS``; the model's mode is restored."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    try:
        out = [model(images[s:s + batch_size].to(device).float()).float().cpu()
               for s in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def predict_tumour_prob(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """P(tumour) ``N`` float32 = softmax(logits)[:, 1] for images ``Nx3xSxS`` (eval mode, no grad)."""
    return _logits(model, images, batch_size).softmax(dim=1)[:, 1].numpy().astype(np.float32)


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    predictions = _logits(model, images, batch_size).argmax(dim=1)
    return float((predictions == labels.cpu()).float().mean()) if len(labels) else 0.0


def _check(images: torch.Tensor, labels: torch.Tensor, settings: ClassifierSettings) -> None:
    if images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need images Nx3xSxS and N labels, got {tuple(images.shape)} and {len(labels)}")
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {settings.schedule!r}")
    present = set(labels.unique().tolist())
    if not present <= {0, 1}:
        raise ValueError(f"labels must be 0/1 (drop -1 slices first), got {sorted(present)}")
    if len(present) == 1:
        warnings.warn(f"classifier training set holds a single class ({present.pop()}); training anyway",
                      UserWarning, stacklevel=3)


def _host_batches(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(Bx3xSxS, B)`` of ``images``/``labels`` in ``order`` on the host, pinned for CUDA; a
    last batch of one sample is skipped (BatchNorm cannot train on it)."""
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        if len(index) == 1 and len(order) > 1:
            continue
        x, y = images[index], labels[index]
        yield (x.pin_memory(), y.pin_memory()) if device.type == "cuda" and not x.is_cuda else (x, y)


def train_classifier(model: nn.Module, images: torch.Tensor, labels: np.ndarray | torch.Tensor,
                     settings: ClassifierSettings, seed: int,
                     val: tuple[torch.Tensor, np.ndarray | torch.Tensor] | None = None,
                     progress: bool = True,
                     on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> nn.Module:
    """Train ``model`` in place on images ``Nx3xSxS`` (any float dtype, cast per batch) and labels
    ``N`` (0/1) and return it.

    Batches are shuffled with a generator seeded by ``seed`` (a last batch of one sample is skipped:
    BatchNorm cannot train on it); dropout draws from torch's global RNG,
    seeded with ``seed`` inside a forked RNG state (the caller's state is untouched). With
    ``settings.select_on_gt_validation`` and ``val = (images, ground-truth labels)`` the weights of
    the epoch with the best validation accuracy are returned (first best on ties), else the last.
    The model ends in eval mode. ``on_epoch(epoch, {"loss": mean training loss[, "val_accuracy": ...]})``
    is called after every epoch (epochs count from 1). ``settings.precision`` autocasts the training
    steps on CUDA and ``channels_last`` switches the model (it stays so) and batches to NHWC; on
    CUDA batches are gathered and pinned in a background thread and copied without blocking.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    _check(images, labels, settings)
    device = _device_of(model)
    check_precision(settings.precision, device, "classifier.precision")
    model = channels_last(model, settings.channels_last)
    scaler = grad_scaler(device, settings.precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
                 if settings.schedule == "step" else None)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    select = settings.select_on_gt_validation and val is not None
    if settings.select_on_gt_validation and val is None:
        logger.warning("select_on_gt_validation set but no validation data given: keeping the last epoch")
    val_labels = torch.as_tensor(np.asarray(val[1]), dtype=torch.long) if select else None
    best_accuracy, best_state = -1.0, None

    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for epoch in tqdm(range(settings.epochs), desc="classifier", disable=not progress):
            model.train()
            order = torch.randperm(len(images), generator=shuffle)
            total_loss, seen = 0.0, 0
            batches = _host_batches(images, labels, order, settings.batch_size, device)
            if settings.iterations_per_epoch is not None:
                batches = itertools.islice(batches, settings.iterations_per_epoch)
            for x, y in prefetch(batches, device.type == "cuda"):
                optimizer.zero_grad()
                x = as_channels_last(x.to(device, non_blocking=True).float(), settings.channels_last)
                with autocast(device, settings.precision):
                    loss = loss_fn(model(x), y.to(device, non_blocking=True))
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total_loss += float(loss.detach()) * len(y)
                seen += len(y)
            if scheduler is not None:
                scheduler.step()
            metrics = {"loss": total_loss / max(seen, 1)}
            message = f"epoch {epoch + 1}: loss {metrics['loss']:.4f}"
            if select:
                accuracy = metrics["val_accuracy"] = _accuracy(model, val[0], val_labels, settings.batch_size)
                message += f", GT validation accuracy {accuracy:.4f}"
                if accuracy > best_accuracy:
                    best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
            logger.info(message)
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()
