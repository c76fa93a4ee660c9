"""Identity metric: dlib's 128-D face embedding and the distance between two faces.

The embedding is dlib's face-recognition ResNet (``dlib-bin``) with the CC0 weights of the
``face-recognition-models`` package, found on disk (no download). Faces are found by dlib's
HOG detector and aligned by its 5-point landmark model. The distance between two embeddings is
Euclidean; dlib's own threshold for "the same person" is 0.6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAME_PERSON_THRESHOLD = 0.6
"""dlib's decision threshold: distances below it are the same identity (99.38 % on LFW)."""


def _models_dir() -> Path:
    # face_recognition_models' __init__ imports pkg_resources (gone from recent setuptools):
    # locate its data without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the dlib identity metric needs `pip install dlib-bin face-recognition-models`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibIdentity:
    """Face -> 128-D identity embedding (dlib ResNet, aligned by the 5-point model).

    Args:
        models_dir: directory with ``shape_predictor_5_face_landmarks.dat`` and
            ``dlib_face_recognition_resnet_model_v1.dat``; None: the face-recognition-models package.
        upsample: times the HOG detector upsamples the image (1 finds faces down to ~40 px).
    """

    def __init__(self, models_dir: str | None = None, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError as e:
            raise ImportError("the dlib identity metric needs `pip install dlib-bin face-recognition-models`") from e
        root = Path(models_dir) if models_dir else _models_dir()
        files = [root / "shape_predictor_5_face_landmarks.dat", root / "dlib_face_recognition_resnet_model_v1.dat"]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"dlib model not found: {f}")
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(files[0]))
        self.network = dlib.face_recognition_model_v1(str(files[1]))
        self.upsample = upsample

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """The embedding float64 [128] of the largest face in an RGB uint8 [H, W, 3] image,
        or None when no face is found."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        boxes = self.detector(image, self.upsample)
        if len(boxes) == 0:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        return np.array(self.network.compute_face_descriptor(image, self.landmarks(image, box)))

    def distance(self, images: np.ndarray, references: np.ndarray) -> dict[str, float]:
        """Mean identity distance between paired frames uint8 [T, H, W, 3] (or one reference
        [H, W, 3] for all frames).

        Returns:
            dict with ``identity_distance`` (mean over the frames where both faces were found;
            NaN if none), ``same_identity_rate`` (share of those below
            :data:`SAME_PERSON_THRESHOLD`) and ``frames_without_face``.
        """
        if references.ndim == 3:
            ref = self.embed(references)
            ref_embeddings = [ref] * len(images)
        else:
            if len(references) != len(images):
                raise ValueError(f"{len(images)} frames but {len(references)} references")
            ref_embeddings = [self.embed(r) for r in references]
        distances, missing = [], 0
        for image, ref in zip(images, ref_embeddings):
            emb = self.embed(image)
            if emb is None or ref is None:
                missing += 1
                continue
            distances.append(float(np.linalg.norm(emb - ref)))
        d = np.array(distances)
        return {"identity_distance": float(d.mean()) if len(d) else float("nan"),
                "same_identity_rate": float((d < SAME_PERSON_THRESHOLD).mean()) if len(d) else float("nan"),
                "frames_without_face": missing}
