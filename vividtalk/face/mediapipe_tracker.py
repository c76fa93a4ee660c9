"""The MediaPipe backend (the offline default): Face Mesh from the ``mediapipe==0.10.14`` wheel,
478 points (468 mesh vertices + 10 iris points) with depth, and MediaPipe's full-range face
detector. Graphs are built once per tracker and closed by ``close()`` or a ``with`` block.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from .image import as_rgb_uint8
from .tracking import (
    Closing,
    NoFaceError,
    check_face_size,
    check_visible,
    select_largest,
    stack_tracks,
    unturn_points,
)

class MediaPipeTracker(Closing):
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
        self._detector: FaceDetector | None = None

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
        if self._detector is None:
            self._detector = FaceDetector(min_confidence=_UNSURE)
        boxes, scores = self._detector(image)
        best = float(scores.max()) if len(scores) else 0.0
        if best < _SURE:
            turns = [(self._detector(np.ascontiguousarray(np.rot90(image, k))), k) for k in (1, 2, 3)]
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
        """Close the graphs built so far (a later call builds them again)."""
        if self._static is not None:
            self._static.close()
            self._static = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None


class FaceMeshStream(Closing):
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


class FaceDetector(Closing):
    """MediaPipe's face detector: one graph for every image; a context manager.

    Args:
        min_confidence: detections scoring less are dropped.
        full_range: the full-range model (faces of any size, the default), or the short-range
            one that Face Mesh runs inside (faces within about 2 m; faster).
    """

    def __init__(self, min_confidence: float = 0.5, full_range: bool = True) -> None:
        from mediapipe.python.solutions.face_detection import FaceDetection

        self._graph = FaceDetection(model_selection=int(full_range), min_detection_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes and scores of one image.

        Args:
            image: [H, W, 3] RGB uint8.
        Returns:
            boxes float32 [N, 4] (x0, y0, x1, y1) in pixels and scores float32 [N], N >= 0.
        """
        h, w = image.shape[:2]
        result = self._graph.process(np.ascontiguousarray(image))
        boxes, scores = [], []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
            scores.append(d.score[0])
        return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(scores, dtype=np.float32)

    def close(self) -> None:
        self._graph.close()


def detect_faces(image: np.ndarray, min_confidence: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """:class:`FaceDetector` on one image (a graph built and closed for this call)."""
    with FaceDetector(min_confidence) as detector:
        return detector(image)


def detect_face_boxes(image: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """The boxes of :func:`detect_faces`: float32 [N, 4] (x0, y0, x1, y1) in pixels."""
    return detect_faces(image, min_confidence)[0]


_SURE, _UNSURE = 0.75, 0.3
"""Detector scores: above _SURE an image is not tried turned (upright faces score 0.8-0.95);
_UNSURE is the lowest score that counts when comparing turns."""
