"""VQ-VAE over head-pose sequences: stage A (reconstruction) of VividTalk's head-pose codebook.

``P^_r^{1:f} = D(Z_q) = D(q(E(P_r^{1:f})))`` with ``Z_q = argmin_{z_k in Z} ||z^ - z_k||``,
trained with

    L_rec = ||P_r^{1:f} - P^_r^{1:f}||^2 + ||sg(E(P_r^{1:f})) - z_q||^2
            + commitment * ||sg(z_q) - E(P_r^{1:f})||^2

and the straight-through estimator copying the decoder's gradient to the encoder. The pose
sequences are the 6-D relative features of :mod:`vividtalk.audio2mesh.pose_repr`. They are
tiny numbers (a few degrees, a few percent of a face height), so the model standardises them
with per-axis ``feature_mean`` / ``feature_std`` buffers (set them from the training corpus
with :meth:`PoseVQVAE.set_normalization`); the reconstruction term of ``L_rec`` is measured in
those standardised units, and :meth:`PoseVQVAE.decode` returns features in the original units.

The encoder has a total temporal stride ``downsample`` (a power of two): one code per
``downsample`` frames. The sequence length T must be a multiple of it; the model raises a
``ValueError`` otherwise (pad the sequence, or use ``pose_mapper.map_to_pose`` which pads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vividtalk.audio2mesh.codebook import Codebook


class _ResBlock(nn.Module):
    """Residual temporal block: x + Conv1x1(GELU(Conv3_dilated(GELU(x)))), [B, C, L] -> same."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.gelu(self.conv(F.gelu(x))))


def _res_stack(channels: int, num_layers: int) -> list[nn.Module]:
    return [_ResBlock(channels, dilation=3**i) for i in range(num_layers)]


class PoseVQVAE(nn.Module):
    """Encoder ``E``, codebook ``Z`` and decoder ``D`` of the head-pose codebook.

    Args:
        pose_dim: size of a pose feature (6, see ``pose_repr``).
        hidden_dim: channels of the temporal convolutions.
        code_dim: size of a latent / code vector.
        codebook_size: number of codes K.
        downsample: total temporal stride of the encoder (a power of two).
        num_layers: dilated residual blocks at the latent rate in the encoder and the decoder.
        commitment: weight of the commitment term of ``L_rec``.
        dead_code_threshold: see :class:`~vividtalk.audio2mesh.codebook.Codebook`.
        usage_decay: see :class:`~vividtalk.audio2mesh.codebook.Codebook`.
        normalize_codes: see :class:`~vividtalk.audio2mesh.codebook.Codebook` (the cosine
            codebook; ``z_q`` then lies on the unit sphere).
    """

    def __init__(
        self,
        pose_dim: int = 6,
        hidden_dim: int = 128,
        code_dim: int = 64,
        codebook_size: int = 256,
        downsample: int = 4,
        num_layers: int = 2,
        commitment: float = 0.25,
        dead_code_threshold: float = 0.05,
        usage_decay: float = 0.99,
        normalize_codes: bool = True,
    ):
        super().__init__()
        if downsample < 1 or downsample & (downsample - 1):
            raise ValueError(f"downsample must be a power of two, got {downsample}")
        self.pose_dim, self.code_dim, self.downsample = pose_dim, code_dim, downsample
        self.commitment = commitment
        steps = downsample.bit_length() - 1
        enc: list[nn.Module] = [nn.Conv1d(pose_dim, hidden_dim, 3, padding=1)]
        for _ in range(steps):  # each halves the length
            enc += [nn.GELU(), nn.Conv1d(hidden_dim, hidden_dim, 4, stride=2, padding=1)]
        enc += _res_stack(hidden_dim, num_layers) + [nn.GELU(), nn.Conv1d(hidden_dim, code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(code_dim, hidden_dim, 3, padding=1)]
        dec += _res_stack(hidden_dim, num_layers)
        for _ in range(steps):  # linear upsampling + conv: no checkerboard jitter
            dec += [nn.GELU(), nn.Upsample(scale_factor=2, mode="linear", align_corners=False), nn.Conv1d(hidden_dim, hidden_dim, 3, padding=1)]
        dec += [nn.GELU(), nn.Conv1d(hidden_dim, pose_dim, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.codebook = Codebook(codebook_size, code_dim, dead_code_threshold, usage_decay, normalize_codes)
        self.register_buffer("feature_mean", torch.zeros(pose_dim))
        self.register_buffer("feature_std", torch.ones(pose_dim))

    @torch.no_grad()
    def set_normalization(self, features: torch.Tensor) -> None:
        """Set the per-axis standardisation from corpus features [..., pose_dim]."""
        flat = features.reshape(-1, self.pose_dim)  # [N, 6]
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0, unbiased=False).clamp_min(1e-6))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Pose features [..., pose_dim] -> standardised units, same shape."""
        return (features - self.feature_mean) / self.feature_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised [..., pose_dim] -> pose features in the original units."""
        return x * self.feature_std + self.feature_mean

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """``E``: pose features [B, T, pose_dim] -> ``z_e`` [B, T / downsample, code_dim]."""
        if features.shape[1] % self.downsample:
            raise ValueError(
                f"sequence length {features.shape[1]} is not a multiple of downsample={self.downsample}; pad it"
            )
        x = self.normalize(features).transpose(1, 2)  # [B, 6, T]
        return self.encoder(x).transpose(1, 2)  # [B, T', D]

    def quantize(self, z: torch.Tensor, update: bool | None = None) -> dict[str, torch.Tensor]:
        """``q``: latents [B, T', code_dim] -> the codebook's dict (indices, z_q, losses, ...);
        ``update`` (dead-code resets, usage EMA) defaults to ``self.training``."""
        return self.codebook(z, update=update)

    def decode_normalized(self, z_q: torch.Tensor) -> torch.Tensor:
        """``D`` in standardised units: z_q [B, T', code_dim] -> [B, T' * downsample, pose_dim]."""
        return self.decoder(z_q.transpose(1, 2)).transpose(1, 2)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """``D``: quantised latents [B, T', code_dim] float, or code indices [B, T'] int64,
        -> pose features [B, T' * downsample, pose_dim] in the original units."""
        if not torch.is_floating_point(z_q):
            z_q = self.codebook.lookup(z_q)  # [B, T', D]
        return self.denormalize(self.decode_normalized(z_q))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct pose sequences (stage A).

        Args:
            features: [B, T, pose_dim] float pose features, T a multiple of ``downsample``.
        Returns:
            dict with ``reconstruction`` [B, T, pose_dim] (original units), ``indices``
            [B, T'] int64, ``z_e`` and ``z_q`` [B, T', code_dim], scalars
            ``reconstruction_loss`` (MSE in standardised units), ``codebook_loss``,
            ``commitment_loss``, ``perplexity``, ``codes_used``, and ``loss`` = ``L_rec`` =
            reconstruction + codebook + ``commitment`` * commitment loss.
        """
        z_e = self.encode(features)  # [B, T', D]
        vq = self.quantize(z_e)
        rec = self.decode_normalized(vq["z_q"])  # [B, T, 6] standardised
        rec_loss = F.mse_loss(rec, self.normalize(features))
        loss = rec_loss + vq["codebook_loss"] + self.commitment * vq["commitment_loss"]
        return {
            "reconstruction": self.denormalize(rec),
            "indices": vq["indices"],
            "z_e": z_e,
            "z_q": vq["z_q"],
            "reconstruction_loss": rec_loss,
            "codebook_loss": vq["codebook_loss"],
            "commitment_loss": vq["commitment_loss"],
            "perplexity": vq["perplexity"],
            "codes_used": vq["codes_used"],
            "loss": loss,
        }
