"""``vividtalk bench mesh2video``: milliseconds per 256x256 frame of stage 2 at inference.

Times stage 2 as a video runs it: the source frame is prepared once (its projected texture,
lip heatmaps and the generator's encoding: ``ms_prepare_source``, paid once per video), then
every batch of driving meshes costs the conditioning (the driving projected texture through
the rasterizer, lip heatmaps), the motion VAE and the warping generator: ``ms_per_frame``.
Networks built from a size's recipes (``stages/``) with random weights (speed does not depend on the weights); also
the parameters and GFLOPs per frame (``torch.utils.flop_counter``).
"""

from __future__ import annotations

import statistics
import time

import torch

from .. import stages
from ..face.model import mean_face_in_crop
from ..mesh2video.module import Mesh2VideoModule
from .common import environment, synchronize

# Each size is the stack of recipes it trains with.
RECIPES = {"default": ("mesh2video.yaml",), "large": ("mesh2video.yaml", "mesh2video_large.yaml")}


def recipe_module(size: str, mesh_flow: bool = True) -> Mesh2VideoModule:
    """Stage 2 at inference as the recipes of ``size`` build it: the motion VAE (``mesh_flow``:
    with the mesh flow, or the paper-literal variant) and the warping generator, random
    weights, eval mode, no discriminator."""
    if size not in RECIPES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(RECIPES)}")
    args = stages.model_args(*RECIPES[size])
    return Mesh2VideoModule(stages.build(args["motion_vae"], mesh_flow=mesh_flow),
                            stages.build(args["generator"])).eval()


def _batch(face, batch_size: int, device: torch.device) -> dict:
    """One source and ``batch_size`` driving meshes of the default face model in a 256 crop (mouth open)."""
    verts = mean_face_in_crop(face.to(device), 256)
    lips = face.lip_contour().to(device)
    driving = verts.clone()
    driving[:, face.lip_indices.to(device), 1] += 4.0
    expand = lambda x: x.expand(batch_size, *x.shape[1:])  # noqa: E731
    mask = torch.zeros(1, 256, 256, dtype=torch.int64, device=device)
    mask[:, 60:200, 70:190] = 2
    return {
        "source": torch.rand(1, 3, 256, 256, device=device), "source_mask": mask, "source_vertices": verts,
        "source_lips": verts[:, lips, :2], "driving_vertices": expand(driving),
        "driving_lips": expand(driving[:, lips, :2]),
    }


def bench_mesh2video(device: str = "cpu", repeats: int = 10, batch_size: int = 1, size: str = "default",
                     mesh_flow: bool = True) -> dict:
    """Median ms per frame (and per stage) of stage 2 at 256x256 for ``batch_size`` pairs;
    ``mesh_flow=False`` times the paper-literal variant (the mesh flow's cost is the difference)."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    torch.manual_seed(0)
    module = recipe_module(size, mesh_flow).to(dev)
    batch = _batch(module.face, batch_size, dev)
    parts = {}

    def prepare() -> dict:
        return module.prepare_source(batch["source"], batch["source_mask"], batch["source_vertices"],
                                     batch["source_lips"])

    def run(prepared: dict) -> torch.Tensor:
        t0 = time.perf_counter()
        cond = module.condition(prepared, batch["driving_vertices"], batch["driving_lips"])
        synchronize(dev)
        t1 = time.perf_counter()
        motion = module.motion_vae(cond["pt_source"], cond["pt_driving"], cond["lip_heatmaps"], sample=False,
                                   mesh_flow=cond.get("mesh_flow"), warped_source=cond.get("warped_source"),
                                   paint=cond.get("paint"))
        synchronize(dev)
        t2 = time.perf_counter()
        b = len(motion["flow"])
        image = module.generator(prepared["source"].expand(b, -1, -1, -1), motion["flow"], motion["occlusion"],
                                 prepared["features"].expand(b, -1, -1, -1))["image"]
        synchronize(dev)
        parts.setdefault("conditioning", []).append(t1 - t0)
        parts.setdefault("motion_vae", []).append(t2 - t1)
        parts.setdefault("generator", []).append(time.perf_counter() - t2)
        return image

    with torch.no_grad():
        prepared = prepare()
        for _ in range(2):  # warm-up
            run(prepared)
        parts.clear()
        totals, prepare_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            prepare()
            synchronize(dev)
            prepare_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            run(prepared)
            totals.append(time.perf_counter() - start)
        with FlopCounterMode(display=False) as prepare_flops:
            prepared = prepare()
        with FlopCounterMode(display=False) as frame_flops:
            module.animate(prepared, batch["driving_vertices"][:1], batch["driving_lips"][:1], sample=False)
    ms = 1000.0 * statistics.median(totals) / batch_size
    params = sum(p.numel() for m in (module.motion_vae, module.generator) for p in m.parameters())
    return {
        "benchmark": "mesh2video", "device": str(dev), "size": size, "mesh_flow": mesh_flow, "resolution": [256, 256],
        "batch_size": batch_size, "ms_per_frame": ms, "frames_per_second": 1000.0 / ms,
        **{f"ms_per_frame_{k}": 1000.0 * statistics.median(v) / batch_size for k, v in parts.items()},
        "ms_prepare_source": 1000.0 * statistics.median(prepare_times),
        "parameters": params, "gflops_per_frame": frame_flops.get_total_flops() / 1e9,
        "gflops_prepare_source": prepare_flops.get_total_flops() / 1e9,
        "rasterizer": module.rasterizer(dev).name, "repeats": repeats, **environment(),
    }


def bench_mesh_flow_cost(device: str = "cpu", repeats: int = 200, size: str = "default") -> dict:
    """What the mesh flow costs per 256x256 frame at batch 1: the default stage 2 with and
    without it (same sizes, random weights), their frames rendered alternately so that a noisy
    machine slows both alike; medians of each and of the paired differences."""
    dev = torch.device(device)
    modules = {}
    for mesh_flow in (True, False):
        torch.manual_seed(0)
        modules[mesh_flow] = recipe_module(size, mesh_flow).to(dev)
    batch = _batch(modules[True].face, 1, dev)
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        prepared = {k: m.prepare_source(batch["source"], batch["source_mask"], batch["source_vertices"],
                                        batch["source_lips"]) for k, m in modules.items()}
        for i in range(repeats + 5):  # the first 5 pairs warm up
            for mesh_flow in ((True, False) if i % 2 else (False, True)):
                start = time.perf_counter()
                modules[mesh_flow].animate(prepared[mesh_flow], batch["driving_vertices"], batch["driving_lips"])
                synchronize(dev)
                if i >= 5:
                    times[mesh_flow].append(time.perf_counter() - start)
    added = [a - b for a, b in zip(times[True], times[False])]
    return {"benchmark": "mesh_flow", "device": str(dev), "size": size, "resolution": [256, 256], "batch_size": 1,
            "ms_per_frame_mesh_flow": 1000.0 * statistics.median(times[True]),
            "ms_per_frame_paper_literal": 1000.0 * statistics.median(times[False]),
            "ms_added_by_mesh_flow": 1000.0 * statistics.median(added), "repeats": repeats,
            **environment()}
