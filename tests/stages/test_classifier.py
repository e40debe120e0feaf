"""Stage 2: classifier input, seeded training, GT-validation selection, step schedule, prediction."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from clisc.stages.classifier import (ClassifierSettings, predict_tumour_prob, slices_to_input,
                                     train_classifier)


class TinyNet(nn.Module):
    """Conv -> ReLU -> global average pool -> dropout -> linear: ``Bx3xHxW -> Bx2``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x)).mean(dim=(2, 3))))


def bright_square_data(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` slices 16x16 of noise; label 1 slices carry a bright 6x6 square."""
    rng = np.random.default_rng(seed)
    slices = rng.normal(0, 0.3, (n, 16, 16)).astype(np.float32)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, 10, 2)
        slices[i, r:r + 6, c:c + 6] += 3.0
    return slices_to_input(slices, 16), labels


def fast(**changes) -> ClassifierSettings:
    return ClassifierSettings(**{"epochs": 3, "batch_size": 8, "lr": 1e-2, **changes})


def test_slices_to_input() -> None:
    slices = np.stack([np.arange(64.0).reshape(8, 8) - 20, np.full((8, 8), 3.0)]).astype(np.float32)
    x = slices_to_input(slices, 12)
    assert x.shape == (2, 3, 12, 12) and x.dtype == torch.float32
    assert float(x[0].min()) == pytest.approx(0.0, abs=1e-6) and float(x[0].max()) == pytest.approx(1.0)
    assert torch.equal(x[0, 0], x[0, 1]) and float(x[1].abs().max()) == 0.0


def test_training_learns_a_separable_task() -> None:
    images, labels = bright_square_data(32, seed=0)
    model = train_classifier(TinyNet(), images, labels, fast(epochs=25), seed=0, progress=False)
    p = predict_tumour_prob(model, images, batch_size=16)
    assert p.shape == (32,) and p.dtype == np.float32
    assert np.mean((p > 0.5) == labels.astype(bool)) >= 0.9
    assert not model.training


def test_seeded_determinism_and_global_rng_untouched() -> None:
    images, labels = bright_square_data(16, seed=1)
    state = torch.get_rng_state()
    first = train_classifier(TinyNet(), images, labels, fast(), seed=3, progress=False).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    again = train_classifier(TinyNet(), images, labels, fast(), seed=3, progress=False).state_dict()
    other = train_classifier(TinyNet(), images, labels, fast(), seed=4, progress=False).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_gt_validation_keeps_the_best_epoch() -> None:
    images, labels = bright_square_data(16, seed=2)
    val_images, val_labels = bright_square_data(12, seed=5)
    epochs, settings = 10, fast(epochs=10, lr=3e-2)
    accuracies, states = [], []
    for e in range(1, epochs + 1):  # an e-epoch run is the first e epochs of a longer one
        model = train_classifier(TinyNet(), images, labels, fast(epochs=e, lr=3e-2), seed=0, progress=False)
        accuracies.append(np.mean((predict_tumour_prob(model, val_images) > 0.5) == val_labels))
        states.append(model.state_dict())
    best_epoch = int(np.argmax(accuracies))  # first best
    assert 0 < best_epoch < epochs - 1, accuracies  # the case tells "best" from "first" and "last"
    chosen = train_classifier(TinyNet(), images, labels, replace(settings, select_on_gt_validation=True),
                              seed=0, val=(val_images, val_labels), progress=False).state_dict()
    assert all(torch.allclose(chosen[k], states[best_epoch][k]) for k in chosen)
    last = train_classifier(TinyNet(), images, labels, settings, seed=0, val=(val_images, val_labels),
                            progress=False).state_dict()
    assert all(torch.allclose(last[k], states[-1][k]) for k in last)  # switch off: the last epoch


def test_step_schedule_divides_the_update_after_7_epochs() -> None:
    images, labels = bright_square_data(8, seed=3)  # one batch per epoch: one Adam step each

    def weights(epochs: int) -> torch.Tensor:
        model = train_classifier(TinyNet(), images, labels, fast(epochs=epochs, lr=1e-3, schedule="step"),
                                 seed=0, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    w6, w7, w8 = weights(6), weights(7), weights(8)
    ratio = float((w8 - w7).norm() / (w7 - w6).norm())
    assert 0.02 < ratio < 0.3  # lr 1e-3 in epoch 7, 1e-4 in epoch 8


def test_single_class_warns_and_trains() -> None:
    images, _ = bright_square_data(8, seed=4)
    model = TinyNet()
    before = model.fc.weight.detach().clone()
    with pytest.warns(UserWarning, match="single class"):
        train_classifier(model, images, np.ones(8, dtype=int), fast(epochs=1), seed=0, progress=False)
    assert not torch.equal(before, model.fc.weight)


@pytest.mark.parametrize("labels, settings", [
    (np.array([0, 1, -1, 1]), fast()),
    (np.array([0, 1, 0, 1]), fast(schedule="cosine")),
])
def test_bad_input_is_refused(labels: np.ndarray, settings: ClassifierSettings) -> None:
    with pytest.raises(ValueError):
        train_classifier(TinyNet(), torch.zeros(4, 3, 8, 8), labels, settings, seed=0, progress=False)


def test_tiny_resnet_with_the_official_head() -> None:
    from clisc.foundation.resnet import build_resnet50

    model, _ = build_resnet50(weights="random", size="tiny", head="official")
    images, labels = bright_square_data(8, seed=6)
    train_classifier(model, images, labels, fast(epochs=1, lr=1e-4, schedule="step"), seed=0,
                     progress=False)
    p = predict_tumour_prob(model, images, batch_size=4)
    assert p.shape == (8,) and np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize("select", [False, True])
def test_on_epoch_reports_the_loss_and_the_validation_proxy(select: bool) -> None:
    images, labels = bright_square_data(16, seed=2)
    rows: list[tuple[int, dict[str, float]]] = []
    train_classifier(TinyNet(), images, labels, fast(select_on_gt_validation=select), seed=0,
                     val=bright_square_data(8, seed=5), progress=False, on_epoch=lambda e, m: rows.append((e, m)))
    assert [e for e, _ in rows] == [1, 2, 3]
    assert all(m["loss"] > 0 for _, m in rows)
    assert all(("val_accuracy" in m) == select for _, m in rows)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_is_refused_on_cpu(precision: str) -> None:
    from clisc.errors import CliscError

    images, labels = bright_square_data(8, seed=7)
    with pytest.raises(CliscError, match=f"classifier.precision={precision} needs a CUDA device"):
        train_classifier(TinyNet(), images, labels, fast(precision=precision), seed=0, progress=False)


def test_channels_last_on_cpu_trains_to_the_same_weights() -> None:
    images, labels = bright_square_data(16, seed=8)
    plain = train_classifier(TinyNet(), images, labels, fast(), seed=0, progress=False).state_dict()
    model = train_classifier(TinyNet(), images, labels, fast(channels_last=True), seed=0, progress=False)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, plain[name], rtol=1e-4, atol=1e-6, msg=name)


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cl", [False, True])
def test_cuda_training_learns_in_every_precision(precision: str, cl: bool) -> None:
    images, labels = bright_square_data(32, seed=0)
    model = TinyNet().cuda()
    settings = fast(epochs=25, precision=precision, channels_last=cl)
    model = train_classifier(model, images.half(), labels, settings, seed=0, progress=False)
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.float32
    p = predict_tumour_prob(model, images, batch_size=16)
    assert np.mean((p > 0.5) == labels.astype(bool)) >= 0.9
