"""Conditioning of stage 2 (Mesh-to-Video): projected textures and lip heatmaps.

- The projected texture (VividTalk, DESIGN.md section 5): the driven mesh rendered with the
  z-buffer in its NCC colours gives ``PT_in``; the outer region (hair, torso, background)
  gives ``PT_out``; ``PT = PT_in * M + PT_out * (1 - M)`` with ``M`` the rendered face mask.
  The outer texture always comes from the *source* frame (at inference there is no driving
  frame): the source pixels outside the source's face label, so that source and driving
  textures differ only where the face moved.
- Lip landmarks become Gaussian heatmaps; the lip branch takes driving minus source.
"""

from __future__ import annotations

import torch

from ..face.model import FaceModel
from ..render import Rasterizer, render_attributes

FACE_LABEL = 2
"""Label of the face region in a clip's masks (0 background, 1 hair/torso, 2 face)."""


def outer_texture(image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``PT_out``: the frame outside its face region.

    Args:
        image: float [B, 3, H, W] in [0, 1]; labels: int [B, H, W] (see :data:`FACE_LABEL`).
    Returns:
        float [B, 3, H, W]: the image where the label is not the face, 0 inside the face.
    """
    return image * (labels != FACE_LABEL)[:, None].to(image.dtype)


def projected_texture(
    rasterizer: Rasterizer, face: FaceModel, vertices: torch.Tensor, outer: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``PT = PT_in * M + PT_out * (1 - M)`` for meshes in crop pixels.

    Args:
        rasterizer: any :class:`~vividtalk.render.Rasterizer` backend.
        face: the face model (triangles, NCC colours).
        vertices: float [B, V, 3] image-space vertices of the crop (x, y pixels, z depth).
        outer: ``PT_out`` float [B, 3, H, W] (:func:`outer_texture` of the source frame).
    Returns:
        (PT float [B, 3, H, W], M float [B, 1, H, W] in {0, 1}), on ``vertices``' device.
    """
    b, _, h, w = outer.shape
    colors = face.ncc_colors().to(vertices)[None].expand(b, -1, -1)  # [B, V, 3]
    image, mask = render_attributes(rasterizer, vertices, face.triangles.to(vertices.device), colors, h, w)
    pt_in, m = image.permute(0, 3, 1, 2), mask.permute(0, 3, 1, 2)  # [B, 3, H, W], [B, 1, H, W]
    return pt_in * m + outer * (1.0 - m), m


def gaussian_heatmaps(points: torch.Tensor, size: int, image_size: int, sigma: float = 1.5) -> torch.Tensor:
    """One Gaussian heatmap per landmark, peaking (value 1) at the landmark.

    Args:
        points: float [B, N, 2] landmarks (x, y) in pixels of an ``image_size`` square image.
        size: heatmap resolution (size x size).
        image_size: the landmarks' image size; pixel centres are mapped by ``size / image_size``.
        sigma: standard deviation in heatmap pixels.
    Returns:
        float [B, N, size, size]; heatmap pixel (i, j) has its centre at (j + 0.5, i + 0.5).
    """
    p = points * (size / image_size)  # [B, N, 2] heatmap pixels
    axis = torch.arange(size, device=points.device, dtype=points.dtype) + 0.5  # [S]
    dx = (axis[None, None, :] - p[..., 0:1]) ** 2  # [B, N, S] along x (columns)
    dy = (axis[None, None, :] - p[..., 1:2]) ** 2  # [B, N, S] along y (rows)
    return torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))  # [B, N, S, S]


def lip_heatmap_difference(source_lips: torch.Tensor, driving_lips: torch.Tensor, size: int, image_size: int,
                           sigma: float = 1.5) -> torch.Tensor:
    """The lip branch's input: driving minus source heatmaps, float [B, N, size, size] in [-1, 1]."""
    return gaussian_heatmaps(driving_lips, size, image_size, sigma) - gaussian_heatmaps(source_lips, size, image_size,
                                                                                         sigma)
