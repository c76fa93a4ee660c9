"""Self-reenactment of stage 2 on prepared clips: the first frame drives itself along the
clip's own meshes, and the output is scored against the real frames.

This is the protocol of the "it learns" check (source = first frame, driving = every frame's
mesh and lip landmarks): PSNR and SSIM over the driving frame's face region, for the output and
for the baseline that returns the source frame, and the mouth-region PSNR with the lip branch
zeroed (the ablation that shows what the lip branch adds); optionally the dlib identity
distance between output and real frame (:class:`~vividtalk.eval.identity.DlibIdentity`).
"""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

from ..data import Clip
from ..data.stage2 import frame_batch
from .module import Mesh2VideoModule
from .visualize import frames_uint8


def clip_pairs(clip: Clip, frames: list[int], source: int = 0) -> dict[str, torch.Tensor]:
    """A batch pairing frame ``source`` of a clip with each of ``frames`` (the stage-2 item
    layout); reads only those frames (the clip's frame store)."""
    source_fields = frame_batch(clip, [source], "source")  # read once, repeated for every pair
    return {**{k: v.repeat(len(frames), *([1] * (v.dim() - 1))) for k, v in source_fields.items()},
            **frame_batch(clip, frames, "driving")}


@torch.no_grad()
def self_reenactment(module: Mesh2VideoModule, clips: list[str | os.PathLike], stride: int = 1,
                     batch_size: int = 8, progress: bool = True, identity=None) -> dict[str, float]:
    """Mean metrics over every ``stride``-th frame (after the first) of ``clips``.

    Args:
        identity: a :class:`~vividtalk.eval.identity.DlibIdentity` to also score the identity
            distance between output and real frame (None: not scored).
    Returns:
        dict: ``psnr``, ``ssim`` (output, face region), ``psnr_source_baseline``,
        ``ssim_source_baseline``, ``psnr_mouth``, ``psnr_mouth_without_lip_branch`` and
        ``frames`` (how many were scored); with ``identity`` also ``identity_distance`` (mean
        over the frames where dlib found both faces), ``identity_distance_source_baseline``
        and ``frames_without_face``.
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
            out = module(batch, sample=False)
            metrics = module.face_metrics(batch, out=out)
            if identity is not None:
                metrics.update(identity_sums(identity, out["image"], batch["driving"], batch["source"]))
            metrics["psnr_mouth_without_lip_branch"] = module.face_metrics(batch, lip_scale=0.0)["psnr_mouth"]
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value.sum())
            count += len(batch["source"])
    per_frame = {k: v for k, v in sums.items() if not k.startswith(("identity", "_"))}
    result = {k: v / max(count, 1) for k, v in per_frame.items()}
    if identity is not None:  # means over the frames where the faces were found
        scored = sums["_scored"]
        for key in ("identity_distance", "identity_distance_source_baseline"):
            result[key] = sums[key] / scored if scored else float("nan")
        result["frames_without_face"] = int(count - scored)
    return {**result, "frames": count}


def identity_sums(identity, images: torch.Tensor, real: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed dlib distances (output vs real, source vs real) over the pairs where all three
    faces were found, and how many those were (``_scored``); images float [B, 3, H, W] in [0, 1]."""
    out, real, source = frames_uint8(images), frames_uint8(real), frames_uint8(source)
    sums = {"identity_distance": 0.0, "identity_distance_source_baseline": 0.0, "_scored": 0.0}
    for o, r, s in zip(out, real, source):
        e_out, e_real, e_src = identity.embed(o), identity.embed(r), identity.embed(s)
        if e_out is None or e_real is None or e_src is None:
            continue
        sums["identity_distance"] += float(((e_out - e_real) ** 2).sum() ** 0.5)
        sums["identity_distance_source_baseline"] += float(((e_src - e_real) ** 2).sum() ** 0.5)
        sums["_scored"] += 1.0
    return {k: torch.tensor(v) for k, v in sums.items()}
