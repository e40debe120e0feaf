"""The constrained VAE of AMCons / GradCAMCons: shapes, each loss on hand-made inputs, the direction
in which each constraint pushes, and a resumable training."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.constrained_vae import (
    anomaly_maps, attention_entropy, build_vae, channel_mean_attention, kl_loss, log_barrier, min_max_like_code, reconstruction_loss,
    size_constraint, train_vae, vae_loss,
)
from baselines.settings import ConstrainedVaeSettings

SMALL = ConstrainedVaeSettings(input_size=32, epochs=2, batch_size=4, brain_erosion=1)


@pytest.mark.parametrize("block,side", [(1, 16), (2, 8), (3, 4), (4, 2)])
def test_shapes_and_attention_at_input_size(block: int, side: int) -> None:
    """The attention is the channel mean of stage ``block`` (side ``side`` for 32-px inputs), upsampled."""
    torch.manual_seed(0)
    model = build_vae(ConstrainedVaeSettings(input_size=32, attention_block=block)).eval()
    x = torch.rand(3, 1, 32, 32)
    logits, mu, logvar, attention = model(x)
    assert logits.shape == (3, 1, 32, 32) and mu.shape == logvar.shape == (3, 32)
    activation = model.encoder(x)[3][block - 1]
    assert activation.shape[-1] == side and attention.shape == (3, 32, 32)
    assert torch.allclose(attention, channel_mean_attention(activation, 32))
    assert torch.allclose(attention[:, 0, 0], activation.mean(dim=1)[:, 0, 0], atol=1e-6)  # corners kept


def test_input_size_must_be_a_multiple_of_16() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        ConstrainedVaeSettings(input_size=40)


def test_reconstruction_and_kl_values() -> None:
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 0.5]]]])  # 2x1x1x2
    logits = torch.zeros_like(x)  # sigmoid 0.5: BCE = log 2 per pixel whatever the target
    assert reconstruction_loss(logits, x).item() == pytest.approx(2 * math.log(2))  # 4 pixels / batch of 2
    assert kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    mu, logvar = torch.ones(2, 3), torch.zeros(2, 3)
    assert kl_loss(mu, logvar).item() == pytest.approx(1.5)  # 0.5 * sum(mu^2) over 3 units


def test_entropy_is_log_n_for_flat_attention_inside_the_mask_only() -> None:
    attention = torch.zeros(2, 4, 4)
    attention[0, 0, 0] = 50.0  # one peaked slice
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    attention[1, 3, 3] = 99.0  # outside its mask: ignored
    entropy = attention_entropy(attention, mask)
    assert entropy.item() == pytest.approx((0.0 + math.log(4)) / 2, abs=1e-4)
    empty = attention_entropy(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    assert empty.item() == 0.0


def test_entropy_gradient_flattens_the_attention() -> None:
    """AMCons subtracts the entropy: a descent step on -H lowers the peak and raises the rest."""
    attention = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    (-attention_entropy(attention, torch.ones(1, 2, 2, dtype=torch.bool))).backward()
    grad = attention.grad[0]
    assert grad[0, 0] > 0 and (grad.flatten()[1:] < 0).all()


@pytest.mark.parametrize("z,expected", [
    (-0.5, -math.log(0.5) / 10),  # inside: the log-barrier
    (0.2, 10 * 0.2 - math.log(1 / 100) / 10 + 1 / 10),  # outside: its tangent extension
])
def test_log_barrier_values(z: float, expected: float) -> None:
    assert log_barrier(torch.tensor([z]), t=10.0).item() == pytest.approx(expected, rel=1e-5)


def test_log_barrier_is_continuous_at_the_switch() -> None:
    t = 10.0
    edge = -1 / t ** 2
    left = log_barrier(torch.tensor([edge - 1e-7]), t).item()
    right = log_barrier(torch.tensor([edge + 1e-7]), t).item()
    assert left == pytest.approx(right, abs=1e-4)


def test_size_constraint_pushes_attention_up() -> None:
    """GradCAMCons asks mean(sigmoid(attention)) >= 1 - p: the gradient raises every attention value,
    and the term is smaller when the attention is larger."""
    low = torch.full((2, 4, 4), -1.0, requires_grad=True)
    size_constraint(torch.sigmoid(low), p=0.01, t=10.0).backward()
    assert (low.grad < 0).all()
    assert size_constraint(torch.full((1, 4, 4), 0.99), 0.01, 10.0) < size_constraint(torch.full((1, 4, 4), 0.5),
                                                                                        0.01, 10.0)


def _stage_map(model, x: torch.Tensor) -> torch.Tensor:
    """The channel mean of the attention stage at its own resolution ``Bxhxw`` (16 px for 32-px inputs)."""
    return model.encoder(x)[3][model.attention_block - 1].mean(dim=1)


def _up(am: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(am[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0]


def test_gradcamcons_normalises_the_stage_map_before_upsampling_as_the_code() -> None:
    """The code's ``grad_cam`` returns the sigmoid (training) or min-max (test) of the 112-px map,
    which its ``interpolate`` then upsamples; normalising after the upsampling gives other values."""
    torch.manual_seed(0)
    model = build_vae(SMALL).eval()
    rng = np.random.default_rng(1)
    images, masks = rng.random((3, 32, 32)).astype(np.float32), np.ones((3, 32, 32), bool)
    x = torch.from_numpy(images)[:, None]
    with torch.no_grad():
        am = _stage_map(model, x)
        code_test = _up(min_max_like_code(am), 32)
        after = min_max_like_code(_up(am, 32))
    maps = torch.from_numpy(anomaly_maps(model, images, masks, "gradcamcons"))
    torch.testing.assert_close(maps, code_test, rtol=0, atol=1e-6)
    assert (after - code_test).abs().max() > 1e-4  # the order matters
    # training: the barrier of the upsampled sigmoid of the stage map
    _, terms = vae_loss(model, x, torch.ones(3, 32, 32, dtype=torch.bool), "gradcamcons", SMALL, constrained=True)
    with torch.no_grad():
        expected = size_constraint(_up(torch.sigmoid(am), 32), SMALL.p_activation, SMALL.t_barrier)
    assert terms["barrier"] == pytest.approx(float(expected), rel=1e-6)
    # AMCons keeps the raw channel mean, upsampled
    torch.testing.assert_close(torch.from_numpy(anomaly_maps(model, images, masks, "amcons")), _up(am, 32))


def test_min_max_like_code() -> None:
    attention = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])  # row maxima 3, 5: the code subtracts 3 + 1e-3
    out = min_max_like_code(attention)[0]
    shifted = attention[0] - 3.001
    assert torch.allclose(out, shifted / (shifted.max() + 1e-3))


@pytest.mark.parametrize("method,term", [("amcons", "entropy"), ("gradcamcons", "barrier")])
def test_vae_loss_gradients_reach_every_part(method: str, term: str) -> None:
    torch.manual_seed(0)
    model = build_vae(SMALL).train()
    x = torch.rand(2, 1, 32, 32)
    loss, terms = vae_loss(model, x, torch.ones(2, 32, 32, dtype=torch.bool), method, SMALL, constrained=True)
    loss.backward()
    assert term in terms and math.isfinite(terms["loss"])
    for part in (model.encoder.stem, model.encoder.mu, model.decoder.out):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images, masks = rng.random((6, 32, 32)).astype(np.float32), np.ones((6, 32, 32), bool)
    rows: list[tuple[int, dict]] = []
    one = train_vae(images, masks, "amcons", SMALL, seed=0, progress=False, checkpoint=tmp_path / "c.pt",
                    on_epoch=lambda e, m: rows.append((e, m)))
    assert [e for e, _ in rows] == [1, 2] and set(rows[0][1]) >= {"loss", "reconstruction", "kl", "entropy"}
    rows.clear()  # a re-run finds the finished checkpoint: no epoch left to run, same weights
    again = train_vae(images, masks, "amcons", SMALL, seed=0, progress=False, checkpoint=tmp_path / "c.pt",
                      on_epoch=lambda e, m: rows.append((e, m)))
    assert rows == [] and torch.equal(one.decoder.out.weight, again.decoder.out.weight)
    maps = anomaly_maps(again, images, masks & (np.arange(32) < 16)[None, :, None], "gradcamcons")
    assert maps.shape == (6, 32, 32) and (maps[:, 16:] == 0).all()
