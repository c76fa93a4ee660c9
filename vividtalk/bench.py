"""Benchmarks behind ``vividtalk bench NAME [--json]``.

Every benchmark is a function returning one flat, JSON-serialisable dict with at least
``benchmark``, ``device`` and its timing figures, so that reports are comparable between
commits. Later stages register theirs in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import json
import platform
from typing import Callable

import torch


def environment() -> dict:
    """Machine facts every report carries."""
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def face_mesh_in_crop(size: int = 256, device: str = "cpu"):
    """The default face model's mean shape posed frontally to fill a ``size`` crop like a
    tracked face does (face height 0.6 * size). Returns (verts [1, V, 3], tri [F, 3],
    colors [1, V, 3]) on ``device``."""
    from .face import FaceModel

    model = FaceModel.default().to(device)
    pose = torch.tensor([0.05, 0.1, 0.0, size / 2, size / 2, 0.0, 0.6 * size], device=device)
    verts = model.assemble(torch.zeros(model.num_expressions, device=device), pose=pose)
    return verts[None], model.triangles, model.ncc_colors()[None]


def bench_render(
    device: str = "cpu", resolution: int = 256, batch_size: int = 1, backend: str = "auto", repeats: int = 50
) -> dict:
    """Rasterize + NCC-shade the 468-vertex face mesh at ``resolution``^2."""
    from .render.bench import bench_render as run

    verts, tri, colors = face_mesh_in_crop(resolution, device)
    result = run(
        verts, tri, colors, resolution=(resolution, resolution), device=device, repeats=repeats,
        backend=backend, batch_size=batch_size,
    )
    return {**result, **environment()}


def bench_audio2mesh(device: str = "cpu", repeats: int = 5, batch_size: int = 1, size: str = "demo",
                     seconds: float = 10.0) -> dict:
    """Stage 1: ``seconds`` of audio features -> driven meshes and poses (cached vs uncached)."""
    from .audio2mesh.bench import bench_audio2mesh as run

    return {**run(device=device, repeats=repeats, seconds=seconds, size=size, batch_size=batch_size),
            **environment()}


def bench_mesh2video(device: str = "cpu", repeats: int = 10, batch_size: int = 1, size: str = "default") -> dict:
    """Stage 2: ms per 256x256 frame (conditioning, motion VAE, generator), parameters, GFLOPs."""
    from .mesh2video.bench import bench_mesh2video as run

    return {**run(device=device, repeats=repeats, batch_size=batch_size, size=size), **environment()}


BENCHMARKS: dict[str, Callable[..., dict]] = {
    "render": bench_render, "audio2mesh": bench_audio2mesh, "mesh2video": bench_mesh2video,
}


def format_report(report: dict) -> str:
    """A short human-readable table of one report."""
    width = max(len(k) for k in report)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in report.items())


def run_benchmark(name: str, as_json: bool = False, **kwargs) -> str:
    """Run a registered benchmark and return its printed form (JSON or table)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(sorted(BENCHMARKS))}")
    report = BENCHMARKS[name](**kwargs)
    return json.dumps(report) if as_json else format_report(report)
