"""The one face image of a one-shot generation, prepared for both stages.

``prepare_source`` tracks the face, cuts the FOMM-style 256x256 crop, fits the face model
(identity shape for the style, pose / expression / lip offsets of the source frame), and labels
face / hair-torso / background for the outer projected texture; ``reference_poses`` reads the
head motion of a reference video for the "pose copied from a video" option.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .face.crop import CropBox, clip_crop_box, crop_image
from .face.fitting import FaceFitter
from .face.image import as_rgb_uint8
from .face.model import FaceModel
from .face.segmentation import PersonSegmenter, label_masks
from .face.tracking import MediaPipeTracker, fill_missing

MAX_SIDE = 4096
"""Images with a longer side are downscaled before anything else (tracking, cropping)."""


@dataclass
class SourceFace:
    """The prepared source.

    Attributes:
        image: RGB uint8 [H, W, 3], the (possibly downscaled) input image.
        box: the crop box in ``image``.
        crop: RGB uint8 [S, S, 3].
        vertices: float32 [V, 3] the fitted mesh in crop pixels.
        identity: float32 [V, 3] the identity shape (canonical frame): the style input.
        pose: float32 [7] the head pose of the crop (canonical -> crop pixels).
        beta: float32 [K] the source's own expression; lip_offsets: float32 [L, 3] its lip residual.
        masks: uint8 [S, S] labels (0 background, 1 hair/torso, 2 face).
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


def _limit_size(image: np.ndarray) -> np.ndarray:
    import cv2

    side = max(image.shape[:2])
    if side <= MAX_SIDE:
        return image
    s = MAX_SIDE / side
    warnings.warn(f"image is {image.shape[1]}x{image.shape[0]}; downscaled by {s:.3f} to at most {MAX_SIDE} px",
                  stacklevel=3)
    return cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_AREA)


def prepare_source(image: np.ndarray, face: FaceModel, size: int = 256, min_face_size: int = 64) -> SourceFace:
    """Track, crop, fit and label the face of one image.

    Args:
        image: [H, W] grayscale, [H, W, 3] RGB or [H, W, 4] RGBA; uint8, uint16 or float in [0, 1].
        face: the face model the stages were trained with.
        size: crop side in pixels.
        min_face_size: faces smaller than this (pixels across) are refused.
    Raises:
        NoFaceError, FaceTooSmallError (both ValueError); several faces: the largest is used,
        with a warning.
    """
    image = _limit_size(as_rgb_uint8(image))
    landmarks = MediaPipeTracker(min_face_size=min_face_size).track_image(image)  # [478, 3]
    box = clip_crop_box(landmarks)
    crop, points = crop_image(image, box, size), box.to_crop(landmarks, size)
    fit = FaceFitter(face).fit(points[None])
    with torch.no_grad():
        vertices = face.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets, pose=fit.pose)[0]
    segmenter = PersonSegmenter()
    try:
        masks = label_masks(segmenter(crop), points, face)
    finally:
        segmenter.close()
    return SourceFace(image, box, crop, vertices.numpy().astype(np.float32), fit.identity.numpy().astype(np.float32),
                      fit.pose[0].numpy().astype(np.float32), fit.beta[0].numpy().astype(np.float32), masks,
                      fit.lip_offsets[0].numpy().astype(np.float32))


def track_and_fit(frames: list[np.ndarray] | np.ndarray, face: FaceModel):
    """Track a video's face (MediaPipe, faces from 32 px) and fit the face model per frame.

    Returns:
        (landmarks float32 [T, 478, 3] with NaN rows where no face was found, the
        :class:`~vividtalk.face.fitting.FitResult` of the tracks with those rows interpolated).
    Raises:
        NoFaceError: when no frame has a face.
    """
    tracker = MediaPipeTracker(min_face_size=32)
    try:
        landmarks = tracker.track_video(frames)
    finally:
        tracker.close()
    return landmarks, FaceFitter(face).fit(fill_missing(landmarks))


def reference_poses(frames: list[np.ndarray], face: FaceModel) -> np.ndarray:
    """Head poses of a reference video, float32 [T, 7] in its own pixels (frames without a
    face are interpolated from their neighbours).

    Raises:
        NoFaceError: when no frame has a face.
    """
    return track_and_fit(frames, face)[1].pose.numpy().astype(np.float32)
