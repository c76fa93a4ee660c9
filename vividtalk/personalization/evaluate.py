"""Scores of a personalised stage 2 on the held-out end of the person's clip.

The protocol of the issue's "done when": the person's first frame is the source, every
``stride``-th held-out frame is driven by its own tracked mesh, and the output is compared with
the real frame: face PSNR / SSIM (the driving frame's face region), mouth-region PSNR, and
optionally dlib's identity distance (:class:`~vividtalk.eval.identity.DlibIdentity`).
"""

from __future__ import annotations

import torch

from ..data import Clip
from ..eval.sharpness import cpbd
from ..mesh2video.evaluate import identity_sums
from ..mesh2video.visualize import frames_uint8
from .adapt import frames_batch
from .adapter import PersonAdapter


@torch.no_grad()
def heldout_metrics(adapter: PersonAdapter, clip: Clip, frames, batch_size: int = 8, identity=None) -> dict:
    """Mean ``psnr``, ``ssim``, ``psnr_mouth`` (and with ``identity`` the mean
    ``identity_distance`` over the frames where dlib found both faces) over ``frames``; ``frames``
    (how many were scored)."""
    frames = list(frames)
    sums = {"psnr": 0.0, "ssim": 0.0, "psnr_mouth": 0.0, "cpbd": 0.0, "cpbd_real": 0.0, "identity_distance": 0.0}
    scored = 0.0
    device = adapter.features.device
    for start in range(0, len(frames), batch_size):
        batch = frames_batch(clip, frames[start: start + batch_size], device)
        image, target = adapter(batch["driving_vertices"], batch["driving_lips"])["image"].float(), batch["driving"]
        batch["source"] = adapter.static()["source"].detach().expand(len(image), -1, -1, -1)
        scores = adapter.stage2.face_metrics(batch, out={"image": image})  # stage 2's own protocol
        for key in ("psnr", "ssim", "psnr_mouth"):
            sums[key] += float(scores[key].sum())
        sums["cpbd"] += sum(cpbd(f) for f in frames_uint8(image))
        sums["cpbd_real"] += sum(cpbd(f) for f in frames_uint8(target))
        if identity is not None:
            found = identity_sums(identity, image, target, batch["source"])
            sums["identity_distance"] += float(found["identity_distance"])
            scored += float(found["_scored"])
    out = {k: v / max(len(frames), 1) for k, v in sums.items() if k != "identity_distance"}
    if identity is not None:
        out["identity_distance"] = sums["identity_distance"] / scored if scored else float("nan")
    return {**out, "frames": len(frames)}
