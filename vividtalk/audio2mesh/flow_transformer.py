"""The velocity field v_t(x_t, a, s; theta) of MimicTalk's in-context audio-to-motion model.

A non-causal transformer over frames. Per frame its input is, concatenated on channels
(MimicTalk, "audio-guided motion infilling": audio and motion aligned in time, joined on
channels): the noisy motion x_t [D], the context motion (the style prompt and any other known
frames, clean; zero where unknown) [D], the context mask [1] and the projected audio features;
the flow time t enters as a sinusoidal embedding added to every frame. The output is the
velocity dx_t / dt [D] of every frame. The style prompt s is not a separate input: it is the
known part of the sequence (the context), so dropping it (classifier-free guidance) is a mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vividtalk.audio2mesh.attention import TransformerLayer, sinusoidal_encoding


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow times t [B] in [0, 1] -> [B, dim] (scaled by 1000 first,
    so the fastest frequencies resolve steps of 1e-3)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half))
    angle = 1000.0 * t.float()[:, None] * freq[None]  # [B, half]
    return torch.cat([angle.sin(), angle.cos()], -1)  # [B, dim]


class FlowMatchingTransformer(nn.Module):
    """v_t(x_t, a, s): motion velocity of every frame.

    Args:
        motion_dim: D, channels of the motion vector (:class:`~.motion_codec.MotionCodec`).
        audio_dim: A, channels of the audio features (one vector per 25 fps frame).
        d_model, num_layers, num_heads, ffn_dim, dropout: the transformer.
        max_frames: longest sequence (prompt + context + new frames) the positional table covers.
    """

    def __init__(self, motion_dim: int, audio_dim: int, d_model: int = 256, num_layers: int = 4,
                 num_heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.1, max_frames: int = 1024) -> None:
        super().__init__()
        self.motion_dim, self.audio_dim, self.max_frames = motion_dim, audio_dim, max_frames
        self.audio_norm = nn.LayerNorm(audio_dim)
        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.motion_proj = nn.Linear(2 * motion_dim + 1, d_model)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.register_buffer("positions", sinusoidal_encoding(max_frames, d_model), persistent=False)
        self.layers = nn.ModuleList(TransformerLayer(d_model, num_heads, ffn_dim, dropout, cross_attention=False)
                                    for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, motion_dim)
        nn.init.zeros_(self.out.weight)  # starts as the zero field
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, context: torch.Tensor,
                known: torch.Tensor) -> torch.Tensor:
        """Velocity of every frame.

        Args:
            x_t: float [B, T, D] the noisy motion at flow time t.
            t: float [B] flow times in [0, 1] (or a scalar tensor for all).
            audio: float [B, T, A] aligned audio features.
            context: float [B, T, D] clean motion where known (other frames are ignored).
            known: bool [B, T], True where ``context`` holds (prompt and previous frames).
        Returns:
            v: float [B, T, D].
        """
        b, n, _ = x_t.shape
        if n > self.max_frames:
            raise ValueError(f"{n} frames exceed max_frames={self.max_frames}: sample in chunks")
        mask = known.to(x_t.dtype)[..., None]  # [B, T, 1]
        h = self.motion_proj(torch.cat([x_t, context * mask, mask], -1))  # [B, T, d]
        h = h + self.audio_proj(self.audio_norm(audio)) + self.positions[:n]
        t = t.expand(b) if t.dim() == 0 else t
        h = h + self.time_mlp(time_embedding(t, h.shape[-1]).to(h.dtype))[:, None]  # [B, T, d]
        for layer in self.layers:
            h = layer(h)  # non-causal self-attention over all frames
        return self.out(self.out_norm(h))  # [B, T, D]
