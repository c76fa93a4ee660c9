"""Multi-scale patch discriminator of stage 2 (pix2pixHD / first-order-model style).

Each scale is a PatchGAN (strided 4x4 convolutions) on the image downsampled by 2^scale; it
returns its intermediate feature maps for the feature-matching loss ``L_fm`` and the final
one-channel map of real/fake scores for the adversarial loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """One scale: [B, C, H, W] -> list of feature maps, the last [B, 1, H / 2^L, W / 2^L].

    Args:
        in_channels: input channels (image, plus any conditioning concatenated to it).
        channels: channels of the first layer (doubled per layer, capped at max_channels).
        num_layers: strided layers.
        max_channels: cap on channels.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 3, max_channels: int = 256):
        super().__init__()
        layers, c_in = [], in_channels
        for i in range(num_layers):
            c_out = min(max_channels, channels * 2**i)
            norm = nn.Identity() if i == 0 else nn.InstanceNorm2d(c_out, affine=True)
            layers.append(nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), norm, nn.LeakyReLU(0.2)))
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiScaleDiscriminator(nn.Module):
    """PatchGANs at ``num_scales`` resolutions: full, 1/2, 1/4, ...

    Args:
        num_scales: number of scales.
        in_channels, channels, num_layers, max_channels: of each :class:`PatchDiscriminator`.
    """

    def __init__(self, num_scales: int = 2, in_channels: int = 3, channels: int = 32, num_layers: int = 3,
                 max_channels: int = 256):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, channels, num_layers, max_channels) for _ in range(num_scales)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Image(s) [B, C, H, W] -> per scale the list of feature maps (last: the scores)."""
        out = []
        for k, scale in enumerate(self.scales):
            out.append(scale(F.avg_pool2d(x, 2**k) if k else x))
        return out
