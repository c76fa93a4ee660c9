"""Head-motion metrics: how much the head moves, and whether it moves with the speech.

- Diversity: the temporal standard deviation of pitch / yaw / roll (degrees, mean over the
  axes) and the mean angular speed. A still head scores 0.
- Beat alignment (BAS, after Bailando / SadTalker): kinematic beats are the local minima of
  the head's angular speed (where a nod or turn ends); audio beats are the peaks of the speech
  onset strength (rises of the log energy). BAS is the mean over kinematic beats of
  ``exp(-d^2 / (2 sigma^2))``, d the distance in frames to the nearest audio beat: 1 when every
  head beat falls on an audio beat, near 0 when none is close.
"""

from __future__ import annotations

import numpy as np

from .lipsync import energy_envelope


def pose_diversity(poses: np.ndarray, fps: int = 25) -> dict[str, float]:
    """``head_motion_std_deg`` and ``head_speed_deg_per_s`` of poses [T, 7+] (angles in radians first)."""
    angles = np.degrees(np.asarray(poses, np.float64)[:, :3])
    speed = np.linalg.norm(np.diff(angles, axis=0), axis=1) * fps if len(angles) > 1 else np.zeros(1)
    return {"head_motion_std_deg": float(angles.std(0).mean()), "head_speed_deg_per_s": float(speed.mean())}


def _peaks(x: np.ndarray, minimum: bool = False, min_gap: int = 3) -> np.ndarray:
    """Indices of strict local maxima (minima) at least ``min_gap`` apart (the larger kept)."""
    y = -x if minimum else x
    idx = np.nonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]))[0] + 1
    kept: list[int] = []
    for i in idx[np.argsort(-y[idx])]:
        if all(abs(i - k) >= min_gap for k in kept):
            kept.append(int(i))
    return np.array(sorted(kept), dtype=int)


def audio_beats(wav: np.ndarray, frames: int) -> np.ndarray:
    """Frames of speech onsets: peaks of the positive log-energy rise above its mean + std."""
    energy = energy_envelope(wav, frames)
    rise = np.maximum(np.diff(energy, prepend=energy[:1]), 0.0)
    rise = np.convolve(rise, np.ones(3) / 3, mode="same")
    peaks = _peaks(rise)
    return peaks[rise[peaks] > rise.mean() + rise.std()]


def kinematic_beats(poses: np.ndarray) -> np.ndarray:
    """Frames where the head's angular speed has a local minimum (a movement ends)."""
    angles = np.asarray(poses, np.float64)[:, :3]
    speed = np.linalg.norm(np.diff(angles, axis=0), axis=1)
    speed = np.convolve(speed, np.ones(3) / 3, mode="same")
    return _peaks(speed, minimum=True) + 1


def beat_alignment(motion_beats: np.ndarray, sound_beats: np.ndarray, sigma: float = 2.0) -> float:
    """BAS of two beat sequences (frame indices); NaN when either is empty."""
    if len(motion_beats) == 0 or len(sound_beats) == 0:
        return float("nan")
    d = np.abs(np.asarray(motion_beats)[:, None] - np.asarray(sound_beats)[None]).min(1)
    return float(np.exp(-(d**2) / (2 * sigma**2)).mean())

