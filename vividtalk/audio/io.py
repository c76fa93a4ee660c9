"""Loading audio from files, video files and arrays as 16 kHz mono float32.

Files are decoded by the ffmpeg binary that ships with ``imageio-ffmpeg`` (no system ffmpeg,
no network): it demuxes the first audio track of any audio or video container, downmixes to
mono and resamples to 16 kHz. Arrays are downmixed by a channel mean and resampled with a
polyphase filter (``scipy.signal.resample_poly``).

Silent audio (all zeros, or quieter than about -60 dBFS) is valid input: it loads normally
and downstream stages keep the mouth closed for it; use :func:`is_silent` to detect it.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from scipy.signal import resample_poly

from vividtalk.audio.align import SAMPLE_RATE

# Channel counts above this are taken to be a sample axis, not a channel axis.
MAX_CHANNELS = 8
# Float arrays louder than this are almost surely integer PCM stored as floats.
_MAX_FLOAT_PEAK = 2.0


class AudioError(ValueError):
    """Audio input that cannot be used: missing, unreadable, empty, non-finite or ill-shaped."""


def load_audio(source, sample_rate: int | None = None) -> np.ndarray:
    """Load audio as 16 kHz mono float32 in [-1, 1].

    Args:
        source: a path (str or os.PathLike) to an audio file (wav, mp3, m4a, flac, ogg, ...)
            or a video file (mp4, mov, mkv, webm, avi, ...: its first audio track); or an
            array (np.ndarray or torch.Tensor) of shape [N], [N, C] or [C, N] (C <= 8 channels,
            averaged), float in [-1, 1] or integer PCM (int8/16/32, uint8: scaled to [-1, 1]).
        sample_rate: the array's sample rate in Hz, required for arrays; must be None for
            paths (the file's header gives its rate).

    Returns:
        np.ndarray float32 [N'] at 16 kHz, values clipped to [-1, 1]. Silent audio is
        returned as is (see :func:`is_silent`).

    Raises:
        AudioError: missing or unreadable file, a video without an audio track, empty audio,
            NaN/Inf values, an invalid sample rate, an array of the wrong rank, or a float
            array peaking above 2 (integer PCM values stored as floats).
    """
    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            raise AudioError(
                "sample_rate is only for array input; a file's own header gives its rate "
                "(call load_audio(path) without sample_rate)"
            )
        wav = _decode_file(Path(source))
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        wav = _from_array(source, sample_rate)
    else:
        raise AudioError(
            f"cannot load audio from a {type(source).__name__}: pass a file path or an "
            "np.ndarray / torch.Tensor with sample_rate"
        )
    # Codecs and resampling filters may overshoot full scale by a little.
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def is_silent(wav, threshold_db: float = -60.0) -> bool:
    """Whether audio is silent: its RMS level is below ``threshold_db`` dBFS.

    Args:
        wav: np.ndarray or torch.Tensor of any shape, float samples in [-1, 1].
        threshold_db: RMS level in dB relative to full scale (by this measure a full-scale
            sine is at -3 dB).

    Returns:
        True for all-zero, empty or very quiet audio. Silent clips are valid input; the
        talking head keeps its mouth closed for them.
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float64)
    if wav.size == 0:
        return True
    rms = math.sqrt(float(np.mean(np.square(wav))))
    if rms == 0.0:
        return True
    return 20.0 * math.log10(rms) < threshold_db


def _ffmpeg_command(path: Path) -> list[str]:
    """ffmpeg arguments that write the first audio track of ``path`` as f32le mono 16 kHz."""
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path),
        "-map", "0:a:0",  # first audio track only; fails loudly when there is none
        "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(SAMPLE_RATE),
        "-f", "f32le", "-acodec", "pcm_f32le",
        "pipe:1",
    ]


def _decode_file(path: Path) -> np.ndarray:
    """Decode an audio or video file to float32 [N] mono 16 kHz with ffmpeg."""
    if not path.exists():
        raise AudioError(f"audio file not found: {path} (check the path)")
    if not path.is_file():
        raise AudioError(f"not a file: {path} (pass an audio or video file, not a directory)")
    proc = subprocess.run(_ffmpeg_command(path), capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        if "matches no streams" in stderr or "does not contain any stream" in stderr:
            raise AudioError(
                f"{path} has no audio track; pass a video with sound or a separate audio file"
            )
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"ffmpeg exit status {proc.returncode}"
        raise AudioError(
            f"cannot decode {path}: not an audio/video file or corrupt (ffmpeg: {last})"
        )
    wav = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)  # f32le is little-endian
    _check_samples(wav, what=str(path))
    return wav


def _from_array(array, sample_rate) -> np.ndarray:
    """Array [N], [N, C] or [C, N] at ``sample_rate`` -> float32 [N'] mono 16 kHz."""
    if sample_rate is None:
        raise AudioError(
            "sample_rate is required for array input, e.g. load_audio(wav, sample_rate=44100)"
        )
    rate = _check_rate(sample_rate)
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    wav = _to_float(np.asarray(array))
    wav = _downmix(wav)
    _check_samples(wav, what="array")
    return _resample(wav, rate, SAMPLE_RATE)


def _check_rate(sample_rate) -> int:
    """A positive whole number of Hz (int or integral float), else AudioError."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number)):
        raise AudioError(f"invalid sample rate {sample_rate!r}: give a positive integer in Hz")
    if not math.isfinite(float(sample_rate)) or sample_rate <= 0 or sample_rate != int(sample_rate):
        raise AudioError(f"invalid sample rate {sample_rate!r}: give a positive integer in Hz")
    return int(sample_rate)


def _to_float(wav: np.ndarray) -> np.ndarray:
    """Scale integer PCM to float64 in [-1, 1]; float input is kept (checked for range)."""
    if wav.dtype == np.uint8:
        return (wav.astype(np.float64) - 128.0) / 128.0  # 8-bit PCM is offset binary
    if np.issubdtype(wav.dtype, np.signedinteger):
        return wav.astype(np.float64) / float(-np.iinfo(wav.dtype).min)
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"unsupported audio dtype {wav.dtype}: use float32 or int16 samples")
    wav = wav.astype(np.float64)
    finite = wav[np.isfinite(wav)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    if peak > _MAX_FLOAT_PEAK:
        raise AudioError(
            f"float audio must lie in [-1, 1] but its peak is {peak:.4g}; if these are int16 "
            "sample values stored as floats, divide by 32768"
        )
    return wav


def _downmix(wav: np.ndarray) -> np.ndarray:
    """[N] -> [N]; [N, C] or [C, N] (channels = the small axis, C <= 8) -> channel mean [N]."""
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise AudioError(
            f"audio array must have shape [N], [N, C] or [C, N]; got rank {wav.ndim} "
            f"with shape {wav.shape}"
        )
    rows, cols = wav.shape
    if rows == cols and rows > 1:
        raise AudioError(f"ambiguous audio array shape {wav.shape}: cannot tell the channel axis")
    channel_axis = 0 if rows < cols else 1
    if wav.shape[channel_axis] > MAX_CHANNELS:
        raise AudioError(
            f"audio array of shape {wav.shape} has more than {MAX_CHANNELS} channels on its "
            "smaller axis: pass [N], [N, C] or [C, N] with C <= 8"
        )
    return wav.mean(axis=channel_axis)


def _check_samples(wav: np.ndarray, what: str) -> None:
    """Raise AudioError for empty audio or NaN/Inf samples."""
    if wav.size == 0:
        raise AudioError(f"empty audio (0 samples) in {what}: give at least one sample")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"audio in {what} contains NaN or Inf values: clean or replace them")


def _resample(wav: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling float [N] from ``rate_in`` to ``rate_out`` Hz -> float32 [N']."""
    if rate_in == rate_out:
        return wav.astype(np.float32)
    g = math.gcd(rate_in, rate_out)
    out = resample_poly(wav, rate_out // g, rate_in // g)
    return out.astype(np.float32)
