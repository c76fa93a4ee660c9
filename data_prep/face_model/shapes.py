"""Authoring tools for displacement fields on the mean shape (blendshapes, identity modes).

Every field is a smooth, region-limited displacement [V, 3] in face heights (the mean shape
has unit forehead-to-chin length), built from anchors with smooth falloffs and gated to a
region so that, e.g., a mouth shape leaves the eyes exactly still.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vividtalk.face.topology import semantic_regions


def smoothstep(t: np.ndarray) -> np.ndarray:
    """C1 ramp: 0 for t <= 0, 1 for t >= 1."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ramp(values: np.ndarray, start: float, end: float) -> np.ndarray:
    """Smooth 0 -> 1 as ``values`` goes from ``start`` to ``end`` (either direction)."""
    return smoothstep((values - start) / (end - start))


@dataclass
class Geometry:
    """The mean shape with the landmarks and regions the authoring refers to.

    Attributes:
        points: float64 [V, 3] mean shape (x to the subject's left, y down, z away).
        mirror: int [V] mirror partner of each vertex.
        regions: named index arrays from :func:`semantic_regions`.
    """

    points: np.ndarray
    mirror: np.ndarray
    regions: dict

    @classmethod
    def build(cls, mean: np.ndarray, mirror: np.ndarray) -> "Geometry":
        points = np.asarray(mean, dtype=np.float64)
        return cls(points, np.asarray(mirror), semantic_regions(points))

    @property
    def x(self) -> np.ndarray:
        return self.points[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.points[:, 1]

    def idx(self, name: str) -> np.ndarray:
        return self.regions[name]

    def distance(self, anchors: np.ndarray) -> np.ndarray:
        """float [V]: distance from each vertex to the nearest anchor vertex."""
        d = np.linalg.norm(self.points[:, None] - self.points[None, anchors], axis=-1)
        return d.min(axis=1)

    def falloff(self, anchors: np.ndarray, radius: float) -> np.ndarray:
        """float [V]: 1 on the anchors, smoothly 0 at ``radius`` and beyond."""
        return smoothstep(1.0 - self.distance(anchors) / radius) ** 1.0

    def left_corner(self) -> tuple[int, int]:
        """(outer, inner) mouth corner vertices on the subject's left (+x)."""
        return int(self.idx("lips_outer_upper")[-1]), int(self.idx("lips_inner_upper")[-1])

    def lip_line(self) -> np.ndarray:
        """float [V]: y of the line between the lips, interpolated at each vertex's x."""
        upper, lower = self.idx("lips_inner_upper"), self.idx("lips_inner_lower")
        mid = 0.5 * (self.points[upper] + self.points[lower])
        order = np.argsort(mid[:, 0])
        return np.interp(self.x, mid[order, 0], mid[order, 1])

    def lower_lip_weight(self) -> np.ndarray:
        """float [V] in [0, 1]: 1 for lip vertices below the lip line, 0 above, 0.5 at the
        corners (which belong to both lips)."""
        w = np.zeros(len(self.points))
        lips = self.idx("lips")
        w[lips] = (self.y[lips] > self.lip_line()[lips]).astype(float)
        corners = [self.idx(k)[i] for k in ("lips_outer_upper", "lips_inner_upper") for i in (0, -1)]
        w[corners] = 0.5
        return w

    def mouth_gate(self) -> np.ndarray:
        """float [V]: 0 at and above the nose base, 1 from just below it (mouth shapes)."""
        base = self.y[self.idx("nose")].max()
        return ramp(self.y, base, base + 0.06)

    def eye_gate(self) -> np.ndarray:
        """float [V]: 1 above the nose's upper half, 0 below (eye and brow shapes)."""
        eyes_low = self.y[np.concatenate([self.idx("left_eye_lower"), self.idx("right_eye_lower")])].max()
        return 1.0 - ramp(self.y, eyes_low + 0.02, eyes_low + 0.1)

    def left_side(self, width: float = 0.06) -> np.ndarray:
        """float [V]: 1 on the subject's left half, 0 on the right, a ramp across the midline."""
        return ramp(self.x, -width / 2, width / 2)

    def mirrored(self, field: np.ndarray) -> np.ndarray:
        """The mirror image of a displacement field: left shapes -> right shapes."""
        return field[self.mirror] * np.array([-1.0, 1.0, 1.0])


def per_vertex(weight: np.ndarray, vector) -> np.ndarray:
    """Displacement [V, 3] = weight [V] x vector [3] (or [V, 3])."""
    return weight[:, None] * np.asarray(vector, dtype=np.float64)
