"""Benchmarks behind ``vividtalk bench NAME [--json]``.

Every benchmark is a function returning one flat, JSON-serialisable dict with at least
``benchmark``, ``device`` and its timing figures, so that reports are comparable between
commits. Later stages register theirs in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import json
import platform
from typing import Callable

import numpy as np
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
                     seconds: float = 10.0, encoder: str = "whisper") -> dict:
    """Stage 1: ``seconds`` of speech -> driven meshes and poses, audio encoders included
    (``encoder``: whisper or logmel for the expression network), cached vs uncached decoding."""
    from .audio2mesh.bench import bench_audio2mesh as run

    return {**run(device=device, repeats=repeats, seconds=seconds, size=size, batch_size=batch_size,
                  encoder=encoder), **environment()}


def bench_mesh2video(device: str = "cpu", repeats: int = 10, batch_size: int = 1, size: str = "default",
                     mesh_flow: bool = True) -> dict:
    """Stage 2: ms per 256x256 frame (conditioning, motion VAE, generator), parameters, GFLOPs;
    ``mesh_flow=False``: the paper-literal variant."""
    from .mesh2video.bench import bench_mesh2video as run

    return {**run(device=device, repeats=repeats, batch_size=batch_size, size=size, mesh_flow=mesh_flow),
            **environment()}


def bench_mesh_flow(device: str = "cpu", repeats: int = 200, size: str = "default") -> dict:
    """Stage 2's mesh flow: ms per frame with and without it, frames alternated (paired medians)."""
    from .mesh2video.bench import bench_mesh_flow_cost

    return {**bench_mesh_flow_cost(device=device, repeats=repeats, size=size), **environment()}


def bench_generate(device: str = "cpu", repeats: int = 1, batch_size: int = 8, seconds: float = 10.0,
                   weights: str | None = None) -> dict:
    """End to end with real weights (default: the packaged demo weights): the demo speech
    repeated to ``seconds``, the scikit-image portrait -> an mp4; seconds per step, frames per
    second, and the peak resident memory of the process."""
    import tempfile
    import time
    from pathlib import Path

    from .audio.io import load_audio
    from .data.video import write_video
    from .face.visualize import default_portrait
    from .pipeline import VividTalkPipeline, demo_weights_dir

    pipe = VividTalkPipeline.from_pretrained(weights, device=device)
    speech = load_audio(str(demo_weights_dir() / "speech.wav"))
    wav = np.resize(speech, int(seconds * 16000))  # repeated
    image = default_portrait()
    best: dict = {}
    for _ in range(max(1, repeats)):
        plan = pipe.plan(wav, image)
        start = time.perf_counter()
        frames = 0
        with tempfile.TemporaryDirectory() as tmp:
            def counted():
                nonlocal frames
                for frame in pipe.frames(plan, batch_size):
                    frames += 1
                    yield frame

            write_video(Path(tmp) / "bench.mp4", counted(), fps=25, audio=plan.audio)
        steps = {**plan.seconds, "render_and_encode": time.perf_counter() - start}
        if not best or sum(steps.values()) < sum(best.values()):
            best = steps
    total = sum(best.values())
    return {
        "benchmark": "generate", "device": device, "weights": weights or "demo", "audio_seconds": seconds,
        "frames": frames, "batch_size": batch_size, "resolution": [256, 256],
        **{f"seconds_{k}": v for k, v in best.items()}, "seconds_total": total,
        "frames_per_second": frames / total, "frames_per_second_stage2": frames / best["render_and_encode"],
        "peak_rss_mb": peak_rss_mb(), "repeats": repeats,
        **environment(),
    }


BENCHMARKS: dict[str, Callable[..., dict]] = {
    "render": bench_render, "audio2mesh": bench_audio2mesh, "mesh2video": bench_mesh2video,
    "mesh_flow": bench_mesh_flow, "generate": bench_generate,
}


def format_report(report: dict) -> str:
    """A short human-readable table of one report."""
    width = max(len(k) for k in report)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in report.items())


def summary(reports: list[dict]) -> dict:
    """One comparable report of several benchmarks: per benchmark its device, size, ms per
    frame, frames per second and peak memory, plus the machine."""
    rows = {}
    for r in reports:
        ms = r.get("ms_per_frame") or (1000.0 / r["frames_per_second"] if r.get("frames_per_second") else None)
        if ms is None and "seconds_total" in r and "frames" in r:
            ms = 1000.0 * r["seconds_total"] / r["frames"]
        rows[r["benchmark"]] = {"device": r.get("device"), "size": r.get("size", r.get("weights")),
                                "batch_size": r.get("batch_size"), "ms_per_frame": ms,
                                "frames_per_second": 1000.0 / ms if ms else None,
                                "peak_rss_mb": r.get("peak_rss_mb")}
    return {"benchmark": "all", **{f"{k}.{f}": v for k, row in rows.items() for f, v in row.items()},
            **environment()}


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_benchmark(name: str, as_json: bool = False, **kwargs) -> str:
    """Run a registered benchmark (or ``all`` of them) and return its printed form (JSON or table).
    Each benchmark receives the options it takes (``--size`` means nothing to ``generate``)."""
    import inspect

    def run(bench: Callable[..., dict]) -> dict:
        accepted = inspect.signature(bench).parameters
        return bench(**{k: v for k, v in kwargs.items() if k in accepted})

    if name == "all":
        reports = []
        for bench in BENCHMARKS.values():
            report = run(bench)
            report.setdefault("peak_rss_mb", peak_rss_mb())  # of the process so far: benchmarks run in order
            reports.append(report)
        report = summary(reports)
    elif name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of all, {', '.join(sorted(BENCHMARKS))}")
    else:
        report = run(BENCHMARKS[name])
    return json.dumps(report) if as_json else format_report(report)
