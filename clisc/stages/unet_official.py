"""Port of the public CLISC code's 3D U-Net (``unet_3D``, feature_scale 4, ``is_batchnorm=True``).

The public code (HiLab-git/CLISC, ``networks/unet_3D.py``, borrowed from Attention-Gated-Networks via
SSL4MIS) builds 5 levels with channels (16, 32, 64, 128, 256); every block is two
conv3x3x3 - InstanceNorm3d (no affine) - ReLU (``activation``: ``leakyrelu``, slope 0.01, is offered
for comparison with MONAI's default); down-sampling is a 2x2x2 max-pool; up-sampling is a
trilinear x2 ``nn.Upsample`` (``align_corners=False``) of the coarser map, concatenated with the skip
(skip first) and fed to a block; the head is a 1x1x1 convolution. Dropout(0.3) is applied to the
bottleneck output and to the output of the *last* (finest) decoder block, right before the head:
that is where the code puts ``dropout2``. Convolution weights use Kaiming-normal (fan_in)
initialisation, as the code's ``init_weights(..., 'kaiming')``; biases keep PyTorch's default.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = ("relu", "leakyrelu")


def activation_layer(name: str) -> nn.Module:
    """``relu`` -> ReLU, ``leakyrelu`` -> LeakyReLU(0.01) (MONAI's default), both in place."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01, inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class DoubleConvBlock(nn.Sequential):
    """Two (conv3x3x3 - InstanceNorm3d - activation): ``BxC_inxXxYxZ -> BxC_outxXxYxZ``."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "relu"):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.InstanceNorm3d(out_channels),
            activation_layer(activation),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.InstanceNorm3d(out_channels),
            activation_layer(activation),
        )


class UpConcatBlock(nn.Module):
    """Trilinear x2 up-sampling of the coarse map, concatenation after the skip, then a block.

    ``skip: BxC_skipxXxYxZ``, ``coarse: BxC_coarsexX/2xY/2xZ/2 -> BxC_skipxXxYxZ``.
    """

    def __init__(self, coarse_channels: int, skip_channels: int, activation: str = "relu"):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv = DoubleConvBlock(coarse_channels + skip_channels, skip_channels, activation)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(coarse)], dim=1))


class OfficialUNet3D(nn.Module):
    """The public code's 3D U-Net: ``Bx1xXxYxZ -> Bxout_channelsxXxYxZ`` (logits).

    X, Y and Z must be divisible by ``2 ** (len(channels) - 1)`` (16 for five levels); the code's
    skip padding for odd sizes never triggers at its 128^3 input and is not reproduced.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 channels: Sequence[int] = (16, 32, 64, 128, 256), dropout: float = 0.3,
                 activation: str = "relu"):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"need at least two levels, got channels={tuple(channels)}")
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in channels:
            self.encoder.append(DoubleConvBlock(previous, width, activation))
            previous = width
        self.pool = nn.MaxPool3d(kernel_size=2)
        self.decoder = nn.ModuleList(
            UpConcatBlock(channels[level + 1], channels[level], activation) for level in reversed(range(len(channels) - 1))
        )
        self.bottleneck_dropout = nn.Dropout(p=dropout)
        self.head_dropout = nn.Dropout(p=dropout)
        self.head = nn.Conv3d(channels[0], out_channels, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        features = image
        for level, block in enumerate(self.encoder):
            if level > 0:
                features = self.pool(features)
            features = block(features)
            skips.append(features)
        features = self.bottleneck_dropout(skips.pop())
        for block in self.decoder:
            features = block(skips.pop(), features)
        return self.head(self.head_dropout(features))
