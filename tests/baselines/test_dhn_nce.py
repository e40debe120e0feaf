"""DHN-NCE: values on hand-checked cases, symmetry, the removal of same-caption negatives, and the
fine-tuning loop's schedule and resumable checkpoint."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.dhn_nce import dhn_nce_loss, finetune_clip, warmup_cosine
from clisc.pipeline.models import load_clip_cached


def _reference(v: torch.Tensor, u: torch.Tensor, tau: float, b1: float, b2: float) -> float:
    """The paper's equation written out term by term."""
    v = v / v.norm(dim=1, keepdim=True)
    u = u / u.norm(dim=1, keepdim=True)
    s = (v @ u.T / tau).tolist()
    n = len(s)

    def direction(sim: list[list[float]], beta: float) -> float:
        total = 0.0
        for i in range(n):
            negatives = [j for j in range(n) if j != i]
            norm = sum(math.exp(beta * sim[i][k]) for k in negatives)
            denominator = sum((n - 1) * math.exp(beta * sim[i][j]) / norm * math.exp(sim[i][j]) for j in negatives)
            total += -math.log(math.exp(sim[i][i]) / denominator)
        return total / n

    transposed = [[s[j][i] for j in range(n)] for i in range(n)]
    return direction(s, b1) + direction(transposed, b2)


def test_two_orthonormal_pairs_by_hand() -> None:
    # s = I / tau; one negative per row, so its weight is 1: each row gives -(1/tau - 0)
    loss = dhn_nce_loss(torch.eye(2), torch.eye(2), temperature=0.6)
    assert float(loss) == pytest.approx(-2 / 0.6)


def test_matches_the_written_out_equation() -> None:
    gen = torch.Generator().manual_seed(0)
    v, u = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    for b1, b2 in [(0.15, 0.15), (0.0, 0.0), (0.5, 0.1)]:
        assert float(dhn_nce_loss(v, u, 0.6, b1, b2)) == pytest.approx(_reference(v, u, 0.6, b1, b2), rel=1e-5)


def test_symmetric_in_images_and_texts() -> None:
    gen = torch.Generator().manual_seed(1)
    v, u = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    assert float(dhn_nce_loss(v, u)) == pytest.approx(float(dhn_nce_loss(u, v)), rel=1e-6)
    assert float(dhn_nce_loss(v, u, beta1=0.3, beta2=0.1)) == pytest.approx(
        float(dhn_nce_loss(u, v, beta1=0.1, beta2=0.3)), rel=1e-6)


def test_hard_negatives_weigh_more_with_beta() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    u = torch.tensor([[1.0, 0.0], [0.7, 0.7], [-1.0, 0.0]])  # row 0: negative 1 is hard, 2 easy
    assert float(dhn_nce_loss(v, u, beta1=1.0, beta2=1.0)) > float(dhn_nce_loss(v, u, beta1=0.0, beta2=0.0))


def test_same_caption_pairs_are_not_negatives() -> None:
    v = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # pairs 0 and 1 share a caption
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    masked = float(dhn_nce_loss(v, u, same=same))
    # with only the true negatives left each row is -(s_ii - s_ij) / tau
    s = torch.nn.functional.normalize(v, dim=1) @ torch.nn.functional.normalize(u, dim=1).T / 0.6
    by_hand = (np.mean([-(s[0, 0] - s[0, 2]), -(s[1, 1] - s[1, 2]), float(np.log(2)) - s[2, 2]
                        + torch.logsumexp(1.15 * s[2, :2], 0) - torch.logsumexp(0.15 * s[2, :2], 0)])
               + np.mean([-(s[0, 0] - s[2, 0]), -(s[1, 1] - s[2, 1]), float(np.log(2)) - s[2, 2]
                          + torch.logsumexp(1.15 * s[:2, 2], 0) - torch.logsumexp(0.15 * s[:2, 2], 0)]))
    assert masked == pytest.approx(float(by_hand), rel=1e-5)
    assert masked < float(dhn_nce_loss(v, u))  # the shared caption no longer counts against the pair
    assert float(dhn_nce_loss(v, u, same=torch.ones(3, 3, dtype=torch.bool))) == 0.0


def test_gradients_are_finite() -> None:
    v = torch.randn(4, 3, requires_grad=True)
    dhn_nce_loss(v, torch.randn(4, 3)).backward()
    assert torch.isfinite(v.grad).all()


def test_warmup_then_cosine() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1) and warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0) and warmup_cosine(100, 100, 10) == pytest.approx(0.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)


def test_finetuning_changes_the_copy_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    clip = load_clip_cached("tiny", "random", "cpu")
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 20, 3), dtype=np.uint8) for _ in range(8)]
    groups = np.array([0, 1] * 4)
    captions = ["normal brain" if g == 0 else "brain tumor" for g in groups]
    kwargs = dict(epochs=1, batch_size=4, lr=1e-3, weight_decay=0.1, warmup_steps=1, temperature=0.6,
                  beta1=0.15, beta2=0.15, checkpoint_dir=tmp_path)
    model = finetune_clip(clip, images, captions, groups, **kwargs)
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in before.items())  # shared model untouched
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and not model.training
    assert (tmp_path / "finetune_state.pt").is_file()
    resumed = finetune_clip(clip, images, captions, groups, **kwargs)  # epoch 1 of 1 done: nothing to train
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in model.state_dict().items())


class _DropoutClip(torch.nn.Module):
    """A CLIP stand-in with dropout in both towers (as BiomedCLIP's text tower has)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Linear(3 * 8 * 8, 16)
        self.text = torch.nn.Embedding(4, 16)
        self.drop = torch.nn.Dropout(0.5)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.image(x.flatten(1)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.drop(self.text(tokens).mean(dim=1))


def test_finetuning_with_dropout_is_seeded_and_leaves_the_global_stream_alone() -> None:
    from clisc.foundation.clip import ClipModel
    from clisc.foundation.weights import WeightsRecord

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[1, 2] if "tumor" in t else [0, 3] for t in texts])

    torch.manual_seed(0)
    clip = ClipModel(_DropoutClip(), tokenizer, (0.5,) * 3, (0.5,) * 3, 8, WeightsRecord("clip:fake", "random"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(8)]
    groups = np.array([0, 1] * 4)
    captions = ["normal brain" if g == 0 else "brain tumor" for g in groups]
    kwargs = dict(epochs=2, batch_size=4, lr=1e-2, weight_decay=0.1, warmup_steps=1, temperature=0.6,
                  beta1=0.15, beta2=0.15)
    runs = []
    for global_seed in (1, 2):  # whatever the caller's stream, the same seed gives the same model
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        runs.append(finetune_clip(clip, images, captions, groups, seed=5, **kwargs).state_dict())
        assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())
    other = finetune_clip(clip, images, captions, groups, seed=6, **kwargs).state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in runs[0].items())
