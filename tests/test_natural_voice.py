"""The natural voice of the synthetic corpus (Piper's joe, its own durations) and the acoustic
augmentation: timings checked against forced alignment, augmentations measured."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_prep.synth.acoustics import (
    AudioAugment,
    add_noise,
    augment_utterance,
    band_limit,
    perturb_speed,
    room_impulse,
)
from data_prep.synth.piper import VOICE, synthesize_piper
from data_prep.synth.speech import SILENCE, synthesize
from vividtalk.audio.phonemes import SILENCE as PS_SILENCE, align_phones

TEXT = "Bob moved the big maps, and Mary painted the papers."


@pytest.fixture(scope="module")
def piper():
    return synthesize_piper(TEXT)


def _f0(audio: np.ndarray, lo: float = 70.0, hi: float = 300.0) -> float:
    """Median autocorrelation pitch (Hz) of the loud 40 ms frames."""
    out = []
    for s in range(0, len(audio) - 640, 640):
        x = audio[s: s + 640] - audio[s: s + 640].mean()
        if np.sqrt(np.mean(x ** 2)) < 0.05 * np.abs(audio).max():
            continue
        ac = np.correlate(x, x, "full")[639:]
        lags = np.arange(int(16000 / hi), int(16000 / lo))
        out.append(16000 / lags[np.argmax(ac[lags])])
    return float(np.median(out))


def test_piper_phoneme_timings_match_forced_alignment(piper):
    assert piper.voice == VOICE and piper.phonemes[0][1] == 0.0
    assert piper.phonemes[-1][2] == pytest.approx(len(piper.audio) / 16000)
    assert all(a[2] == pytest.approx(b[1]) for a, b in zip(piper.phonemes, piper.phonemes[1:]))
    aligned = [p for p in align_phones(piper.audio, TEXT) if p.name != PS_SILENCE]
    ours = [p for p in piper.phonemes if p[0] != SILENCE]
    assert len(aligned) == len(ours)  # the same phonemes (this sentence has no dialect variants)
    starts = np.array([a.start - s for a, (_, s, _) in zip(aligned, ours)])
    assert np.median(np.abs(starts)) < 0.025 and abs(np.mean(starts)) < 0.025
    bilabial = [i for i, (n, _, _) in enumerate(ours) if n.lstrip("',") in ("b", "m", "p")]
    assert len(bilabial) == 10 and np.abs(starts[bilabial]).max() < 0.09  # under 2.5 video frames


def test_piper_is_deterministic_and_its_pitch_moves_without_changing_the_timing(piper):
    np.testing.assert_array_equal(synthesize_piper(TEXT).audio, piper.audio)
    high = synthesize_piper(TEXT, pitch=1.15)
    assert high.duration == pytest.approx(piper.duration, rel=0.08)  # durations are whole frames: rounding
    assert _f0(high.audio) / _f0(piper.audio) == pytest.approx(1.15, rel=0.06)
    fast = synthesize_piper(TEXT, speed=1.25)
    assert fast.duration == pytest.approx(piper.duration / 1.25, rel=0.1)
    with pytest.raises(ValueError):
        synthesize_piper(TEXT, pitch=2.0)


def test_speed_perturbation_rescales_audio_and_timings():
    u = synthesize("Pick the blue maps", voice="en-us")
    fast = perturb_speed(u, 1.1)
    assert len(fast.audio) == pytest.approx(len(u.audio) / 1.1, abs=2)
    for (n0, s0, e0), (n1, s1, e1) in zip(u.phonemes, fast.phonemes):
        assert n0 == n1 and s1 == pytest.approx(s0 / 1.1, abs=1e-3) and e1 == pytest.approx(e0 / 1.1, abs=1e-3)
    assert fast.phonemes[-1][2] == pytest.approx(len(fast.audio) / 16000)


def test_noise_is_added_at_the_requested_snr():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 200 * t) * (t < 1.5)
    noisy = add_noise(speech, rng, snr_db=10.0)
    loud = np.mean(speech[:24000] ** 2)
    noise_power = np.mean((noisy - speech) ** 2)
    assert 10 * np.log10(loud / noise_power) == pytest.approx(10.0, abs=0.3)


def test_band_limit_and_room_impulse():
    t = np.arange(16000) / 16000
    gain = lambda f: np.std(band_limit(np.sin(2 * np.pi * f * t), 300.0, 3400.0)[4000:]) / np.std(  # noqa: E731
        np.sin(2 * np.pi * f * t))
    assert gain(1000) > 0.9 and gain(6000) < 0.05 and gain(100) < 0.2
    ir = room_impulse(np.random.default_rng(1), rt60=0.5)
    assert ir[0] == 1.0 and len(ir) == 8000
    energy = np.cumsum(ir[::-1][:-1] ** 2)[::-1]  # Schroeder decay, direct sound left out
    decay_db = 10 * np.log10(energy[int(0.05 * 16000)] / energy[int(0.25 * 16000)])
    assert decay_db == pytest.approx(60 * 0.2 / 0.5, rel=0.35)  # 24 dB over 0.2 s at RT60 0.5 s


def test_augmentation_keeps_timings_bounded_and_is_seeded():
    u = synthesize("My mother bought five purple boots", voice="en-us")
    cfg = AudioAugment(probability=1.0, reverb=1.0, noise=1.0, band_limit=1.0)
    a = augment_utterance(u, np.random.default_rng(3), cfg)
    b = augment_utterance(u, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert np.abs(a.audio).max() <= 0.99 and a.audio.dtype == np.float32
    assert a.phonemes[-1][2] == pytest.approx(len(a.audio) / 16000)
    assert [p for p, _, _ in a.phonemes] == [p for p, _, _ in u.phonemes]
    clean = augment_utterance(u, np.random.default_rng(3), dataclasses.replace(cfg, probability=0.0))
    assert clean is u
