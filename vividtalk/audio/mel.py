"""Mel scale and triangular mel filterbank (numpy; torchaudio is not a dependency).

Two mel scales are provided: ``"htk"`` (``2595 log10(1 + f / 700)``) and ``"slaney"``
(linear below 1 kHz, logarithmic above; the librosa / Whisper default). The default is
Slaney because with ``n_fft=400`` at 16 kHz (40 Hz bins) the HTK scale packs the lowest of 80
filters closer than one FFT bin, leaving them nearly empty.
"""

from __future__ import annotations

import numpy as np

# Slaney scale constants: 3 mels per 200 Hz below 1 kHz, 27 mels per factor 6.4 above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL  # 15 mels
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(freq, scale: str = "slaney") -> np.ndarray:
    """Frequencies in Hz (float array of any shape) -> mels (float64, same shape)."""
    freq = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    if scale == "slaney":
        linear = freq / _SLANEY_HZ_PER_MEL
        # The floor only keeps log() quiet for the branch np.where discards (f < 1 kHz).
        log_ratio = np.log(np.maximum(freq, 1e-10) / _SLANEY_BREAK_HZ)
        log_part = _SLANEY_BREAK_MEL + log_ratio / _SLANEY_LOG_STEP
        return np.where(freq >= _SLANEY_BREAK_HZ, log_part, linear)
    raise ValueError(f"unknown mel scale {scale!r}: use 'slaney' or 'htk'")


def mel_to_hz(mel, scale: str = "slaney") -> np.ndarray:
    """Mels (float array of any shape) -> frequencies in Hz (float64, same shape)."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "slaney":
        linear = mel * _SLANEY_HZ_PER_MEL
        log_part = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
        return np.where(mel >= _SLANEY_BREAK_MEL, log_part, linear)
    raise ValueError(f"unknown mel scale {scale!r}: use 'slaney' or 'htk'")


def mel_band_edges(
    n_mels: int,
    sample_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
) -> np.ndarray:
    """Hz of the ``n_mels + 2`` points equally spaced in mels from ``f_min`` to ``f_max``.

    Filter ``m`` rises from edge ``m`` to its centre, edge ``m + 1``, and falls to edge ``m + 2``.

    Returns:
        np.ndarray float64 [n_mels + 2], Hz, increasing.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if n_mels < 1 or not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need n_mels >= 1 and 0 <= f_min < f_max <= sample_rate / 2, got n_mels={n_mels}, "
            f"f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}"
        )
    mels = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    return mel_to_hz(mels, scale)


def mel_center_frequencies(n_mels: int, sample_rate: int = 16000, f_min: float = 0.0,
                           f_max: float | None = None, scale: str = "slaney") -> np.ndarray:
    """Centre frequency of each mel filter: np.ndarray float64 [n_mels], Hz."""
    return mel_band_edges(n_mels, sample_rate, f_min, f_max, scale)[1:-1]


def mel_filterbank(
    n_mels: int = 80,
    n_fft: int = 400,
    sample_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
    norm: str | None = None,
    snap_to_bins: bool = False,
) -> np.ndarray:
    """Triangular mel filters with peak 1 at their centre frequency, or with ``norm="slaney"``
    of equal area (each scaled by ``2 / (f_high - f_low)``: librosa's and Whisper's filters).
    ``snap_to_bins``: the HTK-toolkit / python_speech_features variant (SyncNet's MFCCs), edges
    rounded down to FFT bins ``floor((n_fft + 1) f / sample_rate)`` and the triangles drawn
    between those bins.

    ``mel = filterbank @ power`` maps a one-sided power spectrum [n_fft // 2 + 1] (bin ``k``
    at ``k * sample_rate / n_fft`` Hz) to ``n_mels`` band energies.

    Returns:
        np.ndarray float32 [n_mels, n_fft // 2 + 1]: weights in [0, 1] (no norm).
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"unknown filterbank norm {norm!r}: use None or 'slaney'")
    edges = mel_band_edges(n_mels, sample_rate, f_min, f_max, scale)  # [n_mels + 2]
    if snap_to_bins:
        return _snapped_filterbank(np.floor((n_fft + 1) * edges / sample_rate), n_fft // 2 + 1)
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)  # [F], Hz
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [n_mels, 1]
    rising = (freqs[None, :] - lo) / (centre - lo)  # [n_mels, F]
    falling = (hi - freqs[None, :]) / (hi - centre)
    bank = np.clip(np.minimum(rising, falling), 0.0, None)
    if norm == "slaney":
        bank = bank * (2.0 / (hi - lo))
    return bank.astype(np.float32)


def _snapped_filterbank(bins: np.ndarray, num_bins: int) -> np.ndarray:
    """Triangles on integer FFT bins as python_speech_features draws them: filter m rises over
    [lo, centre) and falls over [centre, hi), each side with slope 1 / max(width, 1) (a filter
    whose centre and upper edge share a bin stays empty there, as in that package).
    bins: float [n_mels + 2]; returns float32 [n_mels, num_bins]."""
    k = np.arange(num_bins)[None, :]
    lo, centre, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    rising = np.where(k < centre, (k - lo) / np.maximum(centre - lo, 1), np.inf)
    falling = np.where(k >= centre, (hi - k) / np.maximum(hi - centre, 1), np.inf)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)
