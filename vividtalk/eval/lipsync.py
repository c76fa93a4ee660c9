"""An offline lip-sync proxy that needs no weights: the tracked mouth opening of a video
against the speech energy envelope of its audio.

Speech is loud when the mouth is open (vowels) and quiet when it closes (pauses, /p b m/), so
for a synchronised talking head the two per-frame signals correlate, best at zero offset.
The score is their Pearson correlation per offset over -15..+15 frames: the correlation at
offset 0, the best one, and where it falls.
"""

from __future__ import annotations

import numpy as np

from ..audio.align import frame_levels_db

# MediaPipe Face Mesh points: inner upper / lower lip, forehead top and chin.
_UPPER_LIP, _LOWER_LIP, _TOP, _CHIN = 13, 14, 10, 152


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face height, float [T], from MediaPipe landmarks [T, 468+, 2+] (NaN rows stay NaN)."""
    gap = np.linalg.norm(landmarks[:, _UPPER_LIP, :2] - landmarks[:, _LOWER_LIP, :2], axis=1)
    height = np.linalg.norm(landmarks[:, _TOP, :2] - landmarks[:, _CHIN, :2], axis=1)
    return gap / np.maximum(height, 1e-6)


def energy_envelope(wav: np.ndarray, frames: int) -> np.ndarray:
    """Log RMS energy (dB) of each 25 fps frame's 640 samples, float [frames] (silence floored at -80 dB)."""
    return frame_levels_db(wav, frames, floor_db=-80.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def offset_correlations(mouth: np.ndarray, energy: np.ndarray, max_offset: int = 15) -> np.ndarray:
    """Correlation of mouth[t] with energy[t + k] for k = -K..K: float [2K + 1] (entry j: k = j - K)."""
    t = min(len(mouth), len(energy))
    out = []
    for k in range(-max_offset, max_offset + 1):
        lo, hi = max(0, -k), min(t, t - k)
        out.append(_correlation(mouth[lo:hi], energy[lo + k : hi + k]))
    return np.array(out)


def mouth_energy_sync(mouth: np.ndarray, wav: np.ndarray, max_offset: int = 15) -> dict[str, float]:
    """The proxy's scores for a mouth-opening track [T] and its 16 kHz audio.

    Returns:
        dict with ``mouth_energy_corr`` (offset 0), ``mouth_energy_best_corr`` and
        ``mouth_energy_offset`` (k of the best: the audio energy at t + k matches the mouth at t).
    """
    corr = offset_correlations(mouth, energy_envelope(wav, len(mouth)), max_offset)
    if np.all(np.isnan(corr)):
        return {"mouth_energy_corr": float("nan"), "mouth_energy_best_corr": float("nan"), "mouth_energy_offset": 0}
    best = int(np.nanargmax(corr))
    return {"mouth_energy_corr": float(corr[max_offset]), "mouth_energy_best_corr": float(corr[best]),
            "mouth_energy_offset": best - max_offset}
