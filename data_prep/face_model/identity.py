"""Identity modes U_id of the default model: smooth, global shape variations.

Each mode at coefficient 1 is roughly one standard deviation of adult face variation (a few
percent of the face height). They are used to widen synthetic identities and as the prior
of single-image fitting; a corpus-trained PCA basis can replace them.
"""

from __future__ import annotations

import numpy as np

from .shapes import Geometry, per_vertex, ramp


def face_width(g: Geometry) -> np.ndarray:
    return per_vertex(g.x / 0.4, [0.04, 0.0, 0.0])


def face_length(g: Geometry) -> np.ndarray:
    return per_vertex(g.y / 0.5, [0.0, 0.04, 0.0])


def face_depth(g: Geometry) -> np.ndarray:
    z = g.points[:, 2]
    return per_vertex((z - z.mean()) / 0.3, [0.0, 0.0, 0.04])


def jaw_width(g: Geometry) -> np.ndarray:
    return per_vertex(g.x / 0.4 * ramp(g.y, 0.0, 0.4), [0.04, 0.0, 0.0])


def chin_length(g: Geometry) -> np.ndarray:
    return per_vertex(ramp(g.y, 0.25, 0.5), [0.0, 0.03, 0.0])


def nose_length(g: Geometry) -> np.ndarray:
    tip = np.array([int(g.points[g.idx("nose"), 2].argmin())])
    return per_vertex(g.falloff(g.idx("nose")[tip], 0.12), [0.0, 0.02, -0.02])


def nose_width(g: Geometry) -> np.ndarray:
    w = g.falloff(g.idx("nose"), 0.06)
    return np.stack([0.15 * g.x * w, np.zeros_like(w), np.zeros_like(w)], 1)


def eye_spacing(g: Geometry) -> np.ndarray:
    eye = np.concatenate([g.idx("left_eye_upper"), g.idx("left_eye_lower")])
    left = per_vertex(g.falloff(eye, 0.12) * g.left_side(), [0.02, 0.0, 0.0])
    return left + g.mirrored(left)


def forehead_height(g: Geometry) -> np.ndarray:
    brows = np.concatenate([g.idx("left_eyebrow"), g.idx("right_eyebrow")])
    return per_vertex(ramp(g.y, g.y[brows].min(), -0.5), [0.0, -0.03, 0.0])


IDENTITY_MODES = (
    ("faceWidth", face_width),
    ("faceLength", face_length),
    ("faceDepth", face_depth),
    ("jawWidth", jaw_width),
    ("chinLength", chin_length),
    ("noseLength", nose_length),
    ("noseWidth", nose_width),
    ("eyeSpacing", eye_spacing),
    ("foreheadHeight", forehead_height),
)


def author_identity(g: Geometry) -> tuple[list[str], np.ndarray]:
    """(names, float32 [K_id, V, 3])."""
    return [n for n, _ in IDENTITY_MODES], np.stack([f(g) for _, f in IDENTITY_MODES]).astype(np.float32)
