"""Loading audio from files, video files and arrays as 16 kHz mono float32.

Files are decoded by the ffmpeg binary that ships with ``imageio-ffmpeg`` (no system ffmpeg,
no network): it demuxes the first audio track of any audio or video container, downmixes to
mono and resamples to 16 kHz. Arrays are downmixed by a channel mean and resampled with a
polyphase filter (``scipy.signal.resample_poly``).

Silent audio (all zeros, or quieter than about -60 dBFS) is valid input: it loads normally
and downstream stages keep the mouth closed for it; use :func:`is_silent` to detect it.

Failures are typed (all :class:`AudioError`, a ValueError): :class:`MediaNotFoundError` (no
such file), :class:`UnreadableMediaError` (ffmpeg cannot open it, or its audio track cannot be
decoded) and :class:`NoAudioStreamError` (a readable file without an audio track). They are
told apart by ffmpeg's exit status on small probes (:func:`probe_streams`), not by its messages.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from scipy.signal import resample_poly

from vividtalk.audio.align import SAMPLE_RATE, frames_to_samples

# Channel counts above this are taken to be a sample axis, not a channel axis.
MAX_CHANNELS = 8
# Float arrays louder than this are almost surely integer PCM stored as floats.
_MAX_FLOAT_PEAK = 2.0


class AudioError(ValueError):
    """Audio input that cannot be used: missing, unreadable, empty, non-finite or ill-shaped."""


class UnreadableMediaError(AudioError):
    """A file that ffmpeg cannot open as audio or video (not media, truncated, a directory), or
    whose audio track cannot be decoded."""


class MediaNotFoundError(UnreadableMediaError):
    """A media file path that does not exist."""


class NoAudioStreamError(AudioError):
    """A readable media file without an audio track (e.g. a silent-film video)."""


@dataclass(frozen=True)
class MediaStreams:
    """Which kinds of stream a media file holds (its first audio / video track exists)."""

    audio: bool
    video: bool


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
        MediaNotFoundError: no file at the path.
        UnreadableMediaError: a directory, a file ffmpeg cannot open, or a corrupt audio track.
        NoAudioStreamError: a readable file (e.g. a video) without an audio track.
        AudioError: (the base of the above) empty audio, NaN/Inf values, an invalid sample
            rate, an array of the wrong rank, or a float array peaking above 2 (integer PCM
            values stored as floats).
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


def frames_sound(path: str | os.PathLike, frames: int) -> np.ndarray | None:
    """The sound of a video's first ``frames`` frames at 25 fps, float32 [frames * 640] (padded
    with silence where the track ends early), or None for a video without a usable sound track."""
    try:
        wav = load_audio(path)[: frames_to_samples(frames)]
    except AudioError:
        return None
    return np.pad(wav, (0, frames_to_samples(frames) - len(wav)))


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


def probe_streams(path: str | os.PathLike) -> MediaStreams:
    """Which streams ffmpeg finds in a media file, from the exit status of three tiny runs.

    ffmpeg first opens the file (writing only its global metadata), then maps its first audio
    and its first video stream to the null muxer for zero seconds: a map that matches no
    stream fails, so no message needs to be read. About 20 ms a run.

    Args:
        path: any audio or video file.

    Returns:
        MediaStreams(audio, video): whether the file has an audio / a video track.

    Raises:
        MediaNotFoundError: no file at ``path``.
        UnreadableMediaError: a directory, or a file ffmpeg cannot open (not media, corrupt,
            zero bytes); the message ends with ffmpeg's own diagnosis.
    """
    path = Path(path)
    _check_path(path)
    opened = _run_ffmpeg(["-i", str(path), "-f", "ffmetadata", "-"])
    if opened.returncode != 0:
        raise UnreadableMediaError(
            f"cannot open {path}: not an audio/video file or corrupt "
            f"(ffmpeg: {_last_line(opened)}); pass an audio or video file"
        )
    return MediaStreams(audio=_has_stream(path, "a"), video=_has_stream(path, "v"))


def _check_path(path: Path) -> None:
    """MediaNotFoundError for a missing path, UnreadableMediaError for a non-file."""
    if not path.exists():
        raise MediaNotFoundError(f"media file not found: {path} (check the path)")
    if not path.is_file():
        raise UnreadableMediaError(f"not a file: {path} (pass an audio or video file, not a directory)")


def _has_stream(path: Path, kind: str) -> bool:
    """Whether ``path`` (openable) has a stream of ``kind`` ("a" audio, "v" video)."""
    args = ["-i", str(path), "-map", f"0:{kind}:0", "-c", "copy", "-t", "0", "-f", "null", "-"]
    return _run_ffmpeg(args).returncode == 0


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    """The bundled ffmpeg with ``args``, quiet but for errors; output captured."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    return subprocess.run(cmd, capture_output=True, check=False)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    """ffmpeg's last non-empty stderr line (its diagnosis), or its exit status."""
    text = proc.stderr.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"ffmpeg exit status {proc.returncode}"


def _decode_file(path: Path) -> np.ndarray:
    """Decode an audio or video file to float32 [N] mono 16 kHz with ffmpeg.

    The first audio track is decoded straight away; only when that fails is the file probed
    (:func:`probe_streams`) to say why: not openable, no audio track, or a corrupt track.
    """
    _check_path(path)
    proc = _run_ffmpeg([
        "-i", str(path),
        "-map", "0:a:0",  # first audio track only; fails when there is none
        "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(SAMPLE_RATE),
        "-f", "f32le", "-acodec", "pcm_f32le",
        "pipe:1",
    ])
    if proc.returncode != 0:
        if not probe_streams(path).audio:  # (raises UnreadableMediaError when not openable)
            raise NoAudioStreamError(
                f"{path} has no audio track; pass a video with sound or a separate audio file"
            )
        raise UnreadableMediaError(
            f"cannot decode the audio track of {path}: corrupt (ffmpeg: {_last_line(proc)}); "
            "re-encode it or pass a separate audio file"
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
