"""Rigid similarity poses: Euler angles, matrices, and weighted Procrustes (Umeyama).

A pose vector P has 7 numbers (the clip contract's pose [T, 7], docs/architecture.md):
``(pitch, yaw, roll, tx, ty, tz, scale)``, angles in radians, translation and scale in the
units of the target (pixels for tracked faces). It maps a canonical point X to
``scale * R @ X + t`` with ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``. Axes follow the image:
x right, y down, z away from the camera, so the identity rotation is a frontal face.
"""

from __future__ import annotations

import torch

POSE_DIM = 7


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(pitch, yaw, roll) [..., 3] -> rotation matrices [..., 3, 3], R = Rz @ Ry @ Rx."""
    a, b, c = angles.unbind(-1)
    ca, sa, cb, sb, cc, sc = a.cos(), a.sin(), b.cos(), b.sin(), c.cos(), c.sin()
    row0 = torch.stack([cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa], -1)
    row1 = torch.stack([sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa], -1)
    row2 = torch.stack([-sb, cb * sa, cb * ca], -1)
    return torch.stack([row0, row1, row2], -2)


def matrix_to_euler(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> (pitch, yaw, roll) [..., 3] (inverse of
    :func:`euler_to_matrix` for |yaw| < pi/2)."""
    yaw = torch.asin((-rot[..., 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.stack([pitch, yaw, roll], -1)


def apply_pose(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Transform canonical points by poses.

    Args:
        points: [..., V, 3] canonical coordinates.
        pose: [..., 7] pose vectors (broadcast against points' leading dims).
    Returns:
        [..., V, 3] ``scale * R @ X + t``.
    """
    rot = euler_to_matrix(pose[..., :3])
    out = torch.einsum("...ij,...vj->...vi", rot, points)
    return out * pose[..., 6, None, None] + pose[..., None, 3:6]


def invert_pose(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Map posed points [..., V, 3] back to the canonical frame (inverse of apply_pose)."""
    rot = euler_to_matrix(pose[..., :3])
    centred = (points - pose[..., None, 3:6]) / pose[..., 6, None, None]
    return torch.einsum("...ji,...vj->...vi", rot, centred)


def procrustes(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted similarity alignment (Umeyama 1991): pose with target ~= apply_pose(source, pose).

    Args:
        source: [..., N, 3] canonical points (e.g. the identity shape).
        target: [..., N, 3] observed points.
        weights: [N] or [..., N] non-negative weights (None = uniform).
    Returns:
        [..., 7] pose vectors.
    """
    if weights is None:
        weights = torch.ones(source.shape[-2], dtype=source.dtype, device=source.device)
    w = (weights / weights.sum(-1, keepdim=True))[..., None]  # [..., N, 1]
    mu_s = (w * source).sum(-2, keepdim=True)
    mu_t = (w * target).sum(-2, keepdim=True)
    xs, xt = source - mu_s, target - mu_t
    cov = torch.einsum("...ni,...nj->...ij", w * xt, xs)  # [..., 3, 3]
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[..., 2] = torch.sign(torch.det(u @ vh))  # forbid reflections
    rot = u @ torch.diag_embed(d) @ vh
    var_s = (w * xs.pow(2)).sum((-2, -1))
    scale = (sig * d).sum(-1) / var_s
    trans = mu_t[..., 0, :] - scale[..., None] * torch.einsum("...ij,...j->...i", rot, mu_s[..., 0, :])
    return torch.cat([matrix_to_euler(rot), trans, scale[..., None]], -1)


def similarity_2d(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares 2-D similarity (rotation, uniform scale, translation) mapping points.

    Args:
        source, target: float [..., N, 2] corresponding points (e.g. pixels).
    Returns:
        float [..., 2, 3] affine matrices A with ``target ~= A[..., :2] @ source + A[..., 2]``.
    """
    zs = torch.complex(source[..., 0].double(), source[..., 1].double())  # a similarity is z -> a z + b
    zt = torch.complex(target[..., 0].double(), target[..., 1].double())
    ms, mt = zs.mean(-1, keepdim=True), zt.mean(-1, keepdim=True)
    a = ((zt - mt) * (zs - ms).conj()).sum(-1) / (zs - ms).abs().pow(2).sum(-1)  # [...]
    b = mt[..., 0] - a * ms[..., 0]
    row0 = torch.stack([a.real, -a.imag, b.real], -1)
    row1 = torch.stack([a.imag, a.real, b.imag], -1)
    return torch.stack([row0, row1], -2).to(source.dtype)
