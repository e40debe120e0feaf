"""Compute settings shared by the stages: precision (autocast), channels-last, pinned host copies.

A stage's ``precision`` setting is one of ``PRECISIONS``: "fp32" (the default, and the only value
allowed on a CPU), "bf16" or "fp16" (``torch.autocast`` on CUDA; fp16 training adds a
``torch.amp.GradScaler``). Asking for half precision on a CPU is refused with a one-line
:class:`~clisc.errors.CliscError` rather than silently ignored, so the logged setting is always what
ran.
"""
from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import nn

from clisc.errors import CliscError

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str | torch.device, setting: str = "precision") -> None:
    """CliscError unless ``precision`` is known and, when not fp32, ``device`` is CUDA."""
    if precision not in PRECISIONS:
        raise CliscError(f"setting {setting}: unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and torch.device(device).type != "cuda":
        raise CliscError(f"setting {setting}={precision} needs a CUDA device (got {torch.device(device)}); "
                         f"use fp32 on a CPU")


PRECISION_SECTIONS = ("slice_labels", "classifier", "sam", "unet")  # settings sections with a precision


def check_compute(settings: Any, device: str | torch.device) -> None:
    """:func:`check_precision` of every ``<section>.precision`` of a run's settings, so that a run
    asking for half precision on a CPU stops before its first stage."""
    for section in PRECISION_SECTIONS:
        check_precision(getattr(getattr(settings, section), "precision"), device, f"{section}.precision")


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16/fp16 on CUDA; a null context for fp32 (checked first)."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=_DTYPES[precision])


def grad_scaler(device: str | torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 on CUDA (bf16 and fp32 need none: it is then a
    pass-through, so ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()`` always works)."""
    check_precision(precision, device)
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")


def channels_last(model: nn.Module, enabled: bool, dims: int = 2) -> nn.Module:
    """``model`` in channels-last memory format (``dims`` 2: NHWC, 3: NDHWC) when ``enabled``."""
    if not enabled:
        return model
    return model.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)


def as_channels_last(batch: torch.Tensor, enabled: bool) -> torch.Tensor:
    """A 4D/5D batch in the channels-last layout matching :func:`channels_last` (else unchanged)."""
    if not enabled:
        return batch
    return batch.contiguous(memory_format=torch.channels_last if batch.ndim == 4 else torch.channels_last_3d)


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device``: through pinned memory without blocking when it is CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def prefetch(items: Iterable[T], enabled: bool, depth: int = 2) -> Iterator[T]:
    """The items of ``items`` in order, produced up to ``depth`` ahead by one background thread when
    ``enabled`` (host work such as slicing, resizing and pinning overlaps the GPU's); else inline."""
    if not enabled:
        yield from items
        return
    iterator, done = iter(items), object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clisc-prefetch") as pool:
        pending = deque(pool.submit(next, iterator, done) for _ in range(max(1, depth)))
        while True:
            item = pending.popleft().result()
            if item is done:
                return
            pending.append(pool.submit(next, iterator, done))
            yield item


@contextlib.contextmanager
def cuda_peak(device: str | torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict that holds ``cuda_peak_mib`` (max allocated while inside) on exit; 0 off CUDA."""
    device = torch.device(device)
    out = {"cuda_peak_mib": 0.0}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
