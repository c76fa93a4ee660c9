"""Lip sync measured against phone alignments of recorded speech.

Given a per-frame inner-lip gap track (in face heights), the identity's own neutral gap and the
aligned phones of the speech (:mod:`vividtalk.audio.phonemes`):

- **bilabial closure recall**: the share of /p b m/ with the lips closed (gap within
  ``margin`` of the neutral gap) in some frame within +-``slack`` frames of the phone;
- **chance closure**: the same windows placed at random moments of speech (frames inside
  non-silent phones). A mouth that closes often but at random scores high on both: the lift
  (recall minus chance) is what shows that closures follow the bilabials;
- **open-vowel share**: over all pairs (open vowel /aa ae ah ao aw ay/, close vowel
  /iy uw ih uh/) of one utterance, the share where the open vowel's mean gap is larger
  (ties count half);
- **mouth-energy correlation**: Pearson correlation of the gap with the frame log energy
  (:mod:`vividtalk.eval.lipsync`).
"""

from __future__ import annotations

import numpy as np

from ..audio.align import FPS
from ..audio.phonemes import BILABIALS, CLOSE_VOWELS, OPEN_VOWELS, SILENCE, Phone
from .lipsync import mouth_energy_sync

CLOSED_MARGIN = 0.005  # face heights above the neutral gap that still count as closed


def _span(phone: Phone, num_frames: int) -> tuple[int, int]:
    """[first, last] frame of a phone (the frame of its midpoint when it covers no frame centre)."""
    frames = phone.frames()
    if len(frames) == 0:
        mid = int(0.5 * (phone.start + phone.end) * FPS)
        frames = range(mid, mid + 1)
    return min(frames.start, num_frames - 1), min(frames.stop - 1, num_frames - 1)


def _closed_in(closed: np.ndarray, first: int, last: int, slack: int) -> bool:
    return bool(closed[max(0, first - slack): last + slack + 1].any())


def closure_scores(gap: np.ndarray, neutral: float, phones: list[Phone], margin: float = CLOSED_MARGIN,
                   slack: int = 2, draws: int = 200, seed: int = 0) -> dict:
    """Bilabial closure recall and its chance level.

    Args:
        gap: float [T] inner-lip gap per frame (face heights); neutral: the identity's neutral gap.
        phones: the aligned phones of the audio.
    Returns:
        ``bilabials`` (count), ``closure_recall`` and ``closure_chance`` (NaN without bilabials).
    """
    closed = np.asarray(gap) <= neutral + margin
    spans = [_span(p, len(gap)) for p in phones if p.name in BILABIALS]
    speech = np.array(sorted({f for p in phones if p.name != SILENCE for f in p.frames() if f < len(gap)}))
    if not spans or len(speech) == 0:
        return {"bilabials": len(spans), "closure_recall": float("nan"), "closure_chance": float("nan")}
    recall = np.mean([_closed_in(closed, a, b, slack) for a, b in spans])
    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(draws):  # the same windows, centred on random speech frames
        for a, b in spans:
            start = int(rng.choice(speech)) - (b - a) // 2
            hits.append(_closed_in(closed, start, start + b - a, slack))
    return {"bilabials": len(spans), "closure_recall": float(recall), "closure_chance": float(np.mean(hits))}


def open_vowel_share(gap: np.ndarray, phones: list[Phone]) -> dict:
    """Share of (open, close) vowel pairs where the open vowel's mean gap is larger."""
    def means(names):
        out = []
        for p in phones:
            if p.name in names:
                a, b = _span(p, len(gap))
                out.append(float(np.mean(gap[a: b + 1])))
        return np.array(out)

    open_, close = means(OPEN_VOWELS), means(CLOSE_VOWELS)
    if len(open_) == 0 or len(close) == 0:
        return {"vowel_pairs": 0, "open_vowel_share": float("nan")}
    diff = open_[:, None] - close[None, :]
    share = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    return {"vowel_pairs": int(diff.size), "open_vowel_share": float(share)}


def speech_sync_scores(gap: np.ndarray, neutral: float, phones: list[Phone], wav: np.ndarray) -> dict:
    """All the measures of this module for one utterance (see the module docstring)."""
    sync = mouth_energy_sync(np.asarray(gap, np.float64), wav)
    return {**closure_scores(gap, neutral, phones), **open_vowel_share(gap, phones),
            "mouth_energy_corr": sync["mouth_energy_corr"]}


def pooled(per_utterance: list[dict]) -> dict:
    """Scores over several utterances: recall and chance weighted by bilabial count, the vowel
    share by pair count, the correlation averaged."""
    def weighted(key, weight):
        rows = [(r[key], r[weight]) for r in per_utterance if r[weight] and np.isfinite(r[key])]
        total = sum(w for _, w in rows)
        return float(sum(v * w for v, w in rows) / total) if total else float("nan")

    corr = [r["mouth_energy_corr"] for r in per_utterance if np.isfinite(r["mouth_energy_corr"])]
    return {"utterances": len(per_utterance), "bilabials": sum(r["bilabials"] for r in per_utterance),
            "closure_recall": weighted("closure_recall", "bilabials"),
            "closure_chance": weighted("closure_chance", "bilabials"),
            "open_vowel_share": weighted("open_vowel_share", "vowel_pairs"),
            "mouth_energy_corr": float(np.mean(corr)) if corr else float("nan")}
