"""The adaptation loop: a person's clip -> a trained :class:`~.adapter.PersonAdapter`, resumably.

Pairs: the source is always the clip's first frame (as at generation), the driving frames are
drawn from the first 90 % of the clip; the last 10 % are held out and scored before and after
(:mod:`.evaluate`). Loss on each driven frame:

    L = |I^ - I| + w_perc L_perc(I^, I) + w_sharp |E(I^) - E(I)|

with stage 2's perceptual loss (VGG-19 from a local file, else its documented L1-pyramid
fallback) and E the local edge strength (:func:`gradient_energy`): the tracked meshes never
align the first frame with a later one exactly, and L1 alone answers misalignment by blurring
(on franck's held-out frames CPBD fell from 0.125 to 0.05 without the term, to 0.18 with it,
the real frames' value). An identity term needs a differentiable face embedding; none ships offline
(dlib's is not differentiable, ArcFace weights are user-supplied), so there is none.

Checkpoints: every ``checkpoint_every`` steps the adapter, the optimiser and the step go
atomically to ``work_dir/adapt.pt`` with the settings (the frame draws are re-seeded from the
step there, so a resumed run draws what an uninterrupted one does); a later call with the
same settings continues from there (an interrupted run loses at most ``checkpoint_every``
steps; a finished one continues when given more steps), one with other settings starts again.
On CUDA the forward runs under bfloat16 autocast.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import Clip
from ..data.stage2 import frame_batch
from ..mesh2video.lora import load_lora_state
from .adapter import PersonAdapter, split_state

CHECKPOINT = "adapt.pt"


@dataclass(frozen=True)
class AdaptSettings:
    """The settings of one adaptation (a checkpoint resumes only under the same ones).

    Attributes:
        steps: optimiser steps; batch_size: driving frames per step.
        rank: LoRA rank; lr: learning rate of the LoRA weights; appearance_lr: of the inverted
            features; reference_lr: of the inverted source image (0: kept as the first frame).
        perceptual_weight: w_perc; sharpness_weight: w_sharp; heldout: share of the clip's last
            frames held out.
        seed: the draw of the driving frames; checkpoint_every: steps between checkpoints.
    """

    steps: int = 300
    batch_size: int = 4
    rank: int = 4
    lr: float = 4e-3
    appearance_lr: float = 2e-2
    reference_lr: float = 3e-3
    sharpness_weight: float = 3.0
    perceptual_weight: float = 1.0
    heldout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 25

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "rank", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.heldout < 1.0:
            raise ValueError(f"heldout must be in (0, 1), got {self.heldout}")


def split_frames(length: int, heldout: float) -> tuple[range, range]:
    """(training frames, held-out frames) of a clip: the last ``heldout`` share is held out
    (at least one frame each)."""
    held = min(length - 1, max(1, round(length * heldout)))
    if length < 2:
        raise ValueError(f"a clip of {length} frame(s) cannot be split into training and held-out frames")
    return range(0, length - held), range(length - held, length)


def frames_batch(clip: Clip, frames, device: torch.device, prefix: str = "driving") -> dict[str, torch.Tensor]:
    """:func:`~vividtalk.data.stage2.frame_batch` of ``frames`` of ``clip``, on ``device``."""
    return {k: v.to(device) for k, v in frame_batch(clip, frames, prefix).items()}


def adaptation_loss(adapter: PersonAdapter, batch: dict, settings: AdaptSettings,
                    perceptual: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The loss terms of a batch of driving frames and their weighted sum ``loss``."""
    device = batch["driving"].device
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        image = adapter(batch["driving_vertices"], batch["driving_lips"])["image"]
    image, target = image.float(), batch["driving"]
    terms = {"l1": (image - target).abs().mean(), "perceptual": perceptual(image, target)}
    terms["sharpness"] = sharpness_loss(image, target)
    terms["loss"] = (terms["l1"] + settings.perceptual_weight * terms["perceptual"]
                     + settings.sharpness_weight * terms["sharpness"])
    return terms


def gradient_energy(image: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """Local edge strength of float [B, 3, H, W]: the mean absolute finite difference (x and y)
    in each ``patch`` x ``patch`` block, [B, 1, H / patch, W / patch]."""
    gray = image.mean(1, keepdim=True)
    dx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()
    dy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()
    energy = torch.nn.functional.pad(dx, (0, 1)) + torch.nn.functional.pad(dy, (0, 0, 0, 1))
    return torch.nn.functional.avg_pool2d(energy, patch)


def sharpness_loss(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|local edge strength of the output - of the target|, averaged: a blurred output has too
    little, whatever the exact alignment of its edges (which L1 punishes by blurring)."""
    return (gradient_energy(image) - gradient_energy(target)).abs().mean()


def train_adapter(adapter: PersonAdapter, clip: Clip, settings: AdaptSettings, work_dir: str | os.PathLike,
                  perceptual: torch.nn.Module | None = None, progress: bool = True) -> dict:
    """Run (or resume) the adaptation; returns ``{"steps", "seconds", "cpu_seconds", "loss"}`` of
    this call (``seconds``: wall time of the steps run now, ``cpu_seconds``: this process's CPU
    time over all its threads; ``loss``: the last step's).

    Args:
        perceptual: the perceptual loss (None: the base stage 2's, its L1-pyramid fallback
            unless it was built with VGG weights).
    """
    perceptual = adapter.stage2.perceptual if perceptual is None else perceptual
    device = adapter.features.device
    train, _ = split_frames(len(clip), settings.heldout)
    groups = [{"params": adapter.lora_parameters(), "lr": settings.lr},
              {"params": [adapter.features], "lr": settings.appearance_lr}]
    if settings.reference_lr > 0:
        groups.append({"params": [adapter.reference], "lr": settings.reference_lr})
    adapter.reference.requires_grad_(settings.reference_lr > 0)
    optimizer = torch.optim.Adam(groups)
    rng = np.random.default_rng(settings.seed)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    path = Path(work_dir) / CHECKPOINT
    start = _resume(path, adapter, optimizer, settings)
    if start:
        rng = np.random.default_rng([settings.seed, start])
    clock, cpu, loss = time.perf_counter(), time.process_time(), float("nan")
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="personalising",
               unit="step", disable=not progress)
    for step in bar:
        batch = frames_batch(clip, rng.choice(train, settings.batch_size), device)
        terms = adaptation_loss(adapter, batch, settings, perceptual)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        loss = float(terms["loss"].detach())
        bar.set_postfix(loss=f"{loss:.4f}", l1=f"{float(terms['l1'].detach()):.4f}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            _save(path, adapter, optimizer, settings, done)
            rng = np.random.default_rng([settings.seed, done])  # what a resume from here draws
    bar.close()
    return {"steps": settings.steps - start, "seconds": time.perf_counter() - clock,
            "cpu_seconds": time.process_time() - cpu, "loss": loss}


def _save(path: Path, adapter: PersonAdapter, optimizer, settings: AdaptSettings, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"settings": asdict(settings), "step": step, "adapter": adapter.state(),
                "optimizer": optimizer.state_dict()}, tmp)
    tmp.replace(path)


def _resume(path: Path, adapter: PersonAdapter, optimizer, settings: AdaptSettings) -> int:
    """Load a checkpoint into the adapter and the optimiser; its step (0: none). Only one of the
    same settings (but ``steps``) and no further than ``settings.steps`` is resumed: more steps
    continue a finished run, anything else starts again."""
    if not path.is_file():
        return 0
    saved = torch.load(path, map_location=adapter.features.device, weights_only=True)
    same = {**saved.get("settings", {}), "steps": settings.steps} == asdict(settings)
    if not same or int(saved["step"]) > settings.steps:
        return 0
    for name, state in split_state(saved["adapter"]).items():
        load_lora_state(getattr(adapter.stage2, name), state)
    with torch.no_grad():
        adapter.features.copy_(saved["adapter"]["appearance.features"])
        adapter.reference.copy_(saved["adapter"]["appearance.source"])
    optimizer.load_state_dict(saved["optimizer"])
    return int(saved["step"])
