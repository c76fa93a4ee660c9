"""A slow, obvious rasterizer used as ground truth for ``vividtalk.render`` (tests only).

Python loops over batch items, pixels and triangles, float64 arithmetic, the conventions of
``vividtalk.render.base`` (nvdiffrast's). Visibility is decided with Python floats; the
winning triangle's (u, v, z/w) are then recomputed with torch scalar ops from ``pos`` so
that gradients flow. Only for small images (a few hundred pixels, a handful of triangles).
"""

from __future__ import annotations

import torch


def _screen(p, height: int, width: int):
    """Clip-space vertex (x, y, z, w) -> (column, row, z/w, w); pixel (i, j) centre is (j, i)."""
    x, y, z, w = p
    return ((x / w + 1) * width / 2 - 0.5, (y / w + 1) * height / 2 - 0.5, z / w, w)


def _edge(a, b, px, py):
    """Twice the signed area of (a, b, p); works on floats and tensors alike."""
    return (a[0] - px) * (b[1] - py) - (a[1] - py) * (b[0] - px)


def _weights(v0, v1, v2, px, py):
    """Screen-space barycentrics (b0, b1, b2) and the doubled signed area."""
    area = _edge(v0, v1, v2[0], v2[1])
    return _edge(v1, v2, px, py) / area, _edge(v2, v0, px, py) / area, _edge(v0, v1, px, py) / area


def _depth(v0, v1, v2, b0, b1):
    """z/w at the pixel, written so that a constant-depth triangle gives exactly z2."""
    return v2[2] + b0 * (v0[2] - v2[2]) + b1 * (v1[2] - v2[2])


def _covers(v0, v1, v2, px, py):
    """Depth z/w if the triangle is drawn at pixel centre (px, py), else None."""
    if min(v0[3], v1[3], v2[3]) <= 0:
        return None
    area = _edge(v0, v1, v2[0], v2[1])
    if area == 0:
        return None
    e = (_edge(v1, v2, px, py), _edge(v2, v0, px, py), _edge(v0, v1, px, py))
    # Inclusive edges, both windings: every edge function has the sign of the area, or is 0.
    if not all(ek * area >= 0 for ek in e):
        return None
    z = _depth(v0, v1, v2, e[0] / area, e[1] / area)
    return z if -1 <= z <= 1 else None


def reference_rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution) -> torch.Tensor:
    """pos float32 [B, V, 4], tri int [F, 3] -> rast float32 [B, H, W, 4] with grads to pos."""
    height, width = resolution
    p64 = pos.double()
    plain = p64.detach().tolist()
    faces = tri.tolist()
    images = []
    for b in range(pos.shape[0]):
        pixels = []
        for i in range(height):
            for j in range(width):
                best = None  # (z, f): smallest z wins, ties go to the smallest f
                for f, face in enumerate(faces):
                    v = [_screen(plain[b][k], height, width) for k in face]
                    z = _covers(*v, j, i)
                    if z is not None and (best is None or (z, f) < best):
                        best = (z, f)
                pixels.append(_pixel_value(p64[b], faces, best, i, j, height, width))
        images.append(torch.stack(pixels).view(height, width, 4))
    return torch.stack(images).float()


def _pixel_value(p64, faces, best, i, j, height, width):
    """float64 [4] (u, v, z/w, id) of pixel (i, j), differentiable w.r.t. p64 [V, 4]."""
    if best is None:
        return torch.zeros(4, dtype=torch.float64)
    f = best[1]
    v0, v1, v2 = (_screen(p64[k], height, width) for k in faces[f])
    b0, b1, b2 = _weights(v0, v1, v2, j, i)
    # Perspective correction: weights proportional to b_k / w_k.
    q0, q1, q2 = b0 / v0[3], b1 / v1[3], b2 / v2[3]
    s = q0 + q1 + q2
    z = _depth(v0, v1, v2, b0, b1)
    return torch.stack([q0 / s, q1 / s, z, torch.tensor(f + 1.0, dtype=torch.float64)])


def reference_interpolate(attr: torch.Tensor, rast: torch.Tensor,
                          tri: torch.Tensor) -> torch.Tensor:
    """attr [B, V, C] or [V, C], rast [B, H, W, 4] -> [B, H, W, C], looping over pixels."""
    batch, height, width, _ = rast.shape
    if attr.dim() == 2:
        attr = attr[None].expand(batch, -1, -1)
    faces = tri.tolist()
    out = []
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                u, v, _, tid = rast[b, i, j]
                if tid.item() == 0:
                    out.append(torch.zeros_like(attr[b, 0]))
                    continue
                k0, k1, k2 = faces[int(tid.item()) - 1]
                out.append(u * attr[b, k0] + v * attr[b, k1] + (1 - u - v) * attr[b, k2])
    return torch.stack(out).view(batch, height, width, -1)
