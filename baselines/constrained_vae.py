"""The VAE of AMCons and GradCAMCons (Silva-Rodriguez et al., "Constrained unsupervised anomaly
segmentation", MedIA 2022; code jusiro/constrained_anomaly_segmentation, ``code/models/models.py``,
``code/methods/trainers/AMCons.py``, ``gradCAMCons.py``, ``code/methods/losses/losses.py``).

Network, as the code builds it (``dense=True``, ``n_blocks=4``): a 7x7 stride-2 convolution to 64
channels (no BN, no max-pool), ResNet-18's four stages (random init), a dense variational latent
(``latent_dim``), and a decoder of four upsampling residual blocks (256 -> 16 channels) and a 3x3
output convolution giving logits. The attention map is the channel mean of an encoder stage's
activation (``attention_block``; the code's ``level_cams=-4``: the first stage, at half resolution),
bilinearly upsampled to the input size (``align_corners=True``, as the code).

Losses (sums over pixels and latent units divided by the batch size, as the code):
reconstruction = BCE with logits against the input in [0, 1]; KL to N(0, I); AMCons subtracts
``w_H x`` the mean entropy of the softmax of the attention over each slice's (eroded) brain pixels,
so training spreads attention evenly over normal tissue; GradCAMCons adds ``w x`` the extended
log-barrier of ``1 - mean(sigmoid(attention)) - p`` (``p`` = ``p_activation``, the code's 0.01), which
pushes the attention of normal slices towards 1 everywhere; the sigmoid is taken at the stage's
resolution, before the upsampling, as the code does. The code's ``grad_cam`` computes the
gradient of ``sum(mu)`` but, its weighting commented out, returns the plain channel mean: that unused
gradient is not computed here (same values). At test GradCAMCons normalises the channel mean as the
code's ``min_max`` does (subtract the smallest row maximum + 1e-3, divide by the maximum + 1e-3), on
the stage-resolution map (112 px for 224-px inputs), then upsamples, as the code.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from tqdm.auto import tqdm

from baselines.settings import ConstrainedVaeSettings
from clisc.cache import atomic_write_bytes

METHODS = ("amcons", "gradcamcons")
STEM_CHANNELS = 64
DECODER_CHANNELS = 256  # the code's nf0 = ResNet-18's 512 features // 2


class Encoder(nn.Module):
    """``Bx1xSxS`` -> (z, mu, logvar ``BxL``, the four stages' activations ``BxC_ixS_ixS_i``)."""

    def __init__(self, input_size: int, latent_dim: int):
        super().__init__()
        self.stem = nn.Conv2d(1, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        resnet = torchvision.models.resnet18(weights=None)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        features = 512 * (input_size // 16) ** 2
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        activations = []
        for stage in self.stages:
            x = stage(x)
            activations.append(x)
        flat = x.flatten(1)
        mu, logvar = self.mu(flat), self.logvar(flat)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return z, mu, logvar, activations


class UpBlock(nn.Module):
    """The code's ``BasicBlock``: a residual block; with ``upsample`` the first convolution's output
    and the 1x1-projected identity are upsampled x2 (nearest)."""

    def __init__(self, cin: int, cout: int, upsample: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.up = nn.Upsample(scale_factor=2) if upsample else nn.Identity()
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Upsample(scale_factor=2),
                                  nn.BatchNorm2d(cout)) if upsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.up(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x))


class Decoder(nn.Module):
    """``BxL`` -> logits ``Bx1xSxS``: dense to ``256 x S/16 x S/16``, four x2 blocks, 3x3 conv."""

    def __init__(self, input_size: int, latent_dim: int):
        super().__init__()
        self.side = input_size // 16
        self.dense = nn.Linear(latent_dim, DECODER_CHANNELS * self.side ** 2)
        widths = [DECODER_CHANNELS // 2 ** i for i in range(5)]  # 256, 128, 64, 32, 16
        self.blocks = nn.Sequential(*[nn.Sequential(UpBlock(widths[i], widths[i + 1], upsample=True),
                                                    UpBlock(widths[i + 1], widths[i + 1])) for i in range(4)])
        self.out = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, DECODER_CHANNELS, self.side, self.side)
        return self.out(self.blocks(x))


class ConstrainedVae(nn.Module):
    """Encoder + decoder; ``forward(x Bx1xSxS)`` -> (logits ``Bx1xSxS``, mu, logvar ``BxL``,
    attention ``BxSxS``: the channel mean of stage ``attention_block``, upsampled to SxS)."""

    def __init__(self, input_size: int, latent_dim: int, attention_block: int):
        super().__init__()
        self.input_size, self.attention_block = input_size, attention_block
        self.encoder = Encoder(input_size, latent_dim)
        self.decoder = Decoder(input_size, latent_dim)

    def forward(self, x: torch.Tensor, normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``normalise`` (``BxhxW -> BxhxW``) is applied to the channel mean at the stage's own
        resolution, before the upsampling, as the code's ``grad_cam`` normalises before its
        ``interpolate`` (GradCAMCons: sigmoid in training, min-max at test)."""
        z, mu, logvar, activations = self.encoder(x)
        attention = channel_mean_attention(activations[self.attention_block - 1], self.input_size, normalise)
        return self.decoder(z), mu, logvar, attention


def build_vae(settings: ConstrainedVaeSettings) -> ConstrainedVae:
    return ConstrainedVae(settings.input_size, settings.latent_dim, settings.attention_block)


def channel_mean_attention(activation: torch.Tensor, size: int,
                           normalise: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Attention ``BxSxS``: the channel mean of ``activation`` ``BxCxHxW`` (``normalise``d at HxW
    when given), bilinearly upsampled to SxS (``align_corners=True``, as the code)."""
    am = activation.mean(dim=1)
    if normalise is not None:
        am = normalise(am)
    return F.interpolate(am[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0]


# ------------------------------------------------------------------------------------------- losses
def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BCE with logits, summed over pixels, divided by the batch size (``Bx1xSxS`` both)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over units, divided by the batch size (``BxL``)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]


def attention_entropy(attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the entropy of ``softmax(attention)`` over each slice's ``mask`` pixels
    (``BxSxS`` both; a slice with an empty mask contributes 0). AMCons maximises it."""
    logits = attention.flatten(1).masked_fill(~mask.flatten(1), float("-inf"))
    has_pixels = mask.flatten(1).any(dim=1)
    logits = torch.where(has_pixels[:, None], logits, torch.zeros_like(logits))  # no all -inf rows
    p = torch.softmax(logits, dim=1)
    terms = torch.where(mask.flatten(1), p * torch.log(p + 1e-12), torch.zeros_like(p))
    return torch.where(has_pixels, -terms.sum(dim=1), torch.zeros_like(has_pixels, dtype=p.dtype)).mean()


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """The code's extended log-barrier of the constraint ``z <= 0`` (elementwise, summed):
    ``-log(-z)/t`` for ``z <= -1/t^2``, else the tangent line ``t z - log(1/t^2)/t + 1/t``."""
    inside = z <= -1.0 / t ** 2
    barrier = -torch.log(torch.where(inside, -z, torch.ones_like(z))) / t
    linear = t * z - float(np.log(1.0 / t ** 2)) / t + 1.0 / t
    return torch.where(inside, barrier, linear).sum()


def size_constraint(activation_map: torch.Tensor, p: float, t: float) -> torch.Tensor:
    """GradCAMCons' term: ``log_barrier(1 - mean(activation_map) - p)`` summed over the batch, divided
    by the batch size (``activation_map`` ``BxSxS`` in (0, 1): the sigmoid of the channel mean at the
    stage's resolution, upsampled, as the code's ``grad_cam(normalization='sigm')`` + ``interpolate``)."""
    z = 1.0 - activation_map.mean(dim=(1, 2)) - p
    return log_barrier(z, t) / activation_map.shape[0]


def min_max_like_code(attention: torch.Tensor) -> torch.Tensor:
    """GradCAMCons' test-time normalisation ``BxSxS`` (the code's ``grad_cam(normalization='min_max')``):
    subtract the smallest of the row maxima + 1e-3, then divide by the new maximum + 1e-3."""
    low = attention.amax(dim=-1).amin(dim=-1)[:, None, None] + 1e-3
    shifted = attention - low
    return shifted / (shifted.amax(dim=(-2, -1))[:, None, None] + 1e-3)


def vae_loss(model: ConstrainedVae, x: torch.Tensor, mask: torch.Tensor, method: str,
             settings: ConstrainedVaeSettings, constrained: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of a batch ``x`` ``Bx1xSxS`` in [0, 1] with brain masks ``BxSxS`` bool, and its terms."""
    logits, mu, logvar, attention = model(x, None if method == "amcons" else torch.sigmoid)
    rec, kl = reconstruction_loss(logits, x), kl_loss(mu, logvar)
    loss = rec + settings.w_kl * kl
    if method == "amcons":  # the entropy is maximised
        name, term, sign = "entropy", attention_entropy(attention, mask), -1.0
    else:
        name, term, sign = "barrier", size_constraint(attention, settings.p_activation, settings.t_barrier), 1.0
    if constrained:
        loss = loss + sign * settings.w_constraint * term
    return loss, {key: float(value.detach()) for key, value in
                  (("loss", loss), ("reconstruction", rec), ("kl", kl), (name, term))}


# ------------------------------------------------------------------------------------ train / infer
def train_vae(images: np.ndarray, masks: np.ndarray, method: str, settings: ConstrainedVaeSettings, *,
              seed: int, device: str = "cpu", progress: bool = True, checkpoint: Path | None = None,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> ConstrainedVae:
    """Train on ``images`` ``NxSxS`` (float, [0, 1]) with brain masks ``NxSxS`` bool (Adam, shuffled
    batches, the last partial batch kept; at most ``settings.iterations_per_epoch`` of them an epoch). With ``checkpoint`` (a file) the model, optimiser and epoch
    are saved after every epoch and a re-run resumes from them; batch order depends on (seed, epoch)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(seed)
    model = build_vae(settings).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start = state["epoch"]
    model.train()
    n = len(images)
    for epoch in tqdm(range(start, settings.epochs), desc=f"{method} VAE", disable=not progress,
                      initial=start, total=settings.epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        torch.manual_seed(seed * 100_003 + epoch)  # the reparameterisation noise, reproducible on resume
        sums: dict[str, float] = {}
        batches = range(0, n, settings.batch_size)[:settings.iterations_per_epoch]  # None: every batch
        for begin in batches:
            idx = order[begin:begin + settings.batch_size]
            x = torch.from_numpy(images[idx].astype(np.float32))[:, None].to(device)
            mask = torch.from_numpy(masks[idx]).to(device)
            loss, terms = vae_loss(model, x, mask, method, settings, constrained=epoch >= settings.warmup_epochs)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value / len(batches)
        if checkpoint is not None:  # a temporary name of its own: concurrent runs never share one
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch + 1}, buffer)
            atomic_write_bytes(checkpoint, buffer.getvalue())
        if on_epoch is not None:
            on_epoch(epoch + 1, sums)
    return model.eval()


@torch.no_grad()
def anomaly_maps(model: ConstrainedVae, images: np.ndarray, masks: np.ndarray, method: str,
                 batch_size: int = 32) -> np.ndarray:
    """Anomaly maps ``NxSxS`` float32 of inputs ``NxSxS`` (eval mode), zero outside ``masks``
    ``NxSxS``: AMCons the attention as it is, GradCAMCons its code-style min-max normalisation (of the
    stage-resolution map, before the upsampling, as the code)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(images.shape, np.float32)
    for begin in range(0, len(images), batch_size):
        x = torch.from_numpy(images[begin:begin + batch_size].astype(np.float32))[:, None].to(device)
        attention = model(x, min_max_like_code if method == "gradcamcons" else None)[3]
        out[begin:begin + batch_size] = attention.float().cpu().numpy()
    return np.where(masks, out, 0.0).astype(np.float32)
