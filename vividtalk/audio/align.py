"""Alignment of 16 kHz audio to 25 fps video frames.

The contract (docs/architecture.md, "Data contracts"): video frame ``f`` covers the audio samples
``[640 f, 640 (f + 1))``, so a clip of ``N`` samples has ``ceil(N / 640)`` video frames and
its last, partial frame is completed with zeros. Every audio feature encoder yields exactly
``num_frames(N)`` feature vectors.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def num_frames(num_samples: int, fps: int = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of video frames that ``num_samples`` audio samples span.

    Args:
        num_samples: audio length in samples (>= 0).
        fps: video frame rate in frames per second.
        sample_rate: audio sample rate in Hz.

    Returns:
        ``ceil(num_samples * fps / sample_rate)``: 0 for empty audio, at least 1 otherwise.
    """
    num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps} and {sample_rate}")
    # Integer ceil-division: exact for any length, no float rounding at frame borders.
    return -(-num_samples * fps // sample_rate)


def frames_to_samples(frames: int, fps: int = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples covering ``frames`` whole video frames: ``ceil(frames * sample_rate / fps)``."""
    return -(-int(frames) * sample_rate // fps)


def pad_to_frames(wav, fps: int = FPS, sample_rate: int = SAMPLE_RATE):
    """Zero-pad the last axis so that it covers a whole number of video frames.

    Args:
        wav: np.ndarray or torch.Tensor [..., N] (any dtype, any device), samples at
            ``sample_rate`` Hz.

    Returns:
        the same type, dtype and device, [..., num_frames(N) * 640] (at 25 fps / 16 kHz);
        the input itself when N is already a whole number of frames.
    """
    length = wav.shape[-1]
    target = frames_to_samples(num_frames(length, fps, sample_rate), fps, sample_rate)
    if target == length:
        return wav
    if isinstance(wav, torch.Tensor):
        return torch.nn.functional.pad(wav, (0, target - length))
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, target - length)]
    return np.pad(wav, pad)


def frame_audio_windows(wav: torch.Tensor, context: int = 0) -> torch.Tensor:
    """Raw audio window of each video frame, with ``context`` frames either side.

    Useful for lip-sync experts (SyncNet-style) that look at the raw audio around a frame.
    Samples outside the clip are zeros.

    Args:
        wav: float tensor [B, N], 16 kHz.
        context: number of neighbouring video frames on each side (>= 0).

    Returns:
        tensor [B, T, (2 * context + 1) * 640] on wav's device, T = num_frames(N); row f holds
        samples ``[640 (f - context), 640 (f + context + 1))``.
    """
    if wav.dim() != 2:
        raise ValueError(f"expected wav of shape [B, N], got {tuple(wav.shape)}")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    spf = SAMPLES_PER_FRAME
    padded = pad_to_frames(wav)  # [B, T * 640]
    padded = torch.nn.functional.pad(padded, (context * spf, context * spf))
    size = (2 * context + 1) * spf
    return padded.unfold(-1, size, spf)  # [B, T, size]


def check_waveform_batch(wav) -> None:
    """Raise ValueError unless ``wav`` is a non-empty torch.Tensor [B, N] (what encoders take)."""
    if not isinstance(wav, torch.Tensor) or wav.dim() != 2:
        shape = tuple(wav.shape) if hasattr(wav, "shape") else type(wav).__name__
        raise ValueError(f"expected a waveform tensor of shape [B, N], got {shape}")
    if wav.shape[-1] == 0:
        raise ValueError("empty waveform (N = 0): audio features need at least one sample")


def frame_levels_db(wav, frames: int, floor_db: float = -80.0) -> np.ndarray:
    """RMS level (dBFS) of each video frame's 640 samples: float64 [frames].

    Args:
        wav: float samples [N] at 16 kHz (np.ndarray or tensor); a short track is zero-padded.
        floor_db: silence (and anything quieter) reads as this level.
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, np.float64)
    wav = np.pad(wav, (0, max(0, frames * SAMPLES_PER_FRAME - len(wav))))[: frames * SAMPLES_PER_FRAME]
    rms = np.sqrt(np.mean(wav.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 10 ** (floor_db / 20)))
