"""Convolutional building blocks shared by the stage-2 networks (first-order-model style).

All blocks map float [B, C_in, H, W] to float [B, C_out, H', W'] on the input's device. Norms
are GroupNorm (batch-size independent: the same in DDP with small per-GPU batches and at
inference on one frame).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ConvBlock(nn.Sequential):
    """Conv3x3 -> GroupNorm -> SiLU, [B, C_in, H, W] -> [B, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), _norm(out_channels), nn.SiLU())


class DownBlock(nn.Sequential):
    """2x average pooling then ConvBlock: [B, C_in, H, W] -> [B, C_out, H / 2, W / 2].

    Pooling first runs the convolution at the lower resolution (4x fewer operations than
    first-order-model's conv-then-pool) for nearly the same receptive field.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AvgPool2d(2), ConvBlock(in_channels, out_channels))


class PatchBlock(nn.Sequential):
    """Non-overlapping ``r`` x ``r`` patches -> features: a stride-``r`` conv, GroupNorm, SiLU.

    [B, C_in, H, W] -> [B, C_out, H / r, W / r]; the same as pixel-unshuffling followed by a
    1x1 convolution, the cheap way into a low-resolution trunk.
    """

    def __init__(self, in_channels: int, out_channels: int, r: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, r, stride=r), _norm(out_channels), nn.SiLU())


class UpBlock(nn.Module):
    """2x nearest upsampling then ConvBlock: [B, C_in, H, W] -> [B, C_out, 2 H, 2 W]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + Conv(SiLU(GN(Conv(SiLU(GN(x)))))), shape kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def identity_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The sampling grid of the identity warp for ``F.grid_sample`` (align_corners=False).

    Returns:
        float [1, H, W, 2], (x, y) of each pixel centre in [-1, 1].
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (2.0 / width) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)[None]  # [1, H, W, 2]


def resize_bilinear(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` of float [B, C, h, w]
    as two matrix products with cached 1-D weights: several times faster on a CPU for the
    few-channel maps (flows, masks) that stage 2 resizes. Returns float [B, C, H, W]."""
    h, w = (size, size) if isinstance(size, int) else size
    if (h, w) == tuple(x.shape[-2:]):
        return x
    rows = _bilinear_matrix(h, x.shape[-2], x.device, x.dtype)
    cols = _bilinear_matrix(w, x.shape[-1], x.device, x.dtype)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(n_out: int, n_in: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """float [n_out, n_in]: 1-D linear resampling weights with ``align_corners=False`` and the
    edges clamped (PyTorch's bilinear convention, no antialiasing)."""
    x = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    lo = x.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = x - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((torch.arange(n_out), lo), 1.0 - w, accumulate=True)
    m.index_put_((torch.arange(n_out), hi), w, accumulate=True)
    return m.to(device=device, dtype=dtype)


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output pixel p samples ``features`` at p + flow(p).

    Args:
        features: float [B, C, H, W].
        flow: float [B, 2, h, w] offsets (x, y) in normalised [-1, 1] units; resized to H x W.
    Returns:
        float [B, C, H, W] (bilinear, border padding); zero flow returns ``features`` exactly.
    """
    b, _, h, w = features.shape
    flow = resize_bilinear(flow, (h, w))
    grid = identity_grid(h, w, features.device, features.dtype) + flow.permute(0, 2, 3, 1)  # [B, H, W, 2]
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
