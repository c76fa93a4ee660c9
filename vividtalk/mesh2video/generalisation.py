"""How stage 2 does on faces it never saw (docs/architecture.md, stage 2; issue "Stage 2 that
works on any face").

- Identity test: a photo driven by its own mesh must come back unchanged: the face-region
  PSNR of the output against the photo's crop.
- Expression transfer: a photo driven by the meshes of another clip (that clip's motion
  relative to its first frame, applied to the photo): the dlib identity distance of every
  output frame to the photo (the person must stay the person), and how well the output's
  mouth follows the driving mouth (correlation of the tracked mouth opening of the output with
  the driving meshes' own).

Both take a prepared source (crop, labels, mesh) and driving meshes in crop pixels; preparing
photos and carrying motion over is the caller's (the pipeline's) business.
"""

from __future__ import annotations

import numpy as np
import torch

from ..eval.image import psnr
from ..eval.lipsync import mouth_opening
from ..face.segmentation import FACE
from .module import Mesh2VideoModule


def render_driven(module: Mesh2VideoModule, crop: np.ndarray, labels: np.ndarray, vertices: np.ndarray,
                  driving: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Frames of a source (crop uint8 [S, S, 3], labels uint8 [S, S], mesh float [V, 3]) driven
    by meshes float [T, V, 3] (crop pixels): uint8 [T, S, S, 3]."""
    module.eval()
    return np.concatenate(list(module.drive(crop, labels, vertices, torch.from_numpy(driving), batch_size)))


def identity_psnr(module: Mesh2VideoModule, crop: np.ndarray, labels: np.ndarray, vertices: np.ndarray) -> float:
    """Face-region PSNR (dB) of the photo driven by its own mesh against the photo."""
    frame = render_driven(module, crop, labels, vertices, vertices[None])[0]
    as_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
    face = torch.from_numpy(labels == FACE)[None, None].float()
    return float(psnr(as_t(frame), as_t(crop), face))


def transfer_metrics(frames: np.ndarray, photo_crop: np.ndarray, driving: np.ndarray, identity,
                     tracker) -> dict[str, float]:
    """Scores of an expression transfer.

    Args:
        frames: uint8 [T, S, S, 3] the driven photo; photo_crop: uint8 [S, S, 3] the photo.
        driving: float [T, V, 3] the driving meshes (MediaPipe topology).
        identity: a :class:`~vividtalk.eval.identity.DlibIdentity`; tracker: a
            :class:`~vividtalk.face.MediaPipeTracker` (re-tracks the output).
    Returns:
        dict: ``identity_distance`` (mean over frames with a face), ``identity_distance_max``,
        ``frames_without_face`` (dlib), ``mouth_corr`` (tracked output mouth opening vs the
        driving meshes'; NaN when either is constant) and ``frames``.
    """
    reference = identity.embed(photo_crop)
    distances = []
    for frame in frames:
        e = identity.embed(frame)
        if e is not None and reference is not None:
            distances.append(float(np.linalg.norm(e - reference)))
    tracked = tracker.track_video(list(frames))  # [T, 478, 3], NaN rows where no face
    out_mouth, drv_mouth = mouth_opening(tracked), mouth_opening(driving)
    ok = np.isfinite(out_mouth)
    corr = (float(np.corrcoef(out_mouth[ok], drv_mouth[ok])[0, 1])
            if ok.sum() > 2 and out_mouth[ok].std() > 0 and drv_mouth[ok].std() > 0 else float("nan"))
    return {"identity_distance": float(np.mean(distances)) if distances else float("nan"),
            "identity_distance_max": float(np.max(distances)) if distances else float("nan"),
            "frames_without_face": len(frames) - len(distances), "mouth_corr": corr, "frames": len(frames)}
