"""The per-frame motion vector of the in-context motion model (MimicTalk's ICS-A2M, issue 13).

A frame's motion is what stage 1 predicts today: the blendshape coefficients beta [K], the lip
vertex offsets O_lip [L, 3] in a compact basis (a PCA of the corpus' offsets, ``lip_components``
coefficients), and optionally the head pose [P]. The flow-matching prior is N(0, I), so each
channel is normalised by corpus statistics stored with the model (buffers: they travel with the
weights and the pipeline file).
"""

from __future__ import annotations

import torch
from torch import nn


class MotionCodec(nn.Module):
    """(beta, lip offsets, pose) <-> a normalised motion vector x of ``dim`` channels per frame.

    Layout of x: [beta (K) | lip PCA coefficients (C) | pose (P)], each channel standardised.
    Build one from a corpus with :meth:`fit`; a fresh codec (identity statistics, a truncated
    identity basis) only fixes the sizes, as a module to load a state dict into.

    Args:
        num_expressions: K; num_lip_vertices: L; lip_components: C (<= 3 L); pose_dim: P (0: no pose).
    """

    def __init__(self, num_expressions: int, num_lip_vertices: int, lip_components: int = 16, pose_dim: int = 0):
        super().__init__()
        if not 0 < lip_components <= 3 * num_lip_vertices:
            raise ValueError(f"lip_components must be in 1..{3 * num_lip_vertices}, got {lip_components}")
        self.num_expressions, self.num_lip_vertices = num_expressions, num_lip_vertices
        self.lip_components, self.pose_dim = lip_components, pose_dim
        self.dim = num_expressions + lip_components + pose_dim
        self.register_buffer("lip_mean", torch.zeros(3 * num_lip_vertices))
        self.register_buffer("lip_basis", torch.eye(3 * num_lip_vertices)[:lip_components])  # [C, 3L] orthonormal rows
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))

    @classmethod
    def fit(cls, beta: torch.Tensor, lip_offsets: torch.Tensor, pose: torch.Tensor | None = None,
            lip_components: int = 16, min_std: float = 1e-4) -> "MotionCodec":
        """Statistics from the corpus' frames.

        Args:
            beta: [N, K]; lip_offsets: [N, L, 3]; pose: [N, P] or None; N frames of any clips.
            min_std: floor of the per-channel std (channels that never move stay finite).
        """
        codec = cls(beta.shape[-1], lip_offsets.shape[-2], lip_components, 0 if pose is None else pose.shape[-1])
        flat = lip_offsets.reshape(len(lip_offsets), -1).double()  # [N, 3L]
        mean = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)  # principal directions [3L, 3L]
        codec.lip_mean.copy_(mean.float())
        codec.lip_basis.copy_(vh[:lip_components].float())
        raw = codec._raw(beta.float(), lip_offsets.float(), None if pose is None else pose.float())  # [N, D]
        codec.mean.copy_(raw.mean(0))
        codec.std.copy_(raw.std(0).clamp_min(min_std))
        return codec

    def _raw(self, beta, lip_offsets, pose) -> torch.Tensor:
        flat = lip_offsets.reshape(*lip_offsets.shape[:-2], -1)  # [..., 3L]
        coeffs = (flat - self.lip_mean) @ self.lip_basis.T  # [..., C]
        parts = [beta, coeffs] + ([pose] if self.pose_dim else [])
        return torch.cat(parts, -1)

    def encode(self, beta: torch.Tensor, lip_offsets: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """beta [..., K], lip_offsets [..., L, 3], pose [..., P] -> x [..., D] (normalised)."""
        if self.pose_dim and pose is None:
            raise ValueError("this codec includes the head pose: pass pose")
        return (self._raw(beta, lip_offsets, pose) - self.mean) / self.std

    def decode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x [..., D] -> ``beta`` [..., K], ``lip_offsets`` [..., L, 3] (and ``pose`` [..., P])."""
        raw = x * self.std + self.mean
        k, c = self.num_expressions, self.lip_components
        flat = raw[..., k:k + c] @ self.lip_basis + self.lip_mean  # [..., 3L]
        out = {"beta": raw[..., :k], "lip_offsets": flat.reshape(*flat.shape[:-1], self.num_lip_vertices, 3)}
        if self.pose_dim:
            out["pose"] = raw[..., k + c:]
        return out
