"""Helpers shared by every caller of the rasterizer: image space -> clip space, and
rendering per-vertex attributes (e.g. VividTalk's normalised coordinate code, NCC,
whose projected texture ``PT_in`` is the z-buffered rendering of per-vertex colours).
"""

from __future__ import annotations

import torch

from vividtalk.render.base import Rasterizer


def image_to_clip(verts: torch.Tensor, height: int, width: int,
                  depth_scale: float | None = None) -> torch.Tensor:
    """Map image-space vertices to clip space (w = 1) for an image of ``height`` x ``width``.

    Image space is MediaPipe's: x = column in pixels, y = row in pixels (0 at the top row,
    as in the rasterizer's output layout), z = depth in pixels, smaller = closer.

    Args:
        verts: float [B, V, 3] or [V, 3] image-space vertices.
        height, width: image size in pixels.
        depth_scale: z_ndc = z / depth_scale; default ``max(height, width)``, which keeps
            a face (depth extent well under its width, centred near z = 0) in [-1, 1].
            Pixels whose z_ndc falls outside [-1, 1] are not drawn.

    Returns:
        float32 [B, V, 4] clip-space (x_ndc, y_ndc, z_ndc, 1) with x_ndc = 2 x / W - 1,
        y_ndc = 2 y / H - 1: pixel (i, j) centres (x, y) = (j + 0.5, i + 0.5).
    """
    if verts.dim() == 2:
        verts = verts[None]
    scale = float(depth_scale) if depth_scale is not None else float(max(height, width))
    x = verts[..., 0] * (2.0 / width) - 1.0
    y = verts[..., 1] * (2.0 / height) - 1.0
    z = verts[..., 2] / scale
    return torch.stack([x, y, z, torch.ones_like(z)], -1).float()


def render_attributes(rasterizer: Rasterizer, verts: torch.Tensor, tri: torch.Tensor,
                      attr: torch.Tensor, height: int, width: int,
                      depth_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffered rendering of per-vertex attributes of image-space meshes.

    Args:
        rasterizer: any ``Rasterizer`` backend.
        verts: float [B, V, 3] or [V, 3] image-space vertices (see ``image_to_clip``).
        tri: int [F, 3] triangles.
        attr: float [B, V, C] or [V, C] per-vertex attributes (e.g. NCC colours).
        height, width: output size; depth_scale: see ``image_to_clip``.

    Returns:
        image: float32 [B, H, W, C], zero outside the mesh.
        mask: float32 [B, H, W, 1], 1 where a triangle covers the pixel.
    """
    pos = image_to_clip(verts, height, width, depth_scale)
    rast = rasterizer.rasterize(pos, tri, (height, width))
    image = rasterizer.interpolate(attr.to(device=rast.device, dtype=torch.float32), rast, tri)
    mask = (rast[..., 3:] > 0).float()
    return image, mask
