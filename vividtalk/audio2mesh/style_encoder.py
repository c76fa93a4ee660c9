"""Style encoder of stage 1: the reference identity -> the personal style ``z_style``.

VividTalk extracts the identity ``alpha`` of the reference image and encodes it into a style
embedding ``z_style`` that is injected into the audio features (seed, "BlendShape and Vertex
Offset Generator"). Here the identity is the clip's neutral shape ``S + alpha U_id`` [V, 3]
(what the fitting and the clip format store), so the encoder works for any linear face model:
it takes the shape's offset from the model's mean shape, in units of ``offset_scale`` face
heights, and maps it through an MLP.
"""

from __future__ import annotations

import torch
from torch import nn


class StyleEncoder(nn.Module):
    """Identity shape [B, V, 3] -> ``z_style`` [B, style_dim].

    Args:
        num_vertices: V of the face model.
        style_dim: size of ``z_style``.
        hidden_dim: width of the MLP's hidden layers.
        num_layers: linear layers of the MLP (>= 1).
        offset_scale: the unit of the identity offsets (face heights); identities of one
            topology differ by about 1 % of the face height.
        face_model: path of a face model file whose mean shape is the reference; None: the
            packaged default model (V must then be 468).
        dropout: dropout between hidden layers (training only).
    """

    def __init__(self, num_vertices: int = 468, style_dim: int = 128, hidden_dim: int = 256, num_layers: int = 2,
                 offset_scale: float = 0.01, face_model: str | None = None, dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        from vividtalk.face import FaceModel  # lazy: the face package pulls in mediapipe

        mean = (FaceModel.load(face_model) if face_model else FaceModel.default()).mean
        if mean.shape[0] != num_vertices:
            raise ValueError(f"the face model has {mean.shape[0]} vertices, not num_vertices={num_vertices}")
        self.offset_scale, self.style_dim = offset_scale, style_dim
        # Derived from the face model, not learned: rebuilt at construction, not saved.
        self.register_buffer("mean_shape", mean.clone(), persistent=False)  # [V, 3]
        sizes = [3 * num_vertices] + [hidden_dim] * (num_layers - 1) + [style_dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < num_layers - 1:
                layers += [nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, identity: torch.Tensor) -> torch.Tensor:
        """Identity shapes [B, V, 3] (canonical frame, face heights) -> z_style [B, style_dim]."""
        if identity.dim() != 3 or identity.shape[1:] != self.mean_shape.shape:
            raise ValueError(f"identity must be [B, {self.mean_shape.shape[0]}, 3], got {tuple(identity.shape)}")
        offsets = (identity - self.mean_shape) / self.offset_scale  # [B, V, 3]
        return self.mlp(offsets.flatten(1))  # [B, S]
