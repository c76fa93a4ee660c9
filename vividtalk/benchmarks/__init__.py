"""Benchmarks behind ``vividtalk bench NAME [--json]``.

Every benchmark is a function returning one flat, JSON-serialisable dict with at least
``benchmark``, ``device``, its timing figures and the machine facts
(:func:`~vividtalk.benchmarks.common.environment`), so that reports are comparable between
commits. Networks are built from the stage recipes (``stages/``) at a named size. This package
sits above the pipeline and the stages: nothing below imports it.
"""

from __future__ import annotations

import inspect
import json
from typing import Callable

from .audio2mesh import bench_audio2mesh
from .common import environment, peak_rss_mb
from .generate import bench_generate
from .loader import bench_loader
from .mesh2video import bench_mesh2video, bench_mesh_flow_cost
from .render import bench_render
from .stream import bench_stream
from .train import bench_train

BENCHMARKS: dict[str, Callable[..., dict]] = {
    "render": bench_render, "audio2mesh": bench_audio2mesh, "mesh2video": bench_mesh2video,
    "mesh_flow": bench_mesh_flow_cost, "generate": bench_generate, "loader": bench_loader,
    "train": bench_train, "stream": bench_stream,
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


def run_benchmark(name: str, as_json: bool = False, **kwargs) -> str:
    """Run a registered benchmark (or ``all`` of them) and return its printed form (JSON or table).
    Each benchmark receives the options it takes (``--size`` means nothing to ``generate``)."""
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
