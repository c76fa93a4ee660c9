"""Face / hair-torso / background label masks (docs/architecture.md, "Data contracts").

The person comes from MediaPipe's selfie segmentation (shipped in the ``mediapipe==0.10.14``
wheel); the face is the tracked face-oval polygon; hair and torso are the rest of the person.
"""

from __future__ import annotations

import numpy as np

from .image import as_rgb_uint8
from .model import FaceModel
from .topology import fill_polygon
from .tracking import Closing

BACKGROUND, HAIR_TORSO, FACE = 0, 1, 2


class PersonSegmenter(Closing):
    """MediaPipe selfie segmentation, kept open across calls (its graph is slow to build).

    Args:
        model_selection: 0 = general (256x256 model), 1 = landscape (faster, 144x256).
    """

    def __init__(self, model_selection: int = 0) -> None:
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        self._graph = SelfieSegmentation(model_selection=model_selection)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Person probability: float32 [H, W] in [0, 1] for an RGB image [H, W, 3]."""
        return np.asarray(self._graph.process(as_rgb_uint8(image)).segmentation_mask, np.float32)

    def close(self) -> None:
        self._graph.close()


def person_mask(image: np.ndarray) -> np.ndarray:
    """One-off person probability: float32 [H, W] in [0, 1] (see :class:`PersonSegmenter`)."""
    with PersonSegmenter() as segmenter:
        return segmenter(image)


def face_region(vertices: np.ndarray, model: FaceModel, height: int, width: int) -> np.ndarray:
    """Pixels whose centre is inside the face-oval polygon of image-space vertices: bool [H, W]."""
    return fill_polygon(np.asarray(vertices)[model.regions["face_oval"], :2], height, width)


def label_masks(
    person: np.ndarray, vertices: np.ndarray, model: FaceModel, threshold: float = 0.5
) -> np.ndarray:
    """Labels uint8 [H, W]: 2 face (inside the oval), 1 hair/torso (rest of the person),
    0 background.

    Args:
        person: float32 [H, W] person probability.
        vertices: [V', 3] image-space mesh vertices or landmarks (first 468 = the mesh).
    """
    h, w = person.shape
    labels = np.where(person >= threshold, HAIR_TORSO, BACKGROUND).astype(np.uint8)
    labels[face_region(np.asarray(vertices), model, h, w)] = FACE
    return labels
