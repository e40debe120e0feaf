"""MedCLIP-SAM's optional CLIP fine-tuning with the Decoupled Hard-Negative NCE loss (Koleilat et al.,
MICCAI 2024; settings of the authors' script ``biomedclip_finetuning/open_clip/scripts/biomedclip.sh``
in HealthX-Lab/MedCLIP-SAMv2: temperature 0.6, beta1 = beta2 = 0.15, batch 16, AdamW lr 1e-3, weight
decay 0.1, 1000 warm-up steps, 32 epochs, cosine schedule as open_clip's trainer).

With similarities ``s_ij = cos(v_i, u_j) / tau`` of a batch of image (``v``) and text (``u``)
embeddings and the negatives ``N_i`` of row ``i`` (every ``j != i``)::

    L_v2t = mean_i [ -s_ii + log sum_{j in N_i} w_ij exp(s_ij) ],
    w_ij  = |N_i| exp(beta1 s_ij) / sum_{k in N_i} exp(beta1 s_ik)

and ``L_t2v`` the same on ``s^T`` with ``beta2``; the loss is ``L_v2t + L_t2v``. The positive pair is
not in the denominator ("decoupled"); the hard-negative weights are those of HN-NCE (Radenovic et al.,
CVPR 2023) that DHN-NCE decouples. The public loss code (``loss/hnl.py``) computes the weights'
normaliser with ``exp(s)`` rather than ``exp(beta s)`` and averages an element-wise matrix; this
module follows the equation above.

Departure: ``same`` marks pairs that are not negatives although ``i != j``. The pairs here come from
slices captioned by their CLIP pseudo-label, so many captions in a batch are identical; such pairs
are removed from the negatives (otherwise the loss would push an image away from its own caption).
"""
from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clisc.cache import atomic_write_bytes
from clisc.foundation.clip import ClipModel


def _one_direction(s: torch.Tensor, negatives: torch.Tensor, beta: float) -> torch.Tensor:
    """``L`` per row of ``NxN`` similarities (already divided by tau); rows without negatives -> NaN."""
    count = negatives.sum(dim=1)
    fill = torch.finfo(s.dtype).min
    lse_weighted = torch.logsumexp(torch.where(negatives, (1.0 + beta) * s, fill), dim=1)
    lse_beta = torch.logsumexp(torch.where(negatives, beta * s, fill), dim=1)
    loss = -s.diagonal() + torch.log(count.to(s.dtype)) + lse_weighted - lse_beta
    return torch.where(count > 0, loss, torch.full_like(loss, float("nan")))


def dhn_nce_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float = 0.6,
                 beta1: float = 0.15, beta2: float = 0.15, same: torch.Tensor | None = None) -> torch.Tensor:
    """DHN-NCE of ``NxD`` image and text embeddings (row ``i`` of each is a pair; L2-normalised here);
    ``same`` (``NxN`` bool) marks further pairs that are not negatives. Rows left without a negative
    do not count; a batch with none left gives 0."""
    v = F.normalize(image_features.float(), dim=1)
    u = F.normalize(text_features.float(), dim=1)
    s = v @ u.T / temperature
    negatives = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    if same is not None:
        negatives &= ~same.to(s.device)
    per_row = torch.cat([_one_direction(s, negatives, beta1), _one_direction(s.T, negatives.T, beta2)])
    half = len(s)
    v2t, t2v = per_row[:half], per_row[half:]
    if torch.isnan(v2t).all():
        return s.sum() * 0.0
    return v2t.nanmean() + t2v.nanmean()


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at ``step``: linear warm-up over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def finetune_clip(clip: ClipModel, images: Sequence[np.ndarray], captions: Sequence[str], groups: np.ndarray,
                  *, epochs: int, batch_size: int, lr: float, weight_decay: float, warmup_steps: int,
                  temperature: float, beta1: float, beta2: float, seed: int = 0, checkpoint_dir: Path | None = None,
                  progress: bool = False, log: Callable[[str], None] | None = None) -> torch.nn.Module:
    """A fine-tuned copy of ``clip.model`` (eval mode) trained with DHN-NCE on pairs (``HxWx3``
    uint8 image, caption); pairs of equal ``groups`` are not each other's negatives. Batch order and
    dropout derive from ``seed`` and the epoch only (torch's global stream is left untouched), so
    the result is the same for a seed on one device. With ``checkpoint_dir`` the state is saved
    after every epoch and a re-run resumes from it."""
    model = copy.deepcopy(clip.model).to(clip.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(images) / batch_size))
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup_steps))
    start = 0
    state_path = checkpoint_dir / "finetune_state.pt" if checkpoint_dir is not None else None
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=clip.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["epoch"])
    tokens = clip.tokenizer(list(captions))
    groups_t = torch.as_tensor(np.asarray(groups))
    devices = [clip.device] if clip.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's torch stream is left as it was
        for epoch in tqdm(range(start, epochs), desc="DHN-NCE", unit="epoch", disable=not progress, initial=start,
                          total=epochs):
            model.train()
            order = np.random.default_rng(seed + epoch).permutation(len(images))
            # dropout (e.g. BiomedCLIP's PubMedBERT) draws from torch's stream: seeded per epoch, so a
            # resumed run draws what an uninterrupted one would
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
            losses = _epoch(model, clip, images, tokens, groups_t, order, batch_size, optimizer, scheduler,
                            temperature, beta1, beta2)
            if log is not None and losses:
                log(f"[clisc] DHN-NCE epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
            if state_path is not None:  # atomic, with a unique temporary name: concurrent runs cannot clash
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch + 1}, buffer)
                atomic_write_bytes(state_path, buffer.getvalue())
    return model.eval()


def _epoch(model: torch.nn.Module, clip: ClipModel, images: Sequence[np.ndarray], tokens: torch.Tensor,
           groups: torch.Tensor, order: np.ndarray, batch_size: int, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler, temperature: float, beta1: float,
           beta2: float) -> list[float]:
    """One pass over the pairs in ``order`` (batches of ``batch_size``; a last batch of one is
    skipped: it has no negative); returns the batch losses."""
    losses = []
    for first in range(0, len(order), batch_size):
        idx = order[first:first + batch_size]
        if len(idx) < 2:
            continue
        batch = torch.cat([
            clip.normalise_images(torch.from_numpy(images[i]).permute(2, 0, 1)[None].float() / 255.0)
            for i in idx
        ])
        image_features = model.encode_image(batch)
        text_features = model.encode_text(tokens[torch.as_tensor(idx)].to(clip.device))
        same = groups[idx][:, None] == groups[idx][None, :]
        loss = dhn_nce_loss(image_features, text_features, temperature, beta1, beta2, same)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses
