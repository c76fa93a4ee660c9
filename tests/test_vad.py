"""The silence gate's voice activity detector (vividtalk.audio.vad) and the gate built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk import motion
from vividtalk.audio import load_audio
from vividtalk.audio.vad import speech_probability, vad_available, voiced_frames
from vividtalk.pipeline import demo_weights_dir

pytestmark = pytest.mark.skipif(not vad_available(), reason="silero-vad is not installed")


def test_voiced_frames_hysteresis_bridging_and_padding():
    #                 0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15
    prob = np.array([0.1, 0.6, 0.4, 0.4, 0.2, 0.9, 0.1, 0.1, 0.1, 0.1, 0.3, 0.45, 0.8, 0.2, 0.1, 0.1])
    raw = voiced_frames(prob, min_pause=1, pad=0)  # hysteresis only: on above 0.5, off below 0.35
    assert raw.tolist() == [p > 0 for p in [0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]]
    bridged = voiced_frames(prob, min_pause=3, pad=0)  # the 1-frame pause at 4 is bridged, not 6-11
    assert bridged.tolist() == [p > 0 for p in [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]]
    padded = voiced_frames(prob, min_pause=3, pad=1)
    assert padded.tolist() == [p > 0 for p in [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0]]


def _speech_with_a_noisy_pause(seconds: float = 1.5, noise_db: float = -40.0):
    """The demo's speech twice with a pause between, all over white noise at ``noise_db`` dBFS
    (a recording's noise floor): (wav, frames of the pause's middle, frames of loud speech)."""
    speech = load_audio(demo_weights_dir() / "speech.wav")
    pause = np.zeros(int(seconds * 16000), np.float32)
    clean = np.concatenate([speech, pause, speech])
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32) * 10 ** (noise_db / 20)
    first, gap = len(speech) // 640, len(pause) // 640
    rms = [np.sqrt(np.mean(clean[640 * t: 640 * t + 640] ** 2)) for t in range(len(clean) // 640)]
    loud = [t for t, r in enumerate(rms) if r > 10 ** (-25 / 20)]
    return clean + noise, range(first + 5, first + gap - 5), loud


def test_the_gate_closes_a_pause_over_a_noise_floor_and_keeps_speech():
    wav, pause, loud = _speech_with_a_noisy_pause()
    frames = len(wav) // 640
    prob = speech_probability(wav, frames)
    assert prob.shape == (frames,) and 0.0 <= prob.min() and prob.max() <= 1.0
    level = motion.speech_gate(torch.from_numpy(wav), frames, voice=False)
    gate = motion.speech_gate(torch.from_numpy(wav), frames, voice=True)
    assert level[list(pause)].min() == 1.0  # the noise floor is far above the level gate's -55 dBFS
    assert gate[list(pause)].max() == 0.0  # the voice detector hears no speech there
    assert (gate[loud] == 1.0).float().mean() > 0.9  # and leaves the speech open
    np.testing.assert_array_equal(prob, speech_probability(wav, frames))  # deterministic


def test_the_gate_uses_the_detector_by_default_when_installed():
    wav, pause, _ = _speech_with_a_noisy_pause()
    frames = len(wav) // 640
    torch.testing.assert_close(motion.speech_gate(torch.from_numpy(wav), frames),
                               motion.speech_gate(torch.from_numpy(wav), frames, voice=True))


def test_loading_the_detector_keeps_torch_s_thread_count():
    """silero_vad sets torch to one thread when imported: the loader puts the count back (a
    fresh process, since the import runs once)."""
    import subprocess
    import sys

    code = ("import numpy as np, torch; torch.set_num_threads(3); from vividtalk.audio.vad import "
            "speech_probability; speech_probability(np.zeros(16000, np.float32), 25); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "3"
