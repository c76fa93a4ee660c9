"""ARKit-style blendshapes authored on the MediaPipe topology.

Each function returns the displacement [V, 3] of coefficient 1 (face heights). Left shapes
are authored once and mirrored for the right side, so the pairs are exact mirror images.
Coefficients are meant to lie in [0, 1], as in ARKit.
"""

from __future__ import annotations

import numpy as np

from .shapes import Geometry, per_vertex, ramp


def jaw_weight(g: Geometry) -> np.ndarray:
    """How much each vertex follows the mandible: lower lip and chin 1, upper lip 0."""
    corner_y = g.y[list(g.left_corner())].mean()
    skin = ramp(g.y, corner_y - 0.02, corner_y + 0.1) * g.mouth_gate()
    w = skin.copy()
    w[g.idx("lips")] = g.lower_lip_weight()[g.idx("lips")]
    return w


def jaw_open(g: Geometry, angle: float = 0.4) -> np.ndarray:
    """Rotate the mandible about the jaw hinge (ear level, behind the face): chin down/back."""
    pivot = np.array([0.0, g.y[g.idx("nose")].min(), 0.35])
    c, s = np.cos(angle), np.sin(angle)
    rel = g.points - pivot
    rotated = np.stack([rel[:, 0], c * rel[:, 1] - s * rel[:, 2], s * rel[:, 1] + c * rel[:, 2]], 1)
    return jaw_weight(g)[:, None] * (rotated - rel)


def jaw_forward(g: Geometry) -> np.ndarray:
    return per_vertex(jaw_weight(g), [0.0, 0.0, -0.05])


def jaw_left(g: Geometry) -> np.ndarray:
    return per_vertex(jaw_weight(g), [0.05, 0.0, 0.0])


def mouth_weight(g: Geometry, radius: float = 0.15) -> np.ndarray:
    """Lips 1, fading over ``radius`` around them, never above the nose base."""
    return g.falloff(g.idx("lips"), radius) * g.mouth_gate()


def mouth_left(g: Geometry) -> np.ndarray:
    return per_vertex(mouth_weight(g), [0.05, 0.0, 0.0])


def corner_weight(g: Geometry, radius: float = 0.2) -> np.ndarray:
    """Around the subject's left mouth corner, on the left side only."""
    return g.falloff(np.array(g.left_corner()), radius) * g.mouth_gate() * g.left_side()


def mouth_smile_left(g: Geometry) -> np.ndarray:
    """Left corner up, out and back (and the cheek above it rises with it)."""
    return per_vertex(corner_weight(g), [0.045, -0.05, 0.02])


def mouth_frown_left(g: Geometry) -> np.ndarray:
    return per_vertex(corner_weight(g), [0.01, 0.045, 0.0])


def mouth_stretch_left(g: Geometry) -> np.ndarray:
    return per_vertex(corner_weight(g), [0.05, 0.012, 0.01])


def lip_profile(g: Geometry) -> np.ndarray:
    """float [V]: 1 at the mouth's midline, 0 at the corners (lip motion peaks centrally)."""
    half_width = g.x[g.left_corner()[0]]
    return np.clip(1.0 - (g.x / half_width) ** 2, 0.0, 1.0)


def mouth_pucker(g: Geometry) -> np.ndarray:
    """Lips pushed forward and gathered towards the midline."""
    w = mouth_weight(g, 0.08)
    return np.stack([-0.35 * g.x * w, np.zeros_like(w), -0.05 * w], 1)


def mouth_funnel(g: Geometry) -> np.ndarray:
    """Lips forward, parted at the centre into an 'O', corners drawn in."""
    w = mouth_weight(g, 0.06)
    lower = g.lower_lip_weight()
    part = 0.03 * lip_profile(g) * w * np.where(lower > 0.5, 1.0, np.where(lower < 0.5, -1.0, 0.0))
    return np.stack([-0.15 * g.x * w, part, -0.03 * w], 1)


def mouth_roll(g: Geometry, lower: bool) -> np.ndarray:
    """One lip rolls in over the teeth: back and towards the lip line."""
    weight = g.lower_lip_weight() if lower else 1.0 - g.lower_lip_weight()
    band = np.zeros(len(g.points))
    band[g.idx("lips")] = weight[g.idx("lips")]
    side = g.y > g.lip_line() if lower else g.y < g.lip_line()
    skin = 0.5 * g.falloff(g.idx("lips"), 0.05) * side * g.mouth_gate()
    w = np.maximum(band, skin) * (0.4 + 0.6 * lip_profile(g))
    return per_vertex(w, [0.0, -0.012 if lower else 0.012, 0.03])


def mouth_press(g: Geometry) -> np.ndarray:
    """Lips pressed together: the lip band thins towards the lip line and moves back."""
    w = mouth_weight(g, 0.05)
    dy = -0.3 * (g.y - g.lip_line()) * w
    return np.stack([np.zeros_like(w), dy, 0.01 * w], 1)


def lip_raise(g: Geometry, lower: bool) -> np.ndarray:
    """Upper lip up towards the nose, or lower lip down towards the chin."""
    weight = g.lower_lip_weight() if lower else 1.0 - g.lower_lip_weight()
    band = np.zeros(len(g.points))
    band[g.idx("lips")] = weight[g.idx("lips")]
    side = g.y > g.lip_line() if lower else g.y < g.lip_line()
    skin = g.falloff(g.idx("lips"), 0.08) * side * g.mouth_gate()
    w = np.maximum(band, skin) * (0.5 + 0.5 * lip_profile(g))
    return per_vertex(w, [0.0, 0.035 if lower else -0.035, 0.0])


def cheek_puff(g: Geometry) -> np.ndarray:
    """Both cheeks bulge outwards and forwards."""
    corner = g.points[g.left_corner()[0]]
    target = np.array([[0.27, corner[1] - 0.03], [-0.27, corner[1] - 0.03]])
    anchors = np.array([np.linalg.norm(g.points[:, :2] - t, axis=1).argmin() for t in target])
    w = g.falloff(anchors, 0.16) * g.mouth_gate()
    return np.stack([0.04 * np.sign(g.x) * w, np.zeros_like(w), -0.015 * w], 1)


def lid_field(g: Geometry, lid_motion: np.ndarray, side: str, radius: float = 0.07) -> np.ndarray:
    """Spread a motion of the upper-lid contour over the eyelid skin above it.

    Args:
        lid_motion: float [n, 3] displacement of each upper-lid contour vertex.
    """
    upper = g.idx(f"{side}_eye_upper")
    d = np.linalg.norm(g.points[:, None] - g.points[None, upper], axis=-1)  # [V, n]
    nearest = d.argmin(1)
    above = g.y <= g.y[upper][nearest] + 1e-9
    w = ramp(-d.min(1), -radius, 0.0) * above * g.eye_gate()
    w[g.idx(f"{side}_eye_lower")] = 0.0
    field = w[:, None] * lid_motion[nearest]
    field[upper] = lid_motion
    return field


def lower_lid_at(g: Geometry, side: str, x: np.ndarray) -> np.ndarray:
    """Points of the lower-lid contour interpolated at the given x: float [n, 3]."""
    lower = g.points[g.idx(f"{side}_eye_lower")]
    order = np.argsort(lower[:, 0])
    return np.stack([x, *(np.interp(x, lower[order, 0], lower[order, k]) for k in (1, 2))], 1)


def eye_blink_left(g: Geometry) -> np.ndarray:
    """The upper lid comes down onto the lower lid: the eyelid gap closes at 1."""
    upper = g.idx("left_eye_upper")
    motion = lower_lid_at(g, "left", g.x[upper]) - g.points[upper]
    return lid_field(g, motion, "left")


def eye_wide_left(g: Geometry) -> np.ndarray:
    """The upper lid lifts by a third of the eyelid gap."""
    upper = g.idx("left_eye_upper")
    motion = -0.35 * (lower_lid_at(g, "left", g.x[upper]) - g.points[upper]) * np.array([0.0, 1.0, 0.0])
    return lid_field(g, motion, "left")


def brow_weight(g: Geometry, anchors: np.ndarray, radius: float = 0.1) -> np.ndarray:
    """Around brow anchors, above the eyes' upper lids only."""
    lids = np.concatenate([g.idx("left_eye_upper"), g.idx("right_eye_upper")])
    below_brow = ramp(g.y, g.y[anchors].max(), g.y[lids].min())
    return g.falloff(anchors, radius) * (1.0 - below_brow) * g.eye_gate()


def half_brow(g: Geometry, side: str, inner: bool) -> np.ndarray:
    brow = g.idx(f"{side}_eyebrow")
    split = np.median(np.abs(g.x[brow]))
    return brow[(np.abs(g.x[brow]) <= split) == inner]


def brow_down_left(g: Geometry) -> np.ndarray:
    w = brow_weight(g, g.idx("left_eyebrow")) * g.left_side()
    return per_vertex(w, [-0.012, 0.03, 0.0])


def brow_outer_up_left(g: Geometry) -> np.ndarray:
    w = brow_weight(g, half_brow(g, "left", inner=False)) * g.left_side()
    return per_vertex(w, [0.0, -0.04, 0.0])


def brow_inner_up(g: Geometry) -> np.ndarray:
    anchors = np.concatenate([half_brow(g, "left", True), half_brow(g, "right", True)])
    return per_vertex(brow_weight(g, anchors), [0.0, -0.04, 0.0])


# (name, author, mirrored_name): a left shape with a mirrored right partner, or a bilateral one.
BLENDSHAPES = (
    ("jawOpen", jaw_open, None),
    ("jawForward", jaw_forward, None),
    ("jawLeft", jaw_left, "jawRight"),
    ("mouthFunnel", mouth_funnel, None),
    ("mouthPucker", mouth_pucker, None),
    ("mouthLeft", mouth_left, "mouthRight"),
    ("mouthSmileLeft", mouth_smile_left, "mouthSmileRight"),
    ("mouthFrownLeft", mouth_frown_left, "mouthFrownRight"),
    ("mouthStretchLeft", mouth_stretch_left, "mouthStretchRight"),
    ("mouthRollUpper", lambda g: mouth_roll(g, lower=False), None),
    ("mouthRollLower", lambda g: mouth_roll(g, lower=True), None),
    ("mouthPress", mouth_press, None),
    ("mouthUpperUp", lambda g: lip_raise(g, lower=False), None),
    ("mouthLowerDown", lambda g: lip_raise(g, lower=True), None),
    ("cheekPuff", cheek_puff, None),
    ("eyeBlinkLeft", eye_blink_left, "eyeBlinkRight"),
    ("eyeWideLeft", eye_wide_left, "eyeWideRight"),
    ("browInnerUp", brow_inner_up, None),
    ("browDownLeft", brow_down_left, "browDownRight"),
    ("browOuterUpLeft", brow_outer_up_left, "browOuterUpRight"),
)


def author_blendshapes(g: Geometry) -> tuple[list[str], np.ndarray]:
    """All blendshapes: (names, float32 [K, V, 3])."""
    names, fields = [], []
    for name, author, mirror_name in BLENDSHAPES:
        field = author(g)
        names.append(name)
        fields.append(field)
        if mirror_name is not None:
            names.append(mirror_name)
            fields.append(g.mirrored(field))
    return names, np.stack(fields).astype(np.float32)
