"""An audio-motion sync expert (SyncNet's idea on meshes): do these lips move with this audio?

Two small temporal convolution encoders embed a window of ``window`` frames (0.2 s at 25 fps,
SyncNet's five frames) of lip motion and of audio features into a shared unit sphere; in sync
the two embeddings point the same way. The lip motion of a frame is the displacement of the lip
vertices from the identity's neutral mesh (canonical frame, so the head pose and the face shape
do not enter): [L, 3] per frame, flattened. Trained contrastively (:mod:`.sync_module`); used as
MimicTalk's L_sync on the in-context model's one-step estimate of the clean motion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _encoder(in_dim: int, hidden: int, out_dim: int, window: int) -> nn.Sequential:
    """Unpadded convolutions whose receptive field is exactly ``window`` frames (3 + 2 + rest)."""
    return nn.Sequential(
        nn.Conv1d(in_dim, hidden, 3), nn.GELU(),
        nn.Conv1d(hidden, hidden, 3), nn.GELU(),
        nn.Conv1d(hidden, out_dim, window - 4),  # the rest of the window -> one vector
    )


class SyncExpert(nn.Module):
    """Lip-motion and audio embeddings of windows, and their agreement.

    Args:
        lip_dim: channels of a frame's lip motion (3 L); audio_dim: of its audio features.
        hidden, embed_dim: encoder width and embedding size.
        window: frames per window.
        lip_scale: multiplies the lip motion (face heights: a few hundredths) to unit size.
    """

    def __init__(self, lip_dim: int, audio_dim: int, hidden: int = 128, embed_dim: int = 64, window: int = 5,
                 lip_scale: float = 50.0) -> None:
        super().__init__()
        if window < 5:
            raise ValueError(f"window must be at least 5 frames, got {window}")
        self.window, self.lip_scale = window, lip_scale
        self.audio_norm = nn.LayerNorm(audio_dim)
        self.lip_encoder = _encoder(lip_dim, hidden, embed_dim, window)
        self.audio_encoder = _encoder(audio_dim, hidden, embed_dim, window)
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # contrastive temperature, learned (exp: ~10)

    def embed_lips(self, lips: torch.Tensor) -> torch.Tensor:
        """Lip motion [B, T, 3 L] -> unit embeddings of every window [B, T - window + 1, E]."""
        return F.normalize(self.lip_encoder(self.lip_scale * lips.transpose(1, 2)).transpose(1, 2), dim=-1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio features [B, T, A] -> unit embeddings of every window [B, T - window + 1, E]."""
        return F.normalize(self.audio_encoder(self.audio_norm(audio).transpose(1, 2)).transpose(1, 2), dim=-1)

    def forward(self, lips: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Cosine agreement of aligned windows: [B, T - window + 1] in [-1, 1] (1: in sync)."""
        return (self.embed_lips(lips) * self.embed_audio(audio)).sum(-1)


def lip_motion(face, beta: torch.Tensor, lip_offsets: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """The sync expert's lip input: lip-vertex displacement from the neutral face, [B, T, 3 L].

    Args:
        face: the FaceModel; beta [B, T, K]; lip_offsets [B, T, L, 3]; identity [B, V, 3].
    """
    mesh = face.assemble(beta, identity=identity[:, None], lip_offsets=lip_offsets)  # [B, T, V, 3]
    lips = face.lip_indices
    return (mesh[..., lips, :] - identity[:, None, lips, :]).flatten(-2)  # [B, T, 3L]
