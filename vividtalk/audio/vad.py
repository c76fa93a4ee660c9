"""Voice activity per 25 fps frame, from Silero VAD (PyPI ``silero-vad``, MIT; the model ships
inside the wheel and runs with onnxruntime; nothing is downloaded): about 2 ms per second of
audio on one core.

Why: a level threshold tells silence from sound, not pauses from speech. Recorded speech has
a noise floor (microphone hiss, room tone, a lossy codec) that stays above any fixed threshold
low enough to keep quiet consonants, so the mouth would keep mumbling through the pauses.
Silero VAD is trained on real recordings in many conditions and tells speech from noise.

The decision follows Silero's own defaults for speech segments: a frame starts speech at
probability 0.5 and ends it below 0.35 (hysteresis), pauses shorter than 100 ms are bridged and
speech is padded by one frame (~30 ms) on each side.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import torch

from .align import SAMPLE_RATE, SAMPLES_PER_FRAME

CHUNK = 512
"""Samples per Silero VAD decision at 16 kHz (32 ms)."""


def vad_available() -> bool:
    """Whether the ``silero-vad`` package is installed (without importing it)."""
    return importlib.util.find_spec("silero_vad") is not None


@functools.lru_cache(maxsize=1)
def _model():
    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # its import sets torch to one thread: put it back

    torch.set_num_threads(threads)
    return load_silero_vad(sequence=True)  # the ONNX model that takes whole blocks: no per-chunk loop


def speech_probability(wav, frames: int) -> np.ndarray:
    """Silero VAD's speech probability at each video frame's centre: float64 [frames].

    Args:
        wav: float samples [N] at 16 kHz (np.ndarray or tensor).
    Raises:
        ImportError: ``silero-vad`` is not installed (``pip install silero-vad``).
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, np.float32)
    if len(wav) < CHUNK:
        wav = np.pad(wav, (0, CHUNK - len(wav)))
    prob = _model().audio_forward(wav, SAMPLE_RATE).astype(np.float64)  # [ceil(N / CHUNK)], from a fresh state
    centres = ((np.arange(frames) + 0.5) * SAMPLES_PER_FRAME - 0.5 * CHUNK) / CHUNK  # in chunk indices
    return np.interp(centres, np.arange(len(prob)), prob)


def voiced_frames(prob: np.ndarray, start: float = 0.5, stop: float = 0.35, min_pause: int = 3,
                  pad: int = 1) -> np.ndarray:
    """Bool [T]: the frames of speech given per-frame speech probabilities [T].

    Args:
        start, stop: speech begins at ``start`` and ends below ``stop``.
        min_pause: pauses shorter than this many frames inside speech are bridged.
        pad: frames of speech added on each side of every speech segment.
    """
    speech, on = np.zeros(len(prob), bool), False
    for t, p in enumerate(prob):
        on = p > (stop if on else start)
        speech[t] = on
    last = -1  # the last frame of speech so far
    for t in np.flatnonzero(speech):
        if last >= 0 and t - last - 1 < min_pause:
            speech[last:t] = True
        last = t
    out = speech.copy()
    for k in range(1, pad + 1):
        out[k:] |= speech[:-k]
        out[:-k] |= speech[k:]
    return out
