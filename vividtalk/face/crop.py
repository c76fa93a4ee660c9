"""FOMM-style square face crops (fixed per clip, smoothed over time) and the paste-back.

A clip's crop box is one square in source-image pixels: the tracked face's bounding box per
frame, smoothed over time, united over the clip and enlarged by a margin, so that the face
moves inside a still frame (as in first-order-model's ``crop-video``). Every crop is
resampled to ``out_size`` x ``out_size`` (256 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d


@dataclass(frozen=True)
class CropBox:
    """A square ``size`` x ``size`` window with top-left corner (x0, y0), in source pixels."""

    x0: float
    y0: float
    size: float

    def affine(self, out_size: int = 256) -> np.ndarray:
        """float64 [2, 3] affine map from source pixels to crop pixels."""
        s = out_size / self.size
        return np.array([[s, 0.0, -self.x0 * s], [0.0, s, -self.y0 * s]])

    def to_crop(self, points: np.ndarray, out_size: int = 256) -> np.ndarray:
        """Map source-image points [..., 2 or 3] into crop pixels (depth scales with x, y)."""
        s = out_size / self.size
        out = np.array(points, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.x0) * s
        out[..., 1] = (out[..., 1] - self.y0) * s
        if out.shape[-1] > 2:
            out[..., 2:] *= s
        return out

    def to_image(self, points: np.ndarray, out_size: int = 256) -> np.ndarray:
        """Inverse of :meth:`to_crop`."""
        s = self.size / out_size
        out = np.array(points, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] * s + self.x0
        out[..., 1] = out[..., 1] * s + self.y0
        if out.shape[-1] > 2:
            out[..., 2:] *= s
        return out

    def to_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.size)]


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
) -> CropBox:
    """The fixed crop box of a clip (or of a single image with T = 1).

    Args:
        landmarks: float [T, N, 2+] (or [N, 2+]) tracked points in source pixels.
        scale: box side as a multiple of the face's extent (hair, chin and some neck fit).
        shift_y: vertical shift of the centre, as a fraction of the side (negative = up,
            since the landmarks stop at the forehead).
        window: temporal smoothing window in frames.
    """
    landmarks = np.asarray(landmarks)
    if landmarks.ndim == 2:
        landmarks = landmarks[None]
    boxes = smooth_boxes(landmark_boxes(landmarks), window)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    side = max(x1 - x0, y1 - y0) * scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + shift_y * side
    return CropBox(cx - side / 2, cy - side / 2, side)


def crop_image(image: np.ndarray, box: CropBox, out_size: int = 256) -> np.ndarray:
    """Resample the box into an ``out_size`` square; outside the image the border repeats.

    Args:
        image: [H, W, C] uint8 (or float) source frame.
    Returns:
        [out_size, out_size, C], same dtype.
    """
    interp = cv2.INTER_AREA if box.size > out_size else cv2.INTER_LINEAR
    return cv2.warpAffine(
        image, box.affine(out_size), (out_size, out_size), flags=interp, borderMode=cv2.BORDER_REPLICATE
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
    """Inverse of :func:`crop_image`: put a (generated) crop back into the full frame.

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
