"""Face trackers: 3-D landmarks in pixel coordinates for images and videos.

Two backends behind one interface, chosen by name with :func:`get_tracker`:

- ``"mediapipe"`` (the offline default): MediaPipe Face Mesh from the ``mediapipe==0.10.14``
  wheel, 478 points (468 mesh vertices + 10 iris points) with depth.
- ``"face-alignment"``: the 2DFAN-4 landmark network of the ``face-alignment`` project
  (68 points, the landmarks of FOMM-style preprocessing), read from a TorchScript file that
  must already be on disk; faces are located with MediaPipe's face detector. Nothing is
  downloaded: a missing file is an error that names it.

Landmarks are float32 [N, 3]: x = column and y = row in pixels of the input image, z = depth
in pixels (smaller = closer to the camera; MediaPipe's z scaled by the image width; 0 for
the 2-D face-alignment backend).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
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


@runtime_checkable
class Tracker(Protocol):
    """Landmark tracker interface."""

    name: str
    num_points: int

    def track_image(self, image: np.ndarray) -> np.ndarray:
        """Landmarks of the largest face: float32 [num_points, 3]. Raises NoFaceError."""

    def track_video(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Landmarks per frame: float32 [T, num_points, 3]; NaN rows where no face was found."""


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


class MediaPipeTracker:
    """MediaPipe Face Mesh (478 points with the refined lips/eyes/irises model).

    Args:
        max_num_faces: faces to look for; the largest is returned (with a warning if > 1).
        min_detection_confidence: face detector threshold.
        min_tracking_confidence: in video mode, below this the face is re-detected.
        min_face_size: faces smaller than this (pixels) raise FaceTooSmallError.
        min_visible: share of the face (its landmarks' hull) that must lie inside an image;
            less raises FaceCutError.
    """

    name = "mediapipe"
    num_points = 478

    def __init__(
        self,
        max_num_faces: int = 4,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_face_size: int = 64,
        min_visible: float = 0.6,
    ) -> None:
        self.max_num_faces = max_num_faces
        self.min_visible = min_visible
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.min_face_size = min_face_size
        self._static = None

    def _face_mesh(self, static: bool):
        from mediapipe.python.solutions.face_mesh import FaceMesh

        return FaceMesh(
            static_image_mode=static,
            max_num_faces=self.max_num_faces,
            refine_landmarks=True,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def _faces(self, mesh, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        result = mesh.process(image)
        if not result.multi_face_landmarks:
            return []
        scale = np.array([w, h, w], dtype=np.float32)
        return [
            np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale
            for face in result.multi_face_landmarks
        ]

    def track_image(self, image: np.ndarray) -> np.ndarray:
        """Landmarks of the largest face in one image.

        Faces are found with MediaPipe's full-range detector and each is meshed in a window
        around its box: the Face Mesh's own short-range detector misses small faces in large
        or wide images and finds at most one face in many group shots. A photo whose face the
        detector hardly sees is tried turned by 90, 180 and 270 degrees (a face lying down or
        upside down), and once more inside a grey border (a face cut by the image border);
        landmarks always come back in the input's pixels, possibly beyond its border.

        Args:
            image: [H, W, 3] RGB uint8 (grayscale, RGBA, uint16 and float are converted).
        Returns:
            float32 [478, 3] pixel coordinates + depth.
        Raises:
            NoFaceError, FaceTooSmallError, FaceCutError (less than ``min_visible`` of the face
            inside the image; a warning names the edge when only part of it is).
        """
        image = as_rgb_uint8(image)
        if self._static is None:
            self._static = self._face_mesh(static=True)
        face = self._track_any_turn(image)
        if face is None:  # a face cut by the border: the detector wants to see all of it
            pad = int(0.3 * max(image.shape[:2]))
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            face = self._track_any_turn(padded)
            if face is not None:
                face[:, :2] -= pad
        if face is None:
            raise NoFaceError(
                f"no face found in the image ({image.shape[1]}x{image.shape[0]}); "
                "use a photo with one clearly visible face (if it touches the image border, one that shows more "
                "of it)"
            )
        check_face_size(face, self.min_face_size)
        check_visible(face, image.shape[:2], self.min_visible)
        return face

    def _track_any_turn(self, image: np.ndarray) -> np.ndarray | None:
        """The largest face of the image as it is or, when the detector is unsure of it there,
        of the quarter turn where it is surest (landmarks mapped back); None if none."""
        boxes, scores = detect_faces(image, min_confidence=_UNSURE)
        best = float(scores.max()) if len(scores) else 0.0
        if best < _SURE:
            turns = [(detect_faces(np.ascontiguousarray(np.rot90(image, k)), _UNSURE), k) for k in (1, 2, 3)]
            (t_boxes, t_scores), k = max(turns, key=lambda t: t[0][1].max() if len(t[0][1]) else 0.0)
            if len(t_scores) and t_scores.max() > best + 0.1:
                face = self._track_upright(np.ascontiguousarray(np.rot90(image, k)), t_boxes, t_scores)
                if face is not None:
                    return unturn_points(face, k, image.shape[:2])
        return self._track_upright(image, boxes, scores)

    def _track_upright(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
        """The largest face meshed in the detector's boxes of the image (those above the
        detection threshold), or by the Face Mesh's own detector when there are none."""
        boxes = boxes[scores >= self.min_detection_confidence]
        faces = [f for box in boxes for f in self._mesh_in_box(image, box)]
        if not faces:  # the detector can miss faces that fill the whole frame
            faces = self._faces(self._static, image)[:1]
        return select_largest(faces) if faces else None

    def _mesh_in_box(self, image: np.ndarray, box: np.ndarray, work_size: int = 384) -> list[np.ndarray]:
        """Mesh one detected face in a square window twice its box size (at most one face)."""
        side = 2.0 * max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        s = work_size / side
        affine = np.array([[s, 0, work_size / 2 - cx * s], [0, s, work_size / 2 - cy * s]])
        window = cv2.warpAffine(image, affine, (work_size, work_size), borderMode=cv2.BORDER_CONSTANT)
        found = self._faces(self._static, window)
        if not found:
            return []
        # The face nearest the window centre is the detected one.
        face = min(found, key=lambda f: np.abs(f[:, :2].mean(0) - work_size / 2).sum())
        face[:, 0] = (face[:, 0] - affine[0, 2]) / s
        face[:, 1] = (face[:, 1] - affine[1, 2]) / s
        face[:, 2] = face[:, 2] / s
        return [face]

    def stream(self) -> "FaceMeshStream":
        """A tracking-mode Face Mesh fed one frame at a time (for videos too long to hold)."""
        return FaceMeshStream(self)

    def track_video(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Track through a sequence in MediaPipe's tracking mode (temporally coherent).

        Args:
            frames: iterable of [H, W, 3] RGB uint8 frames.
        Returns:
            float32 [T, 478, 3]; rows are NaN for frames with no face or a face below
            ``min_face_size`` (callers split clips there).
        """
        with self.stream() as stream:
            return stack_tracks(frames, stream.faces, self.num_points, self.min_face_size)

    def close(self) -> None:
        if self._static is not None:
            self._static.close()
            self._static = None


class FaceMeshStream:
    """MediaPipe Face Mesh in tracking mode, one frame at a time; a context manager.

    Args:
        tracker: supplies the graph settings (faces, confidences).
    """

    def __init__(self, tracker: MediaPipeTracker) -> None:
        self.tracker = tracker
        self._mesh = tracker._face_mesh(static=False)

    def faces(self, frame: np.ndarray) -> list[np.ndarray]:
        """Every face in the frame: list of float32 [478, 3] pixel landmarks (maybe empty)."""
        return self.tracker._faces(self._mesh, as_rgb_uint8(frame))

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMeshStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_faces(image: np.ndarray, min_confidence: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Face boxes and scores from MediaPipe's face detector (full-range model).

    Args:
        image: [H, W, 3] RGB uint8.
    Returns:
        boxes float32 [N, 4] (x0, y0, x1, y1) in pixels and scores float32 [N], N >= 0.
    """
    from mediapipe.python.solutions.face_detection import FaceDetection

    h, w = image.shape[:2]
    with FaceDetection(model_selection=1, min_detection_confidence=min_confidence) as det:
        result = det.process(np.ascontiguousarray(image))
    boxes, scores = [], []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        scores.append(d.score[0])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(scores, dtype=np.float32)


def detect_face_boxes(image: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """The boxes of :func:`detect_faces`: float32 [N, 4] (x0, y0, x1, y1) in pixels."""
    return detect_faces(image, min_confidence)[0]


_SURE, _UNSURE = 0.75, 0.3
"""Detector scores: above _SURE an image is not tried turned (upright faces score 0.8-0.95);
_UNSURE is the lowest score that counts when comparing turns."""


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


FAN_FILE = "2DFAN4-cd938726ad.zip"


def default_fan_dir() -> Path:
    """The torch hub checkpoint cache, where the face-alignment package keeps its weights."""
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return Path(torch_home) / "hub" / "checkpoints"


def find_fan_weights(weights: str | os.PathLike | None) -> Path:
    """Locate the 2DFAN-4 TorchScript file: a file path, a directory holding ``2DFAN4*.zip``,
    or (None) the torch hub cache. Raises FileNotFoundError naming the missing file."""
    path = Path(weights) if weights is not None else default_fan_dir()
    if path.is_file():
        return path
    found = sorted(path.glob("2DFAN4*.zip")) if path.is_dir() else []
    if found:
        return found[0]
    raise FileNotFoundError(
        f"face-alignment weights not found: expected {path / FAN_FILE if path.suffix != '.zip' else path}. "
        "vividtalk never downloads weights: copy the 2DFAN-4 TorchScript file released by the "
        "face-alignment project there (or pass its path), or use the offline default tracker "
        "'mediapipe'."
    )


TRACKERS = ("mediapipe", "face-alignment")


def get_tracker(name: str = "mediapipe", **kwargs) -> Tracker:
    """Build a tracker by name: ``"mediapipe"`` (default, offline) or ``"face-alignment"``.

    Keyword arguments go to the backend's constructor.
    """
    if name == "mediapipe":
        return MediaPipeTracker(**kwargs)
    if name == "face-alignment":
        from .fan_tracker import FaceAlignmentTracker

        return FaceAlignmentTracker(**kwargs)
    raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
