"""FOMM-style square face crops (fixed per clip, smoothed over time) and the paste-back.

A clip's crop box is one square in source-image pixels: the tracked face's bounding box per
frame, smoothed over time, united over the clip and enlarged by a margin, so that the face
moves inside a still frame (as in first-order-model's ``crop-video``). The square is turned
by the face's roll (its eye line, one angle per clip), so every crop shows an upright face.
Every crop is resampled to ``out_size`` x ``out_size`` (256 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d


@dataclass(frozen=True)
class CropBox:
    """A square window in source pixels: side ``size``, top-left corner (x0, y0) before it is
    turned by ``angle`` radians about its centre. The angle is the face's roll (its eye line),
    so the crop shows the face upright; 0 is an axis-aligned box."""

    x0: float
    y0: float
    size: float
    angle: float = 0.0

    @classmethod
    def from_list(cls, values) -> "CropBox":
        """From :meth:`to_list` (three numbers, written before crops were turned: angle 0)."""
        return cls(*(float(v) for v in values))

    def affine(self, out_size: int = 256) -> np.ndarray:
        """float64 [2, 3] affine map from source pixels to crop pixels:
        ``crop = s R(-angle) (p - centre) + out_size / 2``."""
        s = out_size / self.size
        c, n = np.cos(self.angle), np.sin(self.angle)
        a = s * np.array([[c, n], [-n, c]])
        centre = np.array([self.x0 + self.size / 2, self.y0 + self.size / 2])
        return np.concatenate([a, (out_size / 2 - a @ centre)[:, None]], axis=1)

    def to_crop(self, points: np.ndarray, out_size: int = 256) -> np.ndarray:
        """Map source-image points [..., 2 or 3] into crop pixels (depth scales with x, y)."""
        return _apply(self.affine(out_size), points, out_size / self.size)

    def to_image(self, points: np.ndarray, out_size: int = 256) -> np.ndarray:
        """Inverse of :meth:`to_crop`."""
        return _apply(cv2.invertAffineTransform(self.affine(out_size)), points, self.size / out_size)

    def to_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.size), float(self.angle)]


def _apply(mat: np.ndarray, points: np.ndarray, scale: float) -> np.ndarray:
    """float32 copy of points [..., 2 or 3] with (x, y) mapped by the 2x3 ``mat`` and depth scaled."""
    out = np.array(points, dtype=np.float32, copy=True)
    xy = np.asarray(points, dtype=np.float64)[..., :2]
    out[..., :2] = xy @ mat[:, :2].T + mat[:, 2]
    if out.shape[-1] > 2:
        out[..., 2:] *= scale
    return out


# Eye corners (subject's right eye first: it is on the image's left) of the landmark layouts.
_EYE_CORNERS = {468: ((33, 133), (362, 263)), 68: ((36, 39), (42, 45))}


def eye_line_angle(landmarks: np.ndarray) -> float:
    """The face's roll in radians: the angle of the line from the subject's right eye centre to
    the left eye centre, in image coordinates (y down), averaged over frames on the circle.

    Args:
        landmarks: float [T, N, 2+] or [N, 2+]: MediaPipe (N >= 468) or 68-point layouts;
            other layouts give 0. NaN rows (lost frames) are skipped.
    """
    xy = np.asarray(landmarks, dtype=np.float64)
    xy = xy[None] if xy.ndim == 2 else xy
    layout = 468 if xy.shape[1] >= 468 else xy.shape[1]
    if layout not in _EYE_CORNERS:
        return 0.0
    right, left = (xy[:, list(idx), :2].mean(1) for idx in _EYE_CORNERS[layout])  # [T, 2]
    d = left - right
    ok = np.isfinite(d).all(1)
    if not ok.any():
        return 0.0
    angles = np.arctan2(d[ok, 1], d[ok, 0])
    return float(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()))


def _rotate(points: np.ndarray, angle: float, pivot: np.ndarray) -> np.ndarray:
    """Rotate points [..., 2] by ``angle`` radians about ``pivot`` [2] (image coordinates)."""
    c, n = np.cos(angle), np.sin(angle)
    return (points - pivot) @ np.array([[c, -n], [n, c]]).T + pivot


def landmark_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame landmark bounding boxes.

    Args:
        landmarks: float [T, N, 2+] pixel coordinates, NaN rows for lost frames.
    Returns:
        float64 [T, 4] (x0, y0, x1, y1), NaN for lost frames.
    """
    xy = np.asarray(landmarks, dtype=np.float64)[..., :2]
    lost = np.isnan(xy).any(axis=(1, 2))
    boxes = np.full((len(xy), 4), np.nan)
    if (~lost).any():
        boxes[~lost, :2] = xy[~lost].min(axis=1)
        boxes[~lost, 2:] = xy[~lost].max(axis=1)
    return boxes


def smooth_boxes(boxes: np.ndarray, window: int = 9) -> np.ndarray:
    """Fill lost frames by linear interpolation, then a moving average over ``window`` frames.

    Args:
        boxes: float [T, 4] with NaN rows for lost frames (at least one valid row).
    Returns:
        float64 [T, 4].
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    valid = ~np.isnan(boxes).any(axis=1)
    if not valid.any():
        raise ValueError("no frame of the clip has a face to crop around")
    t = np.arange(len(boxes))
    filled = np.stack([np.interp(t, t[valid], boxes[valid, k]) for k in range(4)], axis=1)
    return uniform_filter1d(filled, size=max(1, min(window, len(boxes))), axis=0, mode="nearest")


def clip_crop_box(
    landmarks: np.ndarray,
    scale: float = 1.6,
    shift_y: float = -0.06,
    window: int = 9,
    upright: bool = True,
) -> CropBox:
    """The fixed crop box of a clip (or of a single image with T = 1).

    Args:
        landmarks: float [T, N, 2+] (or [N, 2+]) tracked points in source pixels.
        scale: box side as a multiple of the face's extent (hair, chin and some neck fit).
        shift_y: shift of the centre towards the chin, as a fraction of the side (negative =
            towards the forehead, since the landmarks stop there).
        window: temporal smoothing window in frames.
        upright: turn the box by the face's roll (:func:`eye_line_angle`, one angle per clip)
            so the crop shows the face upright; False: an axis-aligned box.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim == 2:
        landmarks = landmarks[None]
    angle = eye_line_angle(landmarks) if upright else 0.0
    pivot = np.nanmean(landmarks[..., :2].reshape(-1, 2), axis=0) if angle else np.zeros(2)
    level = landmarks.copy()
    level[..., :2] = _rotate(landmarks[..., :2], -angle, pivot)  # the face made upright
    boxes = smooth_boxes(landmark_boxes(level), window)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    side = max(x1 - x0, y1 - y0) * scale
    centre = _rotate(np.array([(x0 + x1) / 2, (y0 + y1) / 2 + shift_y * side]), angle, pivot)
    return CropBox(centre[0] - side / 2, centre[1] - side / 2, side, angle)


def crop_image(image: np.ndarray, box: CropBox, out_size: int = 256) -> np.ndarray:
    """Resample the (possibly turned) box into an ``out_size`` square; outside the image the
    image is mirrored (a face at the border gets a plausible surround, not a smeared stripe).

    Args:
        image: [H, W, C] uint8 (or float) source frame.
    Returns:
        [out_size, out_size, C], same dtype.
    """
    interp = cv2.INTER_AREA if box.size > out_size else cv2.INTER_LINEAR
    return cv2.warpAffine(
        image, box.affine(out_size), (out_size, out_size), flags=interp, borderMode=cv2.BORDER_REFLECT_101
    )


def feather_mask(out_size: int, feather: float) -> np.ndarray:
    """float32 [out_size, out_size]: 1 in the middle, ramping to 0 over ``feather * out_size``
    pixels at the border, so a pasted crop leaves no seam."""
    ramp = max(1.0, feather * out_size)
    d = np.arange(out_size, dtype=np.float32) + 0.5
    edge = np.minimum(d, out_size - d)
    w = np.clip(edge / ramp, 0.0, 1.0)
    return np.minimum(w[:, None], w[None, :])


def paste_back(
    crop: np.ndarray, image: np.ndarray, box: CropBox, feather: float = 0.08
) -> np.ndarray:
    """Inverse of :func:`crop_image`: put a (generated) crop back into the full frame (turned
    back by the box's angle, with a feathered border).

    Args:
        crop: [S, S, C] uint8 crop (any S).
        image: [H, W, C] uint8 original frame (not modified).
        box: the crop's box in ``image``.
        feather: width of the blending ramp at the crop border, as a fraction of S.
    Returns:
        [H, W, C] uint8 frame.
    """
    h, w = image.shape[:2]
    s = crop.shape[0]
    inverse = cv2.invertAffineTransform(box.affine(s))
    warped = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(feather_mask(s, feather), inverse, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = image.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
