"""3D IF's parts over plain arrays: intensity classes, voxel coordinates, the auto-decoder MLP, and
the two optimisations (network + latents on healthy volumes; one latent for a new volume).

Follows the public code (snavalm/ifl_unsup_anom_det, itself DeepSDF's decoder): see
``baselines/implicit_field.py`` for the method and its departures.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from baselines.settings import ImplicitFieldSettings
from clisc.cache import atomic_write_bytes
from clisc.errors import CliscError

BACKGROUND = 0  # the class of every voxel outside the brain; brain voxels get 1 .. n_classes - 1
CHECKPOINT_EVERY = 10  # epochs between training checkpoints (a killed training resumes from the last)


# ------------------------------------------------------------------ intensity classes
def normalise_brain(image: np.ndarray, brain: np.ndarray, clip_percentile: float) -> np.ndarray:
    """Brain intensities ``XxYxZ`` float32 in [0, 1] (background 0): clipped to the brain's
    ``[100 - p, p]`` percentiles, then min-max scaled over the brain (the code's ``ClipPercentiles`` +
    ``Normalize``, per volume)."""
    out = np.zeros(image.shape, np.float32)
    if not brain.any():
        return out
    values = image[brain].astype(np.float64)
    low, high = np.percentile(values, [100.0 - clip_percentile, clip_percentile])
    values = np.clip(values, low, high)
    out[brain] = (values - low) / (high - low) if high > low else 0.0
    return out


def fit_class_centres(values: np.ndarray, n_brain_classes: int, iterations: int = 50) -> np.ndarray:
    """Sorted centres ``K`` of a 1D k-means (Lloyd, started at the quantiles) of normalised brain
    intensities ``N``: the code's intensity clusters, here fitted on the training brains."""
    values = np.sort(np.asarray(values, np.float64).ravel())
    if values.size == 0:
        raise ValueError("no brain intensities to fit the intensity classes on")
    centres = np.quantile(values, (np.arange(n_brain_classes) + 0.5) / n_brain_classes)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        groups = np.split(values, np.searchsorted(values, edges))
        updated = np.array([g.mean() if g.size else c for g, c in zip(groups, centres)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


def quantise(normalised: np.ndarray, brain: np.ndarray, centres: np.ndarray, mode_pool: int = 0) -> np.ndarray:
    """Intensity classes ``XxYxZ`` uint8: background ``BACKGROUND``, brain voxels ``1 + `` the index of
    the nearest centre; ``mode_pool > 1`` replaces each brain class by the most frequent brain class
    in its ``mode_pool^3`` neighbourhood (the code's mode-pool filter, which removes speckle)."""
    classes = np.zeros(normalised.shape, np.uint8)
    nearest = np.abs(normalised[brain][:, None] - centres[None, :]).argmin(axis=1)
    classes[brain] = 1 + nearest.astype(np.uint8)
    if mode_pool > 1 and brain.any():
        counts = np.stack([ndimage.uniform_filter((classes == c).astype(np.float32), mode_pool, mode="constant")
                           for c in range(1, len(centres) + 1)])
        classes[brain] = 1 + counts[:, brain].argmax(axis=0).astype(np.uint8)
    return classes


# ------------------------------------------------------------------ coordinates
@dataclass(frozen=True)
class VoxelGrid:
    """Normalised coordinates of a preprocessed volume's voxels: ``origin + index * step`` per axis.

    Positions are taken in the case's full BraTS-oriented grid (before the brain crop and any
    resampling) and divided by its largest side, so every case shares one frame in [-1, 1] as the
    code's padded 240^3 volumes do; the crop to the brain box does not move anatomy.
    """

    shape: tuple[int, int, int]
    origin: np.ndarray  # (3,)
    step: np.ndarray  # (3,)

    @classmethod
    def of(cls, shape: Sequence[int], crop: Sequence[tuple[int, int]], original_shape: Sequence[int]) -> VoxelGrid:
        shape = tuple(int(n) for n in shape)
        start = np.array([a for a, _ in crop], np.float64)
        extent = np.array([b - a for a, b in crop], np.float64)
        step_old = extent / np.array(shape)  # original voxels per voxel (1 without resampling)
        scale = 2.0 / max(original_shape)
        centre = np.array(original_shape, np.float64) / 2
        origin = (start + 0.5 * step_old - centre) * scale  # voxel 0's centre
        return cls(shape, origin, step_old * scale)

    def coordinates(self, index: np.ndarray) -> np.ndarray:
        """``Nx3`` float32 coordinates of the voxel indices ``Nx3``."""
        return (self.origin + index * self.step).astype(np.float32)

    def indices(self, start: int, stop: int) -> np.ndarray:
        """Indices ``Nx3`` of the voxels ``start .. stop - 1`` in C order (the order of ``array.ravel()``)."""
        return np.stack(np.unravel_index(np.arange(start, stop), self.shape), axis=1)


def fourier_features(xyz: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``Nx(6L)`` positional encoding of ``Nx3`` coordinates: ``sin``/``cos`` of ``2^k pi xyz`` for
    ``k < L`` (the code's ``mapping_inputs``: sines of all axes and frequencies, then cosines)."""
    scales = (2.0 ** torch.arange(frequencies, dtype=xyz.dtype, device=xyz.device)) * math.pi
    angles = xyz.unsqueeze(-1) * scales  # Nx3xL
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).flatten(1)


# ------------------------------------------------------------------ network
class ImplicitDecoder(nn.Module):
    """DeepSDF's auto-decoder as the code configures it: ``layers`` weight-normalised linear layers
    of ``hidden`` units with ReLU and dropout, input ``[latent, fourier(xyz)]`` re-concatenated at
    layer ``latent_layer`` (a skip), ``n_classes`` logits out."""

    def __init__(self, s: ImplicitFieldSettings):
        super().__init__()
        self.frequencies, self.dropout = s.fourier_frequencies, s.dropout
        self.latent_layer = s.latent_layer if 0 < s.latent_layer < s.layers else None  # None: no skip
        width_in = s.latent_dim + 6 * s.fourier_frequencies
        dims = [width_in] + [s.hidden] * s.layers
        linears = []
        for layer in range(s.layers):
            out = dims[layer + 1] - (width_in if layer + 1 == self.latent_layer else 0)
            if out < 1:
                raise CliscError(f"baselines.implicit_field.hidden={s.hidden} is no wider than the skip input at "
                                 f"latent_layer={s.latent_layer} (latent_dim + 6 x fourier_frequencies = {width_in})")
            linears.append(nn.utils.parametrizations.weight_norm(nn.Linear(dims[layer], out)))
        self.hidden_layers = nn.ModuleList(linears)
        self.head = nn.Linear(s.hidden, s.n_classes)

    def forward(self, latent: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """Logits ``NxC`` of latents ``NxD`` at coordinates ``Nx3``."""
        inputs = torch.cat([latent, fourier_features(xyz, self.frequencies)], dim=1)
        x = inputs
        for layer, linear in enumerate(self.hidden_layers):
            if layer == self.latent_layer:
                x = torch.cat([x, inputs], dim=1)
            x = nn.functional.dropout(torch.relu(linear(x)), self.dropout, self.training)
        return self.head(x)


def initial_latents(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``count x dim`` latents drawn from N(0, 1/dim) (DeepSDF's initialisation)."""
    return torch.randn(count, dim, generator=generator) / math.sqrt(dim)


def bound_latents(latents: torch.Tensor, code_bound: float) -> None:
    """Rescale (in place) each latent row whose norm exceeds ``code_bound`` (the code's
    ``Embedding(max_norm=CodeBound)``)."""
    with torch.no_grad():
        latents.copy_(torch.renorm(latents, 2, 0, code_bound))


# ------------------------------------------------------------------ optimisation
@dataclass
class TrainingVolume:
    """One training volume: classes ``XxYxZ`` uint8, its grid, and the slices ``z`` to sample from."""

    classes: np.ndarray
    grid: VoxelGrid
    slices: np.ndarray


def sample_voxels(shape: Sequence[int], slices: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count x 3`` voxel indices drawn uniformly from the axial slices ``slices`` of a ``shape`` grid."""
    return np.stack([rng.integers(0, shape[0], count), rng.integers(0, shape[1], count),
                     rng.choice(slices, count)], axis=1)


def _batch(volumes: Sequence[TrainingVolume], count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    xyz, target = [], []
    for volume in volumes:
        index = sample_voxels(volume.classes.shape, volume.slices, count, rng)
        xyz.append(volume.grid.coordinates(index))
        target.append(volume.classes[tuple(index.T)])
    return np.concatenate(xyz), np.concatenate(target).astype(np.int64)


def _save_checkpoint(path: Path, epoch: int, model: nn.Module, latents: torch.Tensor, optimiser: torch.optim.Optimizer,
                     rng: np.random.Generator, device: str) -> None:
    state = {"epoch": epoch, "model": model.state_dict(), "latents": latents.detach().cpu(),
             "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if str(device).startswith("cuda") else None}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _resume(path: Path, model: nn.Module, latents: torch.Tensor, optimiser: torch.optim.Optimizer,
            rng: np.random.Generator, device: str) -> int:
    """Restore a checkpoint written by :func:`_save_checkpoint`; returns the last finished epoch."""
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        latents.copy_(state["latents"].to(device))
    optimiser.load_state_dict(state["optimiser"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["epoch"])


def train_decoder(volumes: Sequence[TrainingVolume], s: ImplicitFieldSettings, seed: int, device: str = "cpu",
                  progress: bool = True, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                  checkpoint: Path | None = None) -> tuple[ImplicitDecoder, torch.Tensor]:
    """The network and one latent per volume ``VxD``, optimised jointly (the code's ``train_network``):
    per epoch every volume once, ``scenes_per_batch`` volumes x ``samples_per_scene`` voxels a step;
    cross-entropy + ``code_regularisation`` x latent norm (ramped in over 100 epochs); Adam with the
    step schedule (``lr`` network, ``latent_lr`` latents, halved every ``lr_step`` epochs).

    With ``checkpoint`` (a file path) the state is written every ``CHECKPOINT_EVERY`` epochs and a
    killed training resumes from it with the same result. The global torch RNG is left as it was.
    """
    devices = [torch.device(device)] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = ImplicitDecoder(s).to(device).train()
        latents = initial_latents(len(volumes), s.latent_dim, torch.Generator().manual_seed(seed)).to(device)
        latents.requires_grad_(True)
        optimiser = torch.optim.Adam([{"params": model.parameters(), "lr": s.lr},
                                      {"params": [latents], "lr": s.latent_lr}])
        done = 0
        if checkpoint is not None and Path(checkpoint).is_file():
            done = _resume(Path(checkpoint), model, latents, optimiser, rng, device)
        for epoch in tqdm(range(done + 1, s.epochs + 1), desc="3D IF training", unit="epoch", initial=done,
                          total=s.epochs, disable=not progress):
            for group, lr in zip(optimiser.param_groups, (s.lr, s.latent_lr)):
                group["lr"] = lr * s.lr_factor ** (epoch // s.lr_step)
            order, losses = rng.permutation(len(volumes)), []
            for start in range(0, len(volumes), s.scenes_per_batch):
                chosen = order[start:start + s.scenes_per_batch]
                xyz, target = _batch([volumes[i] for i in chosen], s.samples_per_scene, rng)
                index = torch.as_tensor(np.repeat(chosen, s.samples_per_scene), device=device)
                bound_latents(latents, s.code_bound)
                batch_latents = latents[index]
                logits = model(batch_latents, torch.as_tensor(xyz, device=device))
                loss = nn.functional.cross_entropy(logits, torch.as_tensor(target, device=device))
                regulariser = s.code_regularisation * min(1.0, epoch / 100) * batch_latents.norm(dim=1).mean()
                optimiser.zero_grad()
                (loss + regulariser).backward()
                optimiser.step()
                losses.append(loss.item())
            if on_epoch is not None:
                on_epoch(epoch, {"loss": float(np.mean(losses))})
            if checkpoint is not None and (epoch % CHECKPOINT_EVERY == 0 or epoch == s.epochs):
                _save_checkpoint(Path(checkpoint), epoch, model, latents, optimiser, rng, device)
        bound_latents(latents, s.code_bound)
    return model.eval(), latents.detach()


def fit_latent(model: ImplicitDecoder, classes: np.ndarray, grid: VoxelGrid, s: ImplicitFieldSettings, seed: int,
               device: str = "cpu", latent: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """A latent ``D`` for a new volume's classes ``XxYxZ``, the network frozen (the code's
    ``get_lat_vecs``): Adam (``test_lr``) on the cross-entropy of voxels drawn from the whole
    volume, ``test_steps`` steps of ``test_samples`` voxels then ``test_refine_steps`` of
    ``test_refine_samples``; from ``latent`` when given, else a random one."""
    rng = np.random.default_rng(seed)
    if latent is None:
        latent = initial_latents(1, s.latent_dim, torch.Generator().manual_seed(seed))[0]
    latent = latent.detach().clone().to(device).reshape(1, -1).requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=s.test_lr)
    model.eval().requires_grad_(False)
    all_slices = np.arange(classes.shape[2])
    phases = [(s.test_samples, s.test_steps), (s.test_refine_samples, s.test_refine_steps)]
    schedule = [count for count, steps in phases for _ in range(steps)]
    try:
        for count in tqdm(schedule, desc="3D IF latent fit", unit="step", leave=False, disable=not progress):
            index = sample_voxels(classes.shape, all_slices, count, rng)
            xyz = torch.as_tensor(grid.coordinates(index), device=device)
            target = torch.as_tensor(classes[tuple(index.T)].astype(np.int64), device=device)
            bound_latents(latent, s.code_bound)
            loss = nn.functional.cross_entropy(model(latent.expand(count, -1), xyz), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        model.requires_grad_(True)
    bound_latents(latent, s.code_bound)
    return latent.detach()[0]


def voxel_cross_entropy(model: ImplicitDecoder, latent: torch.Tensor, classes: np.ndarray, grid: VoxelGrid,
                        batch_voxels: int, device: str = "cpu") -> np.ndarray:
    """Cross-entropy ``XxYxZ`` float32 of every voxel's class under the field of ``latent`` ``D``,
    evaluated ``batch_voxels`` at a time (memory stays flat whatever the volume's size)."""
    target = classes.ravel().astype(np.int64)
    out = np.empty(target.size, np.float32)
    model.eval()
    with torch.no_grad():
        for start in range(0, target.size, batch_voxels):
            stop = min(start + batch_voxels, target.size)
            xyz = torch.as_tensor(grid.coordinates(grid.indices(start, stop)), device=device)
            logits = model(latent.to(device).reshape(1, -1).expand(stop - start, -1), xyz)
            loss = nn.functional.cross_entropy(logits, torch.as_tensor(target[start:stop], device=device),
                                               reduction="none")
            out[start:stop] = loss.cpu().numpy()
    return out.reshape(classes.shape)
