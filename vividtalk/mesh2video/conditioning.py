"""Conditioning of stage 2 (Mesh-to-Video): projected textures and lip heatmaps.

- The projected texture (VividTalk, docs/architecture.md, stage 2): the driven mesh rendered
  with the z-buffer in its NCC colours (:meth:`MeshFlow.render
  <vividtalk.mesh2video.mesh_flow.MeshFlow.render>`, the same rasterisation that gives the mesh
  flow) gives ``PT_in``; the outer region (hair, torso, background)
  gives ``PT_out``; ``PT = PT_in * M + PT_out * (1 - M)`` with ``M`` the rendered face mask.
  The outer texture always comes from the *source* frame (at inference there is no driving
  frame): the source pixels outside the source's face label, so that source and driving
  textures differ only where the face moved.
- Lip landmarks become Gaussian heatmaps; the lip branch takes driving minus source.
"""

from __future__ import annotations

import torch

from ..face.segmentation import FACE


"""Label of the face region in a clip's masks (0 background, 1 hair/torso, 2 face)."""


def outer_texture(image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``PT_out``: the frame outside its face region.

    Args:
        image: float [B, 3, H, W] in [0, 1]; labels: int [B, H, W] (see :data:`vividtalk.face.segmentation.FACE`).
    Returns:
        float [B, 3, H, W]: the image where the label is not the face, 0 inside the face.
    """
    return image * (labels != FACE)[:, None].to(image.dtype)


def compose_texture(rendered: dict[str, torch.Tensor], outer: torch.Tensor) -> torch.Tensor:
    """``PT = PT_in * M + PT_out * (1 - M)`` from a :meth:`MeshFlow.render
    <vividtalk.mesh2video.mesh_flow.MeshFlow.render>` (``ncc``, ``face``) and ``PT_out``
    float [B, 3, H, W]: float [B, 3, H, W]."""
    m = rendered["face"]
    return rendered["ncc"] * m + outer * (1.0 - m)


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
    gx = torch.exp(-((axis[None, None, :] - p[..., 0:1]) ** 2) / (2 * sigma**2))  # [B, N, S] along x (columns)
    gy = torch.exp(-((axis[None, None, :] - p[..., 1:2]) ** 2) / (2 * sigma**2))  # [B, N, S] along y (rows)
    return gy[..., :, None] * gx[..., None, :]  # [B, N, S, S]: a 2-D Gaussian is separable


def lip_heatmap_difference(source_lips: torch.Tensor, driving_lips: torch.Tensor, size: int, image_size: int,
                           sigma: float = 1.5) -> torch.Tensor:
    """The lip branch's input: driving minus source heatmaps, float [B, N, size, size] in [-1, 1]."""
    return gaussian_heatmaps(driving_lips, size, image_size, sigma) - gaussian_heatmaps(source_lips, size, image_size,
                                                                                         sigma)
