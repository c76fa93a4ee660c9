"""Learned convolutional front end: log-mel frames (100 Hz) -> one vector per video frame (25 Hz).

The offline default audio feature of stage 1 (docs/architecture.md, "Stage 1"; "log-mel + a learned
convolutional front end"), used in place of wav2vec2 when no pretrained weights are on disk.
"""

from __future__ import annotations

import torch
from torch import nn


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, L] sequence, independently at every step.

    Unlike BatchNorm / GroupNorm it never mixes time steps, so a feature depends only on its
    receptive field (streaming-friendly, and the same in train and eval mode).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _conv_block(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=padding),
        _ChannelLayerNorm(out_ch),
        nn.GELU(),
    )


class MelConvFrontEnd(nn.Module):
    """Conv1d stack with total stride ``stride`` over mel frames.

    One 3-tap convolution for local context, then ``log2(stride)`` blocks of a 4-tap, stride-2
    convolution (with padding 1, which keeps the output of video frame f centred on the
    centre of its own mel frames ``stride f .. stride f + stride - 1``), then a 1x1
    projection. Each block is Conv1d -> LayerNorm over channels -> GELU.

    Args:
        n_mels: mel channels of the input.
        out_dim: feature size per video frame.
        stride: mel frames per video frame (a power of two; 4 for a 10 ms hop at 25 fps).
        hidden_dim: channels of the hidden convolutions.
    """

    def __init__(self, n_mels: int, out_dim: int, stride: int = 4, hidden_dim: int = 256):
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two, got {stride}")
        self.stride = stride
        blocks = [_conv_block(n_mels, hidden_dim, kernel=3, stride=1, padding=1)]
        for _ in range(stride.bit_length() - 1):
            blocks.append(_conv_block(hidden_dim, hidden_dim, kernel=4, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Conv1d(hidden_dim, out_dim, kernel_size=1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, stride * T, n_mels] float -> features [B, T, out_dim], same device."""
        if mel.shape[1] % self.stride:
            raise ValueError(f"mel length {mel.shape[1]} is not a multiple of stride {self.stride}")
        x = self.blocks(mel.transpose(1, 2))  # [B, hidden, T]
        return self.proj(x).transpose(1, 2)  # [B, T, out_dim]
