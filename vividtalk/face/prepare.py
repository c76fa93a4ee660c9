"""Face preparation: track, crop, fit the face model, label face / hair-torso / background.

The one home of what the pipeline (its source photo), the synthetic corpus (its photos), the
visual check (``vividtalk fit-face``) and video preparation (training clips) all do to a face
(docs/architecture.md, "Data contracts"): :func:`crop_and_fit` cuts the FOMM-style crop of T
frames with one box and fits the model there, :class:`FacePreparer` adds tracking and labels
with MediaPipe graphs built once and closed with it, :func:`prepare_source` is the one-shot
form for a single photo, and :func:`track_and_fit` the one for a video.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .crop import CropBox, clip_crop_box, crop_image
from .fitting import FaceFitter, FitResult
from .image import as_rgb_uint8
from .mediapipe_tracker import MediaPipeTracker
from .model import FaceModel
from .segmentation import PersonSegmenter, label_masks
from .tracking import Closing, fill_missing

MAX_SIDE = 4096
"""Photos with a longer side are downscaled before anything else (tracking, cropping)."""


@dataclass
class FittedCrops:
    """A face cropped with one box and fitted in T frames (T = 1 for a photo).

    Attributes:
        box: the crop box in the frames' pixels.
        crops: uint8 [T, S, S, 3].
        points: float32 [T, N, 3] the tracked landmarks in crop pixels.
        fit: the face model's fit to ``points`` (crop pixels).
        vertices: float32 [T, V, 3] the fitted meshes in crop pixels.
    """

    box: CropBox
    crops: np.ndarray
    points: np.ndarray
    fit: FitResult
    vertices: np.ndarray


def crop_and_fit(frames: Iterable[np.ndarray], landmarks: np.ndarray, fitter: FaceFitter,
                 size: int = 256) -> FittedCrops:
    """Cut the fixed crop of T frames around their landmarks and fit the face model there.

    Args:
        frames: T RGB uint8 images [H, W, 3] (read once: an iterator does); landmarks: float [T, N, 3] (or [N, 3] for T = 1)
            in their pixels; fitter: for the stages' face model; size: crop side in pixels.
    """
    box = clip_crop_box(landmarks)
    crops = np.stack([crop_image(f, box, size) for f in frames])
    points = box.to_crop(landmarks, size)
    points = points[None] if points.ndim == 2 else points
    fit = fitter.fit(points)
    with torch.no_grad():
        vertices = fitter.model.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets, pose=fit.pose)
    return FittedCrops(box, crops, points, fit, vertices.numpy().astype(np.float32))


@dataclass
class SourceFace:
    """A prepared photo: the source of a one-shot generation or of synthetic clips.

    Attributes:
        image: RGB uint8 [H, W, 3], the (possibly downscaled) input image.
        box: the crop box in ``image``.
        crop: RGB uint8 [S, S, 3].
        vertices: float32 [V, 3] the fitted mesh in crop pixels.
        identity: float32 [V, 3] the identity shape (canonical frame): the style input.
        pose: float32 [7] the head pose of the crop (canonical -> crop pixels).
        beta: float32 [K] the source's own expression; lip_offsets: float32 [L, 3] its lip residual.
        masks: uint8 [S, S] labels (``segmentation.BACKGROUND``, ``HAIR_TORSO``, ``FACE``).
    """

    image: np.ndarray
    box: CropBox
    crop: np.ndarray
    vertices: np.ndarray
    identity: np.ndarray
    pose: np.ndarray
    beta: np.ndarray
    masks: np.ndarray
    lip_offsets: np.ndarray


class FacePreparer(Closing):
    """Track, crop, fit and label faces; MediaPipe's graphs (Face Mesh, detector, person
    segmenter) are built on first use, reused, and closed by :meth:`close` or a ``with`` block.

    Args:
        face: the face model the stages were trained with.
        size: crop side in pixels.
        min_face_size: photos whose face is smaller (pixels across) are refused.
    """

    def __init__(self, face: FaceModel, size: int = 256, min_face_size: int = 64) -> None:
        self.face, self.size = face, size
        self.fitter = FaceFitter(face)
        self.tracker = MediaPipeTracker(min_face_size=min_face_size)
        self._segmenter: PersonSegmenter | None = None

    def labels(self, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Face / hair-torso / background labels uint8 [T, S, S] of crops [T, S, S, 3] whose
        landmarks are ``points`` [T, N, 3] (crop pixels)."""
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        return np.stack([label_masks(self._segmenter(c), p, self.face) for c, p in zip(crops, points)])

    def photo(self, image: np.ndarray) -> SourceFace:
        """Track, crop, fit and label the face of one photo.

        Args:
            image: [H, W] grayscale, [H, W, 3] RGB or [H, W, 4] RGBA; uint8, uint16 or float in [0, 1].
        Raises:
            NoFaceError, FaceTooSmallError, FaceCutError (all ValueError); several faces: the
            largest is used, with a warning.
        """
        image = _limit_size(as_rgb_uint8(image))
        landmarks = self.tracker.track_image(image)  # [478, 3]
        fitted = crop_and_fit([image], landmarks, self.fitter, self.size)
        fit = fitted.fit
        return SourceFace(image, fitted.box, fitted.crops[0], fitted.vertices[0], fit.identity.numpy(),
                          fit.pose[0].numpy(), fit.beta[0].numpy(), self.labels(fitted.crops, fitted.points)[0],
                          fit.lip_offsets[0].numpy())

    def close(self) -> None:
        self.tracker.close()
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None


def _limit_size(image: np.ndarray) -> np.ndarray:
    import cv2

    side = max(image.shape[:2])
    if side <= MAX_SIDE:
        return image
    s = MAX_SIDE / side
    warnings.warn(f"image is {image.shape[1]}x{image.shape[0]}; downscaled by {s:.3f} to at most {MAX_SIDE} px",
                  stacklevel=4)
    return cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_AREA)


def prepare_source(image: np.ndarray, face: FaceModel, size: int = 256, min_face_size: int = 64) -> SourceFace:
    """:meth:`FacePreparer.photo` for one photo (the graphs closed before it returns)."""
    with FacePreparer(face, size, min_face_size) as preparer:
        return preparer.photo(image)


def track_and_fit(frames: list[np.ndarray] | np.ndarray, face: FaceModel) -> tuple[np.ndarray, FitResult]:
    """Track a video's face (MediaPipe, faces from 32 px) and fit the face model per frame.

    Returns:
        (landmarks float32 [T, 478, 3] with NaN rows where no face was found, the
        :class:`~vividtalk.face.fitting.FitResult` of the tracks with those rows interpolated).
    Raises:
        NoFaceError: when no frame has a face.
    """
    with MediaPipeTracker(min_face_size=32) as tracker:
        landmarks = tracker.track_video(frames)
    return landmarks, FaceFitter(face).fit(fill_missing(landmarks))


def reference_poses(frames: list[np.ndarray], face: FaceModel) -> np.ndarray:
    """Head poses of a reference video, float32 [T, 7] in its own pixels (frames without a
    face are interpolated from their neighbours).

    Raises:
        NoFaceError: when no frame has a face.
    """
    return track_and_fit(frames, face)[1].pose.numpy().astype(np.float32)
