"""The holes of the MediaPipe face mesh (eyes, mouth) and how to close them.

The mesh is a surface with three holes: the two eye openings and the inner mouth. Warping
a photo by the mesh (the synthetic corpus, stage 2's mesh flow) needs every face pixel
covered, so each hole is closed by a fan of triangles around a new centre vertex (the mean
of its loop); the pixels the mouth fan covers are the mouth interior.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import FaceModel

HOLE_NAMES = ("right_eye", "left_eye", "mouth")
"""The holes in :func:`hole_loops` order; the mouth is last."""


def hole_loops(model: FaceModel) -> list[np.ndarray]:
    """Ordered vertex loops of the mesh holes: right eye, left eye, inner mouth.

    Each loop is the upper contour (corner to corner) followed by the lower contour walked
    back, without repeating the corners: int64 [n] vertex indices.
    """
    loops = []
    for upper, lower in (("right_eye_upper", "right_eye_lower"),
                         ("left_eye_upper", "left_eye_lower"),
                         ("lips_inner_upper", "lips_inner_lower")):
        up, low = model.regions[upper], model.regions[lower]
        loops.append(np.concatenate([up, low[::-1][1:-1]]).astype(np.int64))
    return loops


def close_holes(triangles: np.ndarray, loops: list[np.ndarray], num_vertices: int) -> np.ndarray:
    """Close each hole with a fan around a new centre vertex (index ``num_vertices + h``).

    Args:
        triangles: int [F, 3] mesh triangles.
        loops: H ordered vertex loops (see :func:`hole_loops`).
        num_vertices: V, the number of mesh vertices.
    Returns:
        int64 [F + sum(len(loop)), 3]: the mesh triangles, then each hole's fan in order.
    """
    fans = [np.asarray(triangles, np.int64)]
    for h, loop in enumerate(loops):
        centre = np.full(len(loop), num_vertices + h)
        fans.append(np.stack([loop, np.roll(loop, -1), centre], 1))
    return np.concatenate(fans)


def add_hole_centres(vertices: torch.Tensor, loops: list[np.ndarray]) -> torch.Tensor:
    """Append each hole's centre (mean of its loop): float [..., V, C] -> [..., V + H, C]."""
    centres = [vertices[..., torch.as_tensor(loop, device=vertices.device), :].mean(-2, keepdim=True)
               for loop in loops]
    return torch.cat([vertices] + centres, -2)


def loop_width(vertices: np.ndarray, loop: np.ndarray) -> float:
    """Corner-to-corner width (pixels) of a hole loop starting at a corner: the largest
    distance from ``loop[0]`` (rotation-invariant). vertices: float [V, 2+]; loop: int [n]."""
    p = np.asarray(vertices, np.float64)[loop, :2]
    return float(np.linalg.norm(p - p[0], axis=1).max())


def mouth_opening(vertices: np.ndarray, loop: np.ndarray) -> float:
    """Mean gap of the inner-lip loop in pixels: polygon area / corner-to-corner width.

    Args:
        vertices: float [V, 2+] image-space vertices; loop: int [n] inner-lip loop.
    """
    p = np.asarray(vertices, np.float64)[loop, :2]
    area = 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))
    return area / (loop_width(vertices, loop) + 1e-6)


def mouth_gap(vertices: torch.Tensor, loop: np.ndarray) -> torch.Tensor:
    """Batched :func:`mouth_opening`: float [B, V, 2+] -> [B] mean inner-lip gap (pixels)."""
    p = vertices[:, torch.as_tensor(loop, device=vertices.device), :2]  # [B, n, 2]
    q = p.roll(-1, dims=1)
    area = 0.5 * (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(1).abs()  # [B]
    width = (p - p[:, :1]).norm(dim=-1).amax(1)  # [B]
    return area / (width + 1e-6)


def lip_gap(model: FaceModel, vertices: torch.Tensor) -> torch.Tensor:
    """:func:`mouth_gap` of the model's inner-mouth loop for any leading dims: [..., V, 2+] -> [...]."""
    flat = vertices.reshape(-1, *vertices.shape[-2:])
    return mouth_gap(flat, hole_loops(model)[-1]).reshape(vertices.shape[:-2])
