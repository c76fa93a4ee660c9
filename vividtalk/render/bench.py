"""Timing of the rasterizer for NCC shading (rasterize + interpolate per-vertex colours)."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch

from vividtalk.render.base import get_rasterizer
from vividtalk.render.shading import image_to_clip


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_render(verts: torch.Tensor, tri: torch.Tensor, colors: torch.Tensor,
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
    times = []
    with torch.no_grad():
        for step in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            rasterizer.interpolate(colors, rasterizer.rasterize(pos, tri, (height, width)), tri)
            _synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
    ms_call = 1000.0 * statistics.median(times)
    ms_frame = ms_call / batch_size
    return {"benchmark": "render", "backend": rasterizer.name, "device": str(device),
            "resolution": [height, width], "batch_size": batch_size,
            "num_vertices": int(verts.shape[1]), "num_triangles": int(tri.shape[0]),
            "ms_per_frame": ms_frame, "ms_per_call": ms_call,
            "frames_per_second": 1000.0 / ms_frame if ms_frame > 0 else float("inf"),
            "torch_threads": torch.get_num_threads(), "repeats": repeats}
