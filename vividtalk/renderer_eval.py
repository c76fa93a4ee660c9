"""``vividtalk eval-stage2``: stage 2 on held-out photos and a held-out real video.

For every photo of a folder (people never trained on): the identity test (driven by its own
mesh, face PSNR against the photo) and expression transfer (driven by each driving clip's
motion relative to that clip's first frame: dlib identity distance to the photo, the mouth
opening of the output against the driving mouth's), plus self-reenactment of held-out real
clips (:func:`~vividtalk.mesh2video.evaluate.self_reenactment`: face PSNR / SSIM against the
real frames next to the source-frame baseline). Optionally writes frame strips (PNG) of each
transfer for looking at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import motion
from .data import Clip
from .face.model import FaceModel
from .mesh2video.generalisation import identity_psnr, render_driven, transfer_metrics
from .mesh2video.module import Mesh2VideoModule
from .face.prepare import SourceFace, prepare_source

def driving_meshes(source: SourceFace, clip: Clip, face: FaceModel, frames: int) -> np.ndarray:
    """The first ``frames`` frames of a clip's motion (expression, lips, head pose, each
    relative to its first frame) carried over to a source: float32 [T, V, 3] crop pixels."""
    arrays = clip.arrays()
    take = lambda k: torch.from_numpy(np.asarray(arrays[k][:frames], np.float32))  # noqa: E731
    with torch.no_grad():
        vertices = motion.carried_motion(face, source, take("beta"), take("lip_offsets"), take("pose"))[0]
    return vertices.numpy()


def evaluate_stage2(module: Mesh2VideoModule, photos: list[str | os.PathLike], driving: list[str | os.PathLike],
                    reenact: list[str | os.PathLike], frames: int = 50, strips: str | os.PathLike | None = None,
                    progress: bool = True) -> dict:
    """The report (see the module docstring): ``photos`` per photo, ``reenactment``, ``summary``."""
    from .eval.identity import DlibIdentity
    from .face import MediaPipeTracker
    from .face.visualize import read_image
    from .mesh2video.evaluate import self_reenactment

    identity, tracker = DlibIdentity(), MediaPipeTracker(min_face_size=32)
    report = {"photos": {}, "driving_clips": [str(p) for p in driving]}
    try:
        for path in tqdm(photos, desc="held-out photos", unit="photo", disable=not progress):
            source = prepare_source(read_image(path), module.face)
            entry = {"identity_psnr": identity_psnr(module, source.crop, source.masks, source.vertices), "transfer": []}
            for k, clip_path in enumerate(driving):
                drv = driving_meshes(source, Clip(clip_path), module.face, frames)
                out = render_driven(module, source.crop, source.masks, source.vertices, drv)
                entry["transfer"].append(transfer_metrics(out, source.crop, drv, identity, tracker))
                if strips is not None:
                    write_strip(Path(strips) / f"{Path(path).stem}-{k}.png", source.crop, out)
            report["photos"][Path(path).name] = entry
    finally:
        tracker.close()
    if reenact:
        report["reenactment"] = self_reenactment(module, reenact, stride=5, progress=progress, identity=identity)
    report["summary"] = _summary(report)
    return report


def _summary(report: dict) -> dict:
    photos = report["photos"].values()
    transfers = [t for p in photos for t in p["transfer"]]
    out = {"identity_psnr_min": min((p["identity_psnr"] for p in photos), default=float("nan")),
           "identity_distance_max": max((t["identity_distance"] for t in transfers), default=float("nan")),
           "mouth_corr_mean": float(np.nanmean([t["mouth_corr"] for t in transfers])) if transfers else float("nan")}
    if "reenactment" in report:
        r = report["reenactment"]
        out["reenactment_psnr_gain"] = r["psnr"] - r["psnr_source_baseline"]
    return out


def write_strip(path: Path, source: np.ndarray, frames: np.ndarray, count: int = 6) -> None:
    """PNG: the source, then ``count`` evenly spaced frames, side by side."""
    import cv2

    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    strip = np.concatenate([source] + [frames[i] for i in picks], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
