"""Mesh metrics of audio-driven facial animation (as reported by FaceFormer, CodeTalker,
VividTalk): lip vertex error (LVE) and upper-face dynamics deviation (FDD).

Both take vertex sequences in one frame (canonical, in face heights, for the default face
model) and return values in the same units.
"""

from __future__ import annotations

import torch

from ..face.model import FaceModel


def lip_vertex_error(pred: torch.Tensor, target: torch.Tensor, lip_indices: torch.Tensor) -> torch.Tensor:
    """LVE: per frame the largest L2 error over the lip vertices, averaged over frames.

    Args:
        pred, target: [..., T, V, 3] vertex sequences; lip_indices: int [L].
    Returns:
        [...] mean over frames of max over lip vertices of ||pred - target||.
    """
    err = (pred[..., lip_indices, :] - target[..., lip_indices, :]).norm(dim=-1)  # [..., T, L]
    return err.amax(-1).mean(-1)


def upper_face_vertices(model: FaceModel) -> torch.Tensor:
    """Vertices of the upper face (eyes, brows, forehead, upper cheeks): above the nose tip
    in the mean shape. int64 [U]."""
    y = model.mean[:, 1]
    nose_tip = int(model.mean[:, 2].argmin())  # nearest the camera
    return torch.nonzero(y < y[nose_tip]).squeeze(1)


def face_dynamics_deviation(pred: torch.Tensor, target: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """FDD: how far the upper face's motion variability departs from the ground truth's.

    For every upper-face vertex, the standard deviation over time of its displacement from
    the sequence's mean position; FDD is the mean over vertices of (std of the target minus
    std of the prediction), so a motionless upper face scores the target's full dynamics and
    a matching one scores 0 (it can be negative when the prediction moves more).

    Args:
        pred, target: [..., T, V, 3]; upper: int [U].
    Returns:
        [...].
    """

    def dynamics(x: torch.Tensor) -> torch.Tensor:
        x = x[..., upper, :]
        motion = (x - x.mean(-3, keepdim=True)).norm(dim=-1)  # [..., T, U]
        return motion.std(-2)  # [..., U]

    return (dynamics(target) - dynamics(pred)).mean(-1)
