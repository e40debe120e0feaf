"""clisc.compute: precision checks (refused on CPU), autocast, GradScaler, channels-last, prefetch."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from clisc.compute import (PRECISIONS, as_channels_last, autocast, channels_last, check_compute, check_precision,
                           grad_scaler, prefetch, to_device)
from clisc.errors import CliscError
from clisc.pipeline.settings import resolve_settings

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cpu_is_refused_in_one_line(precision: str) -> None:
    with pytest.raises(CliscError, match=rf"^setting sam.precision={precision} needs a CUDA device") as error:
        check_precision(precision, "cpu", "sam.precision")
    assert "\n" not in str(error.value)
    with pytest.raises(CliscError):
        autocast("cpu", precision)
    with pytest.raises(CliscError):
        grad_scaler("cpu", precision)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(CliscError, match="unknown precision 'fp8'"):
        check_precision("fp8", "cpu")


def test_fp32_is_a_no_op_on_cpu() -> None:
    layer = nn.Linear(4, 2)
    with autocast("cpu", "fp32"):
        out = layer(torch.ones(3, 4))
    assert out.dtype == torch.float32
    assert not grad_scaler("cpu", "fp32").is_enabled()


def test_check_compute_reads_every_precision_setting() -> None:
    check_compute(resolve_settings(), "cpu")  # all fp32 by default
    settings = resolve_settings(overrides={"unet.precision": "bf16"})
    with pytest.raises(CliscError, match="unet.precision=bf16"):
        check_compute(settings, "cpu")


def test_channels_last_layouts() -> None:
    conv = channels_last(nn.Conv2d(3, 4, 3), True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    conv3d = channels_last(nn.Conv3d(1, 2, 3), True, dims=3)
    assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert as_channels_last(torch.zeros(2, 3, 4, 5), True).is_contiguous(memory_format=torch.channels_last)
    assert as_channels_last(torch.zeros(2, 1, 4, 5, 6), True).is_contiguous(memory_format=torch.channels_last_3d)
    plain = torch.zeros(2, 3, 4, 5)
    assert as_channels_last(plain, False) is plain and channels_last(conv, False) is conv


@pytest.mark.parametrize("enabled", [False, True])
def test_prefetch_keeps_order_and_runs_ahead_in_a_thread(enabled: bool) -> None:
    threads: list[str] = []

    def produce():
        for i in range(7):
            threads.append(threading.current_thread().name)
            yield i

    assert list(prefetch(produce(), enabled)) == list(range(7))
    assert all(name.startswith("clisc-prefetch") == enabled for name in threads)


def test_prefetch_passes_errors_on() -> None:
    def produce():
        yield 1
        raise RuntimeError("broken batch")

    with pytest.raises(RuntimeError, match="broken batch"):
        list(prefetch(produce(), True))


def test_to_device_on_cpu_is_a_plain_copy() -> None:
    tensor = torch.arange(4)
    assert torch.equal(to_device(tensor, "cpu"), tensor)


@CUDA
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_on_cuda_runs_matmuls_in_half_precision(precision: str, dtype: torch.dtype) -> None:
    layer = nn.Linear(4, 2).cuda()
    with autocast("cuda", precision):
        assert layer(torch.ones(3, 4, device="cuda")).dtype == dtype
    assert grad_scaler("cuda", precision).is_enabled() == (precision == "fp16")


@CUDA
def test_to_device_on_cuda_goes_through_pinned_memory() -> None:
    tensor = torch.arange(6.0)
    moved = to_device(tensor, "cuda")
    torch.cuda.synchronize()
    assert moved.is_cuda and torch.equal(moved.cpu(), tensor)


def test_precisions_are_the_documented_three() -> None:
    assert PRECISIONS == ("fp32", "bf16", "fp16")
