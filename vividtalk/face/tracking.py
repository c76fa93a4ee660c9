"""Face tracking, the part every backend shares: 3-D landmarks in pixel coordinates.

The backends (:mod:`vividtalk.face.mediapipe_tracker`, the offline default, and
:mod:`vividtalk.face.fan_tracker`) implement :class:`Tracker`; :func:`vividtalk.face.trackers.get_tracker`
chooses one by name. This module holds their errors, the choice of the largest face, size and
visibility checks, and the stacking and gap filling of video tracks.

Landmarks are float32 [N, 3]: x = column and y = row in pixels of the input image, z = depth
in pixels (smaller = closer to the camera; MediaPipe's z scaled by the image width; 0 for
the 2-D face-alignment backend).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Iterable, Protocol, runtime_checkable

import cv2
import numpy as np

from .image import as_rgb_uint8


class NoFaceError(ValueError):
    """No face was found where one was required."""


class FaceTooSmallError(ValueError):
    """The face is smaller than the tracker's minimum size in pixels."""


class FaceCutError(NoFaceError):
    """Too much of the face lies outside the image (it is cut by the image border)."""


class Closing(ABC):
    """Owners of MediaPipe graphs or networks: ``close()`` releases them, and so does leaving a
    ``with`` block."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@runtime_checkable
class Tracker(Protocol):
    """Landmark tracker interface."""

    name: str
    num_points: int

    def track_image(self, image: np.ndarray) -> np.ndarray:
        """Landmarks of the largest face: float32 [num_points, 3]. Raises NoFaceError."""

    def track_video(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Landmarks per frame: float32 [T, num_points, 3]; NaN rows where no face was found."""

    def close(self) -> None:
        """Release the backend's graphs or networks (trackers are also context managers)."""


def face_size(landmarks: np.ndarray) -> float:
    """Side of the landmarks' 2-D bounding box in pixels: max(width, height)."""
    extent = landmarks[:, :2].max(axis=0) - landmarks[:, :2].min(axis=0)
    return float(extent.max())


def select_largest(faces: list[np.ndarray], what: str = "image") -> np.ndarray:
    """Pick the face with the largest bounding box, warning when there were several.

    Args:
        faces: list of float [N, 3] landmark arrays (at least one).
    """
    if len(faces) > 1:
        warnings.warn(f"found {len(faces)} faces in the {what}; using the largest", stacklevel=3)
    return max(faces, key=face_size)


def check_face_size(landmarks: np.ndarray, min_size: int) -> None:
    """Raise FaceTooSmallError when the face is under ``min_size`` pixels."""
    size = face_size(landmarks)
    if size < min_size:
        raise FaceTooSmallError(
            f"the face is only {size:.0f} px across; at least {min_size} px is needed. "
            "Use a higher-resolution image or one where the face is larger."
        )


def stack_tracks(frames: Iterable[np.ndarray], faces_in, num_points: int, min_face_size: int) -> np.ndarray:
    """Largest face per frame, NaN rows where none (or only a too small one) is found.

    Args:
        frames: iterable of images; faces_in: RGB uint8 frame -> list of [N, 3] faces.
    Returns:
        float32 [T, num_points, 3].
    """
    out = []
    for frame in frames:
        faces = faces_in(as_rgb_uint8(frame))
        face = max(faces, key=face_size) if faces else None
        if face is None or face_size(face) < min_face_size:
            face = np.full((num_points, 3), np.nan, dtype=np.float32)
        out.append(face)
    if not out:
        raise ValueError("the video has no frames")
    return np.stack(out)


def fill_missing(tracks: np.ndarray) -> np.ndarray:
    """Landmark tracks [T, N, C] with NaN rows (frames without a face) filled by linear
    interpolation between the nearest tracked frames (held at the ends).

    Raises:
        NoFaceError: when no frame has a face.
    """
    found = ~np.isnan(tracks[:, 0, 0])
    if not found.any():
        raise NoFaceError("no face found in any frame of the video")
    if found.all():
        return tracks
    t = np.arange(len(tracks))
    flat = tracks.reshape(len(tracks), -1)
    filled = np.stack([np.interp(t, t[found], flat[found, j]) for j in range(flat.shape[1])], axis=1)
    return filled.reshape(tracks.shape).astype(tracks.dtype)


def unturn_points(points: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Points [N, 2+] found in ``np.rot90(image, k)`` (k quarter turns counter-clockwise) mapped
    back into the pixels of ``image`` of shape (H, W) (continuous coordinates, depth kept)."""
    h, w = shape
    out = np.array(points, dtype=np.float32, copy=True)
    x, y = points[:, 0].copy(), points[:, 1].copy()
    if k % 4 == 1:
        out[:, 0], out[:, 1] = w - y, x
    elif k % 4 == 2:
        out[:, 0], out[:, 1] = w - x, h - y
    elif k % 4 == 3:
        out[:, 0], out[:, 1] = y, h - x
    return out


_EDGES = ("left", "top", "right", "bottom")


def visible_share(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[float, str | None]:
    """The share of the landmarks' convex hull inside an image of shape (H, W), and the edge
    that cuts most of the rest (None when all of it is inside)."""
    h, w = shape
    xy = landmarks[:, :2].astype(np.float64)
    lo, hi = np.floor(xy.min(0)) - 1, np.ceil(xy.max(0)) + 1
    canvas = np.zeros((int(hi[1] - lo[1]), int(hi[0] - lo[0])), np.uint8)
    hull = cv2.convexHull(np.round(xy - lo).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 1)
    ys, xs = np.nonzero(canvas)
    xs, ys = xs + lo[0] + 0.5, ys + lo[1] + 0.5
    if len(xs) == 0:
        return 1.0, None
    outside = [(xs < 0).sum(), (ys < 0).sum(), (xs > w).sum(), (ys > h).sum()]
    inside = ((xs >= 0) & (xs <= w) & (ys >= 0) & (ys <= h)).mean()
    return float(inside), (_EDGES[int(np.argmax(outside))] if max(outside) else None)


def check_visible(landmarks: np.ndarray, shape: tuple[int, int], min_visible: float = 0.6) -> None:
    """Warn when the image border cuts the face; FaceCutError when less than ``min_visible`` of
    it is inside the image."""
    share, edge = visible_share(landmarks, shape)
    if edge is None:
        return
    if share < min_visible:
        raise FaceCutError(f"the face is cut by the image's {edge} edge: only {share:.0%} of it is inside the "
                           f"image (at least {min_visible:.0%} is needed); use a photo that shows the whole face")
    warnings.warn(f"the face is cut by the image's {edge} edge ({share:.0%} of it is inside the image); "
                  "the part outside is filled in by mirroring", stacklevel=3)
