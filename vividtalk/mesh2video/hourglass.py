"""The lip branch's hourglass: driving-minus-source lip heatmaps -> 2-D lip motion.

VividTalk converts the lip landmarks to Gaussian heatmaps; "an Hourglass network takes the
subtracted heatmaps as input and outputs 2-D lip motion, which is concatenated with the face
motion" (seed, Mesh-To-Video). A U-Net style encoder/decoder with skip connections (the
hourglass of first-order-model's keypoint detector and dense motion network).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, DownBlock, UpBlock


class Hourglass(nn.Module):
    """Heatmap difference [B, N, S, S] -> lip motion features and a 2-D lip flow.

    Args:
        in_channels: N, lip landmarks (one heatmap each).
        block_channels: channels of the first level; each level doubles them.
        num_blocks: down/up levels (S must be divisible by 2 ** num_blocks).
        max_channels: cap on a level's channels.
        out_channels: channels of the returned lip motion features.
    """

    def __init__(self, in_channels: int = 40, block_channels: int = 32, num_blocks: int = 3,
                 max_channels: int = 256, out_channels: int = 32):
        super().__init__()
        widths = [min(max_channels, block_channels * 2**i) for i in range(num_blocks + 1)]
        self.num_blocks = num_blocks
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(DownBlock(widths[i], widths[i + 1]) for i in range(num_blocks))
        self.up = nn.ModuleList(UpBlock(widths[i + 1] * (1 if i == num_blocks - 1 else 2), widths[i])
                                for i in reversed(range(num_blocks)))
        self.features = nn.Conv2d(2 * widths[0], out_channels, 3, padding=1)
        self.flow = nn.Conv2d(out_channels, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)  # no lip motion before training
        nn.init.zeros_(self.flow.bias)
        self.out_channels = out_channels

    def forward(self, heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            heatmaps: float [B, N, S, S], driving minus source (``lip_heatmap_difference``).
        Returns:
            dict with ``features`` [B, out_channels, S, S] (the lip motion the VAE fuses) and
            ``flow`` [B, 2, S, S] (the 2-D lip motion it reads out, normalised units).
        """
        if heatmaps.shape[-1] % 2**self.num_blocks:
            raise ValueError(f"heatmap size {heatmaps.shape[-1]} is not divisible by 2^{self.num_blocks}")
        skips = [self.stem(heatmaps)]  # [B, C0, S, S]
        for block in self.down:
            skips.append(block(skips[-1]))  # [B, C_i, S / 2^i, S / 2^i]
        x = skips.pop()
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], dim=1)  # [B, 2 C_i, S / 2^i, ...]
        features = self.features(x)  # [B, out, S, S]
        return {"features": features, "flow": self.flow(features)}
