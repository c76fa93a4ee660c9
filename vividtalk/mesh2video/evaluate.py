"""Self-reenactment of stage 2 on prepared clips: the first frame drives itself along the
clip's own meshes, and the output is scored against the real frames.

This is the protocol of the "it learns" check (source = first frame, driving = every frame's
mesh and lip landmarks): PSNR and SSIM over the driving frame's face region, for the output and
for the baseline that returns the source frame, and the mouth-region PSNR with the lip branch
zeroed (the ablation that shows what the lip branch adds).
"""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

from ..data import Clip
from ..data.stage2 import frame_fields
from .module import Mesh2VideoModule


def clip_pairs(clip: Clip, frames: list[int], source: int = 0) -> dict[str, torch.Tensor]:
    """A batch pairing frame ``source`` of a clip with each of ``frames`` (the stage-2 item layout)."""
    images, arrays = clip.frames(), clip.arrays()
    items = [{**frame_fields("source", source, images, arrays), **frame_fields("driving", f, images, arrays)}
             for f in frames]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


@torch.no_grad()
def self_reenactment(module: Mesh2VideoModule, clips: list[str | os.PathLike], stride: int = 1,
                     batch_size: int = 8, progress: bool = True) -> dict[str, float]:
    """Mean metrics over every ``stride``-th frame (after the first) of ``clips``.

    Returns:
        dict: ``psnr``, ``ssim`` (output, face region), ``psnr_source_baseline``,
        ``ssim_source_baseline``, ``psnr_mouth``, ``psnr_mouth_without_lip_branch`` and
        ``frames`` (how many were scored).
    """
    module.eval()
    sums: dict[str, float] = {}
    count = 0
    for path in tqdm(clips, desc="self-reenactment", unit="clip", disable=not progress):
        clip = Clip(path)
        frames = list(range(stride, len(clip), stride))
        for start in range(0, len(frames), batch_size):
            batch = clip_pairs(clip, frames[start : start + batch_size])
            batch = {k: v.to(module.device) for k, v in batch.items()}
            metrics = module.face_metrics(batch)
            metrics["psnr_mouth_without_lip_branch"] = module.face_metrics(batch, lip_scale=0.0)["psnr_mouth"]
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value.sum())
            count += len(batch["source"])
    return {**{k: v / max(count, 1) for k, v in sums.items()}, "frames": count}
