"""``vividtalk eval``: score generated talking-head videos with the metrics papers report.

Every video is tracked once (MediaPipe) and fitted with the face model; from that come the
lip-sync proxy, the head-motion metrics and the meshes for LVE / FDD. Which metrics run
depends on what is given: the audio (``--audio``, or the video's own track) for lip sync and
beat alignment, a reference video for PSNR / SSIM / LVE / FDD / FID / identity against it, the
source image for identity against it, and local weights for SyncNet, ArcFace and Inception.
Every metric that cannot run is listed under ``skipped`` with the reason, never reported as 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio.io import AudioError, load_audio
from ..data.video import read_frames
from ..face.model import FaceModel
from ..face.segmentation import face_region
from ..face.prepare import track_and_fit
from . import head_motion, lipsync, sharpness


@dataclass
class EvalWeights:
    """Local weight files of the metrics that need them (None: the metric is skipped)."""

    syncnet: str | None = None
    arcface: str | None = None
    arcface_depth: str = "r100"
    inception: str | None = None


@dataclass
class _Tracked:
    frames: np.ndarray  # [T, H, W, 3]
    landmarks: np.ndarray  # [T, 478, 3], NaN rows without a face
    poses: np.ndarray  # [T, 7]
    meshes: torch.Tensor  # [T, V, 3] canonical non-rigid meshes (face heights)


def _track(frames: np.ndarray, face: FaceModel) -> _Tracked:
    landmarks, fit = track_and_fit(frames, face)
    with torch.no_grad():
        meshes = face.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets)
    return _Tracked(frames, landmarks, fit.pose.numpy(), meshes)


def _audio(video: Path, audio) -> tuple[np.ndarray | None, str]:
    if audio is not None:
        return load_audio(audio), ""
    try:
        return load_audio(str(video)), ""
    except AudioError as err:
        return None, f"no audio ({err}); pass --audio"


def _own_metrics(tracked: _Tracked, wav: np.ndarray | None, why_no_audio: str) -> tuple[dict, dict]:
    metrics = {"frames": len(tracked.frames), "cpbd": sharpness.video_cpbd(tracked.frames)}
    metrics.update(head_motion.pose_diversity(tracked.poses))
    skipped = {}
    if wav is None:
        for key in ("mouth_energy_corr", "beat_alignment", "lse_d", "lse_c"):
            skipped[key] = why_no_audio
    else:
        metrics.update(lipsync.mouth_energy_sync(lipsync.mouth_opening(tracked.landmarks), wav))
        metrics["beat_alignment"] = head_motion.beat_alignment(
            head_motion.kinematic_beats(tracked.poses), head_motion.audio_beats(wav, len(tracked.poses)))
    return metrics, skipped


def _syncnet(frames: np.ndarray, wav, weights: EvalWeights, device: str) -> tuple[dict, dict]:
    if wav is None:
        return {}, {}
    if not weights.syncnet:
        reason = "no SyncNet weights (--syncnet: the public release's syncnet_v2.model)"
        return {}, {"lse_d": reason, "lse_c": reason}
    from .syncnet import SyncNetScorer

    return SyncNetScorer(weights.syncnet, device).score(frames, wav), {}


def _against_reference(tracked: _Tracked, ref: _Tracked, face: FaceModel, weights: EvalWeights,
                       dlib) -> tuple[dict, dict]:
    """PSNR / SSIM over the reference's face region, LVE / FDD, dlib identity, FID."""
    import cv2

    from .image import psnr, ssim
    from .mesh import face_dynamics_deviation, lip_vertex_error, upper_face_vertices

    n = min(len(tracked.frames), len(ref.frames))
    h, w = ref.frames.shape[1:3]
    out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) if f.shape[:2] != (h, w) else f
                    for f in tracked.frames[:n]])
    masks = np.stack([face_region(np.nan_to_num(lm), face, h, w) for lm in ref.landmarks[:n]])
    to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    mask = torch.from_numpy(masks)[:, None].float()
    metrics = {"psnr_face": float(psnr(to_t(out), to_t(ref.frames[:n]), mask).mean()),
               "ssim_face": float(ssim(to_t(out), to_t(ref.frames[:n]), mask).mean()),
               "lve": float(lip_vertex_error(tracked.meshes[:n], ref.meshes[:n], face.lip_indices)),
               "fdd": float(face_dynamics_deviation(tracked.meshes[:n], ref.meshes[:n], upper_face_vertices(face)))}
    skipped = {}
    if dlib is not None:
        metrics["identity_distance_to_reference"] = dlib.distance(out[::5], ref.frames[:n:5])["identity_distance"]
    if weights.inception:
        from .fid import InceptionFeatures, fid

        metrics["fid"] = fid(out, ref.frames[:n], InceptionFeatures(weights.inception))
    else:
        skipped["fid"] = "no Inception weights (--inception: a TorchScript inception-2015-12-05.pt)"
    return metrics, skipped


def _against_image(frames: np.ndarray, image: np.ndarray, weights: EvalWeights, device: str,
                   dlib) -> tuple[dict, dict]:
    metrics, skipped = {}, {}
    if dlib is not None:
        metrics["identity_distance_to_source"] = dlib.distance(frames[::5], image)["identity_distance"]
    if weights.arcface:
        from .arcface import ArcFaceIdentity

        with ArcFaceIdentity(weights.arcface, weights.arcface_depth, device) as scorer:
            metrics["arcface_similarity"] = scorer.similarity(frames[::5], image)["arcface_similarity"]
    else:
        skipped["arcface_similarity"] = "no ArcFace weights (--arcface: an insightface backbone.pth)"
    return metrics, skipped


def evaluate_video(video: str | os.PathLike, reference: str | None = None, audio: str | None = None,
                   image: str | None = None, weights: EvalWeights | None = None, device: str = "cpu") -> dict:
    """All metrics of one video that its inputs allow: ``{"video", "metrics", "skipped"}``."""
    weights, video = weights or EvalWeights(), Path(video)
    face = FaceModel.default()
    tracked = _track(read_frames(video, fps=25), face)
    wav, why = _audio(video, audio)
    metrics, skipped = _own_metrics(tracked, wav, why)
    parts = [_syncnet(tracked.frames, wav, weights, device)]
    dlib = _dlib(skipped, reference or image)
    if reference:
        parts.append(_against_reference(tracked, _track(read_frames(reference, fps=25), face), face, weights, dlib))
    else:
        skipped.update(dict.fromkeys(("psnr_face", "ssim_face", "lve", "fdd", "fid",
                                      "identity_distance_to_reference"), "no --reference video"))
    if image:
        from ..face.visualize import read_image

        parts.append(_against_image(tracked.frames, read_image(image), weights, device, dlib))
    else:
        skipped.update(dict.fromkeys(("identity_distance_to_source", "arcface_similarity"),
                                     "no --image (the source image)"))
    for part_metrics, part_skipped in parts:
        metrics.update(part_metrics)
        skipped.update(part_skipped)
    return {"video": str(video), "metrics": metrics, "skipped": skipped}


def _dlib(skipped: dict, needed):
    if not needed:
        return None
    try:
        from .identity import DlibIdentity

        return DlibIdentity()
    except ImportError as err:
        skipped["identity_distance"] = str(err)
        return None


def evaluate_videos(videos: list[str], **kwargs) -> dict:
    """:func:`evaluate_video` for each video, and the mean of every metric over them."""
    results = [evaluate_video(v, **kwargs) for v in videos]
    keys = sorted({k for r in results for k in r["metrics"]})
    mean = {}
    for key in keys:
        values = [r["metrics"][key] for r in results if key in r["metrics"]]
        finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        mean[key] = float(np.mean(finite)) if finite else float("nan")
    return {"videos": results, "mean": mean}


def format_table(report: dict) -> str:
    """A short table: one row per metric, one column per video; then the skipped metrics."""
    results = report["videos"]
    keys = list(report["mean"])
    width = max([len(k) for k in keys] + [6])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{Path(r['video']).name[:14]:>14}" for r in results)]
    for key in keys:
        cells = [r["metrics"].get(key, float("nan")) for r in results]
        lines.append(f"{key:<{width}}  " + "  ".join(f"{c:>14.4f}" if isinstance(c, float) else f"{c:>14}"
                                                   for c in cells))
    skipped = {k: v for r in results for k, v in r["skipped"].items()}
    lines += [f"skipped {k}: {v}" for k, v in sorted(skipped.items())]
    return "\n".join(lines)
