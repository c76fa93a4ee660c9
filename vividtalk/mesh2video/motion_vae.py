"""VividTalk's dual-branch motion VAE: projected textures + lip heatmaps -> dense motion.

Face branch: the source and driving projected textures ``PT`` (concatenated) are encoded to
face-motion features. Lip branch: the :class:`~vividtalk.mesh2video.hourglass.Hourglass` turns
driving-minus-source lip heatmaps into lip-motion features. Both are fused into a latent with a
mean and a log-variance (sampled in training, the mean at inference), decoded, joined again
by the lip features at the motion resolution (the 2-D lip motion "concatenated with the face
motion"), and read out as a dense flow field (to which the hourglass' own 2-D lip flow is
added) and an occlusion map (seed, Mesh-To-Video).

Mesh flow (beyond the paper, docs/architecture.md): with ``mesh_flow=True`` the face encoder
also reads the exact mesh flow of :mod:`~vividtalk.mesh2video.mesh_flow`, the source warped
by it (FOMM-style) and the mouth-interior prior, and the head predicts a *residual* to the
mesh flow and a correction to the occlusion prior (``1 - paint``), both zero at
initialisation: an untrained model returns the source warped by the mesh flow, and a driving
mesh equal to the source's returns the source. ``mesh_flow=False`` is the paper-literal
variant (dense motion from scratch), kept for the ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, DownBlock, PatchBlock, ResBlock, UpBlock, resize_bilinear
from .hourglass import Hourglass


class DualBranchMotionVAE(nn.Module):
    """(PT_src, PT_drv, lip heatmap difference) -> flow, occlusion, latent statistics.

    Args:
        num_lips: lip landmarks N (heatmap channels).
        image_size: side of the projected textures (square).
        motion_size: side of the flow / occlusion maps and of the lip heatmaps
            (``image_size / motion_size`` a power of two).
        latent_size: side of the latent map (``motion_size / latent_size`` a power of two).
        channels: channels of the face encoder at the motion resolution (doubled per level
            below it, capped by max_channels); the textures enter as non-overlapping patches
            (:class:`~vividtalk.mesh2video.blocks.PatchBlock`).
        latent_channels: channels of the latent.
        max_channels: cap on any level's channels.
        lip_channels: channels of the hourglass' lip features.
        hourglass_blocks: levels of the hourglass; hourglass_channels: its first level's channels.
        mesh_flow: refine the mesh flow (True) or predict the motion from scratch (the paper).
        flow_scale: the mesh flow enters the encoder multiplied by this (normalised units are
            small: 0.1 is 13 pixels at 256).
    """

    def __init__(self, num_lips: int = 40, image_size: int = 256, motion_size: int = 64, latent_size: int = 16,
                 channels: int = 32, latent_channels: int = 32, max_channels: int = 64, lip_channels: int = 8,
                 hourglass_blocks: int = 3, hourglass_channels: int = 8, mesh_flow: bool = True,
                 flow_scale: float = 10.0):
        super().__init__()
        self.uses_mesh_flow, self.flow_scale = mesh_flow, flow_scale
        r, to_latent = 2 ** _levels(image_size, motion_size), _levels(motion_size, latent_size)
        self.motion_size, self.latent_channels = motion_size, latent_channels
        width = [min(max_channels, channels * 2**j) for j in range(to_latent + 1)]  # per level below motion size
        inputs = 12 if mesh_flow else 6  # PT source, PT driving (+ mesh flow, warped source, paint)
        self.face_encoder = nn.Sequential(PatchBlock(inputs, channels, r), ResBlock(channels))  # [B, C, m, m]
        self.lip_branch = Hourglass(num_lips, block_channels=hourglass_channels, num_blocks=hourglass_blocks,
                                    max_channels=max_channels, out_channels=lip_channels)
        self.fuse = nn.Sequential(
            ConvBlock(channels + lip_channels, width[0]),
            *(DownBlock(width[j], width[j + 1]) for j in range(to_latent)),
            ResBlock(width[-1]),
        )  # [B, C_l, l, l]
        self.to_stats = nn.Conv2d(width[-1], 2 * latent_channels, 1)  # mean, log-variance
        self.decoder = nn.Sequential(
            ConvBlock(latent_channels, width[-1]), ResBlock(width[-1]),
            *(UpBlock(width[j + 1], width[j]) for j in reversed(range(to_latent))),
        )  # [B, C, m, m]
        self.head = ConvBlock(width[0] + lip_channels, channels)
        self.out = nn.Conv2d(channels, 3, 3, padding=1)  # flow (x, y) and occlusion logit
        with torch.no_grad():  # start from the identity warp (or the mesh flow) with the reference visible
            if mesh_flow:  # a residual and a correction of the prior: exactly zero
                self.out.weight.zero_()
                self.out.bias.zero_()
            else:
                self.out.weight[:2].zero_()
                self.out.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))

    def forward(self, pt_source: torch.Tensor, pt_driving: torch.Tensor, lip_heatmaps: torch.Tensor,
                lip_scale: float = 1.0, sample: bool | None = None, mesh_flow: torch.Tensor | None = None,
                warped_source: torch.Tensor | None = None, paint: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Args:
            pt_source, pt_driving: projected textures float [B, 3, H, W] in [0, 1].
            lip_heatmaps: driving minus source lip heatmaps [B, N, motion, motion].
            mesh_flow: [B, 2, H, W] the mesh flow (normalised units); warped_source: [B, 3, H, W]
                the source warped by it; paint: [B, 1, H, W] the mouth interior to paint.
                Required with ``mesh_flow=True``, ignored otherwise.
            lip_scale: multiplies the lip branch's features (0 removes the branch: ablation).
            sample: draw the latent from N(mu, sigma^2) (default: in training mode only).
        Returns:
            dict with ``flow`` (normalised offsets, see ``blocks.warp``): the decoded dense
            motion plus the hourglass' 2-D lip motion ``lip_flow``, [B, 2, m, m], or with the
            mesh flow [B, 2, H, W]: the mesh flow plus both, upsampled;
            ``occlusion`` [B, 1, m, m] in [0, 1], ``mu`` / ``logvar`` [B, Z, l, l], ``lip_flow``
            [B, 2, m, m] (the hourglass' 2-D lip motion).
        """
        inputs = [pt_source, pt_driving]
        if self.uses_mesh_flow:
            if mesh_flow is None or warped_source is None or paint is None:
                raise ValueError("a motion VAE with mesh_flow=True needs mesh_flow, warped_source and paint")
            inputs += [mesh_flow * self.flow_scale, warped_source, paint]
        face = self.face_encoder(torch.cat(inputs, dim=1))  # [B, C, m, m]
        lips = self.lip_branch(lip_heatmaps)
        lip_features = lips["features"] * lip_scale  # [B, L, m, m]
        if lip_features.shape[-2:] != face.shape[-2:]:
            raise ValueError(f"lip heatmaps must be {tuple(face.shape[-2:])}, got {tuple(lip_features.shape[-2:])}")
        mu, logvar = self.to_stats(self.fuse(torch.cat([face, lip_features], dim=1))).chunk(2, dim=1)
        logvar = logvar.clamp(-10.0, 10.0)
        sample = self.training if sample is None else sample
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu  # [B, Z, l, l]
        x = self.head(torch.cat([self.decoder(z), lip_features], dim=1))  # [B, C, m, m]
        lip_flow = lips["flow"] * lip_scale  # [B, 2, m, m]
        flow, occlusion = self.out(x).split([2, 1], dim=1)  # [B, 2, m, m], [B, 1, m, m]
        flow = flow + lip_flow
        if not self.uses_mesh_flow:
            return {"flow": flow, "occlusion": torch.sigmoid(occlusion), "mu": mu, "logvar": logvar,
                    "lip_flow": lip_flow}
        m = flow.shape[-1]
        flow = mesh_flow + resize_bilinear(flow, tuple(mesh_flow.shape[-2:]))
        prior = 1.0 - F.adaptive_avg_pool2d(paint, m)  # [B, 1, m, m]
        return {"flow": flow, "occlusion": (prior + occlusion).clamp(0.0, 1.0), "mu": mu, "logvar": logvar,
                "lip_flow": lip_flow}


def _levels(size: int, smaller: int) -> int:
    """Halvings from ``size`` to ``smaller`` (a power of two ratio)."""
    ratio = size // smaller
    if smaller <= 0 or size % smaller or ratio & (ratio - 1):
        raise ValueError(f"{size} / {smaller} must be a power of two")
    return ratio.bit_length() - 1
