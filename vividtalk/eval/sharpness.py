"""CPBD: the no-reference sharpness of Narvekar & Karam (2011), "cumulative probability of blur
detection", as talking-head papers report it for their frames.

Edges are found by Canny; at each mostly vertical edge pixel the Marziliano edge width is
measured along its row (from the local extremum on one side to the one on the other). In each
64x64 block with enough edges the just-noticeable-blur width is 5 px (contrast <= 50) or 3 px,
and an edge of width w is perceived blurred with probability ``1 - exp(-(w / w_JNB)^3.6)``.
CPBD is the share of edges whose probability stays at or below 63 %: near 1 for sharp images,
falling as they blur.
"""

from __future__ import annotations

import numpy as np

BETA, P_JNB, BLOCK, EDGE_SHARE = 3.6, 0.63, 64, 0.002


def _edge_width(row: np.ndarray, c: int, rising: bool) -> int:
    """Pixels between the local extrema on both sides of column ``c`` of a row profile."""
    sign = 1 if rising else -1
    left = c
    while left > 0 and sign * (row[left - 1] - row[left]) < 0:
        left -= 1
    right = c
    while right < len(row) - 1 and sign * (row[right + 1] - row[right]) > 0:
        right += 1
    return right - left


def cpbd(image: np.ndarray) -> float:
    """CPBD of an image: RGB uint8 [H, W, 3] or gray [H, W]; NaN when it has no edge block."""
    from scipy import ndimage
    from skimage.feature import canny

    gray = np.asarray(image, np.float64)
    if gray.ndim == 3:
        gray = gray @ np.array([0.299, 0.587, 0.114])
    edges = canny(gray / 255.0)
    gx, gy = ndimage.sobel(gray, axis=1), ndimage.sobel(gray, axis=0)
    edges &= np.abs(gx) >= np.abs(gy)  # widths are measured along rows
    probabilities = []
    h, w = gray.shape
    for y0 in range(0, h - BLOCK + 1, BLOCK):
        for x0 in range(0, w - BLOCK + 1, BLOCK):
            block = edges[y0 : y0 + BLOCK, x0 : x0 + BLOCK]
            if block.sum() <= EDGE_SHARE * BLOCK * BLOCK:
                continue
            patch = gray[y0 : y0 + BLOCK, x0 : x0 + BLOCK]
            jnb = 5.0 if patch.max() - patch.min() <= 50 else 3.0
            for r, c in zip(*np.nonzero(block)):
                width = _edge_width(gray[y0 + r], x0 + c, gx[y0 + r, x0 + c] > 0)
                probabilities.append(1.0 - np.exp(-((width / jnb) ** BETA)))
    if not probabilities:
        return float("nan")
    return float(np.mean(np.array(probabilities) <= P_JNB))


def video_cpbd(frames: np.ndarray, stride: int = 5) -> float:
    """Mean CPBD over every ``stride``-th frame of [T, H, W, 3] (NaN frames skipped)."""
    values = [cpbd(f) for f in frames[::stride]]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
