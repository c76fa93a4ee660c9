"""Acoustic augmentation of synthetic speech: the recording conditions users have.

Speed perturbation (resampling, Kaldi style: tempo and pitch change together, and the phoneme
times are rescaled exactly), room reverberation (a synthetic impulse response: direct sound,
sparse early reflections, an exponentially decaying diffuse tail of a random RT60), background
noise at 5-30 dB SNR (white, pink or brown, with mains hum at times), band-limiting (the
300-3400 Hz telephone band, or a low-pass), and loudness. Reverberation and filtering are
causal and keep the direct sound at t = 0, so the phoneme timings stay valid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from vividtalk.audio.align import SAMPLE_RATE

from .speech import Utterance


@dataclasses.dataclass(frozen=True)
class AudioAugment:
    """Which augmentations a clip gets, each drawn independently.

    Attributes:
        probability: share of clips augmented at all (the rest stay clean).
        speed: range of the speed factor (> 1 faster), applied to every augmented clip.
        reverb, noise, band_limit: probabilities of each; snr_db: noise level range;
        rt60: reverberation time range (s); loudness_db: RMS level range (dBFS).
    """

    probability: float = 0.7
    speed: tuple[float, float] = (0.9, 1.1)
    reverb: float = 0.4
    rt60: tuple[float, float] = (0.15, 0.8)
    noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    band_limit: float = 0.2
    loudness_db: tuple[float, float] = (-35.0, -15.0)


def resample_by(audio: np.ndarray, ratio: float, limit: int = 1000) -> np.ndarray:
    """Polyphase resampling to ``ratio`` times as many samples (the ratio as the nearest fraction
    with a denominator up to ``limit``): float64 [round(N * ratio)]."""
    from fractions import Fraction

    f = Fraction(ratio).limit_denominator(limit)
    return resample_poly(np.asarray(audio, np.float64), f.numerator, f.denominator)


def perturb_speed(utterance: Utterance, factor: float) -> Utterance:
    """Play ``factor`` times faster (resampled: the pitch rises by the same factor); phoneme
    times divided by ``factor``."""
    audio = resample_by(utterance.audio, 1.0 / factor)
    scale = len(audio) / max(len(utterance.audio), 1)
    phonemes = [(p, s * scale, e * scale) for p, s, e in utterance.phonemes]
    phonemes[-1] = (phonemes[-1][0], phonemes[-1][1], len(audio) / SAMPLE_RATE)
    return dataclasses.replace(utterance, audio=audio.astype(np.float32), phonemes=phonemes)


def room_impulse(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response [M]: 1 at t = 0, early reflections over the first
    5-40 ms, a diffuse noise tail decaying by 60 dB over ``rt60`` seconds."""
    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * float(rng.uniform(0.05, 0.3))
    ir[: int(0.005 * sample_rate)] = 0.0  # the tail starts after the direct sound
    for _ in range(int(rng.integers(3, 9))):
        ir[int(rng.uniform(0.005, 0.04) * sample_rate)] += float(rng.uniform(-0.5, 0.5))
    ir[0] = 1.0
    return ir


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise [n] with a 1/f^k spectrum: white (k = 0), pink (1), brown (2)."""
    k = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] /= f[1:] ** (k / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / max(np.sqrt(np.mean(x ** 2)), 1e-12)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Background noise at ``snr_db`` below the speech power (speech: the frames above -40 dB of the peak)."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames ** 2, axis=1)
    speech = power[power > power.max() * 1e-4] if power.max() > 0 else power
    noise = coloured_noise(rng, len(audio), str(rng.choice(["white", "pink", "brown"])))
    if rng.random() < 0.2:  # mains hum with harmonics
        t = np.arange(len(audio)) / SAMPLE_RATE
        f0 = float(rng.choice([50.0, 60.0]))
        noise = 0.5 * noise + sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
        noise /= np.sqrt(np.mean(noise ** 2))
    return audio + noise * np.sqrt(np.mean(speech) / 10 ** (snr_db / 10))


def band_limit(audio: np.ndarray, low_hz: float | None, high_hz: float) -> np.ndarray:
    """4th-order Butterworth band-pass (or low-pass when ``low_hz`` is None)."""
    if low_hz is None:
        sos = butter(4, high_hz, "lowpass", fs=SAMPLE_RATE, output="sos")
    else:
        sos = butter(4, [low_hz, high_hz], "bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, audio)


def augment_utterance(utterance: Utterance, rng: np.random.Generator, cfg: AudioAugment) -> Utterance:
    """The utterance as recorded in a random room on a random microphone (or unchanged, with
    probability 1 - ``cfg.probability``). The result stays in [-1, 1]."""
    if rng.random() >= cfg.probability:
        return utterance
    utterance = perturb_speed(utterance, float(rng.uniform(*cfg.speed)))
    audio = utterance.audio.astype(np.float64)
    if rng.random() < cfg.reverb:
        audio = fftconvolve(audio, room_impulse(rng, float(rng.uniform(*cfg.rt60))))[: len(audio)]
    if rng.random() < cfg.band_limit:
        audio = band_limit(audio, 300.0, 3400.0) if rng.random() < 0.6 else band_limit(
            audio, None, float(rng.uniform(2500.0, 5000.0)))
    if rng.random() < cfg.noise:
        audio = add_noise(audio, rng, float(rng.uniform(*cfg.snr_db)))
    rms = np.sqrt(np.mean(audio ** 2))
    audio *= 10 ** (float(rng.uniform(*cfg.loudness_db)) / 20) / max(rms, 1e-9)
    audio /= max(1.0, float(np.abs(audio).max()) / 0.99)  # no clipping: scale down instead
    return dataclasses.replace(utterance, audio=audio.astype(np.float32))
