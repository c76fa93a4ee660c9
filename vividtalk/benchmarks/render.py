"""``vividtalk bench render``: rasterizing + NCC shading (interpolated per-vertex colours)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..face.model import FaceModel, mean_face_in_crop
from ..render import get_rasterizer, image_to_clip
from .common import environment, median_seconds


def time_rasterizer(verts: torch.Tensor, tri: torch.Tensor, colors: torch.Tensor,
                    resolution: Sequence[int] = (256, 256), device: str | torch.device = "cpu",
                    repeats: int = 50, warmup: int = 5, backend: str = "auto",
                    batch_size: int = 1) -> dict:
    """Median time of ``rasterize`` + ``interpolate`` (NCC shading), in ms per frame.

    Args:
        verts: float [V, 3] or [B, V, 3] image-space vertices (x, y in pixels of
            ``resolution``, z in pixels; see ``vividtalk.render.shading.image_to_clip``).
        tri: int [F, 3] triangles; colors: float [V, 3] per-vertex colours.
        resolution: (H, W); device: where to run; repeats/warmup: timed/untimed runs.
        backend: "auto", "torch" or "nvdiffrast" (``get_rasterizer``).
        batch_size: frames per call (the first item of ``verts`` is repeated).

    Returns:
        dict with "benchmark" ("render"), "backend", "device", "resolution" [H, W],
        "batch_size", "num_vertices", "num_triangles", "ms_per_frame" (median over repeats,
        divided by batch_size), "ms_per_call", "frames_per_second", "torch_threads",
        "repeats".
    """
    device = torch.device(device)
    height, width = int(resolution[0]), int(resolution[1])
    rasterizer = get_rasterizer(backend, device)
    verts = verts.to(device=device, dtype=torch.float32)
    verts = (verts if verts.dim() == 3 else verts[None])[:1].expand(batch_size, -1, -1)
    pos = image_to_clip(verts, height, width).contiguous()
    tri = tri.to(device)
    colors = colors.to(device=device, dtype=torch.float32)
    with torch.no_grad():
        seconds, _ = median_seconds(
            lambda: rasterizer.interpolate(colors, rasterizer.rasterize(pos, tri, (height, width)), tri),
            device, repeats, warmup)
    ms_call = 1000.0 * seconds
    ms_frame = ms_call / batch_size
    return {"benchmark": "render", "backend": rasterizer.name, "device": str(device),
            "resolution": [height, width], "batch_size": batch_size,
            "num_vertices": int(verts.shape[1]), "num_triangles": int(tri.shape[0]),
            "ms_per_frame": ms_frame, "ms_per_call": ms_call,
            "frames_per_second": 1000.0 / ms_frame if ms_frame > 0 else float("inf"),
            "torch_threads": torch.get_num_threads(), "repeats": repeats}


def bench_render(device: str = "cpu", resolution: int = 256, batch_size: int = 1, backend: str = "auto",
                 repeats: int = 50) -> dict:
    """Rasterize + NCC-shade the 468-vertex face mesh at ``resolution``^2."""
    model = FaceModel.default().to(device)
    result = time_rasterizer(mean_face_in_crop(model, resolution), model.triangles, model.ncc_colors()[None],
                             resolution=(resolution, resolution), device=device, repeats=repeats, backend=backend,
                             batch_size=batch_size)
    return {**result, **environment()}
