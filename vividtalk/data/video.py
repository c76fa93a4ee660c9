"""Video files through the ffmpeg binary of ``imageio-ffmpeg`` (no system ffmpeg needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

import imageio_ffmpeg
import numpy as np


class VideoError(ValueError):
    """A video that cannot be read or written (missing, corrupt, empty)."""


def probe_video(path: str | os.PathLike) -> dict:
    """Basic facts of a video file: ``size`` (W, H), ``fps`` (float), ``duration`` (s)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, StopIteration, OSError) as err:
        raise VideoError(f"cannot read {path} as a video: {str(err).strip().splitlines()[-1]}") from err
    return {"size": tuple(meta["size"]), "fps": float(meta["fps"]), "duration": float(meta["duration"])}


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[np.ndarray]:
    """Decode RGB uint8 frames [H, W, 3], resampled to ``fps`` by ffmpeg when given
    (constant frame rate output, also for variable-frame-rate input)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    args = ["-vf", f"fps={fps}"] if fps else []
    try:
        reader = imageio_ffmpeg.read_frames(str(path), output_params=args)
        meta = next(reader)
    except (RuntimeError, StopIteration, OSError) as err:
        raise VideoError(f"cannot read {path} as a video: {str(err).strip().splitlines()[-1]}") from err
    w, h = meta["size"]
    try:
        for buf in reader:
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        reader.close()


def read_frames(path: str | os.PathLike, fps: float | None = None) -> np.ndarray:
    """All frames: uint8 [T, H, W, 3]. Raises VideoError for an empty video."""
    frames = list(iter_frames(path, fps))
    if not frames:
        raise VideoError(f"{path} has no video frames")
    return np.stack(frames)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    quality: int = 18,
    preset: str = "medium",
) -> None:
    """Encode RGB uint8 frames as H.264 mp4 (yuv420p, CRF ``quality``, x264 ``preset``),
    muxing 16 kHz mono float32 ``audio`` as AAC when given. Written to a temporary name and renamed, so a
    failure never leaves a partial file at ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise VideoError(f"output directory does not exist: {path.parent}")
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    wav = None
    try:
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            raise VideoError("no frames to write")
        h, w = first.shape[:2]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            wav = path.with_name(f".{path.stem}.tmp{os.getpid()}.f32")
            np.asarray(audio, dtype="<f4").tofile(wav)
            cmd += ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", str(wav), "-c:a", "aac",
                    "-shortest"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-crf", str(quality),
                "-movflags", "+faststart",
                str(tmp)]
        _pipe_frames(cmd, first, frames)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, wav):
            if leftover is not None and leftover.exists():
                leftover.unlink()


def _pipe_frames(cmd: list[str], first: np.ndarray, rest: Iterator[np.ndarray]) -> None:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in _chain(first, rest):
            if frame.shape != first.shape or frame.dtype != np.uint8:
                raise VideoError(f"all frames must be uint8 {first.shape}, got {frame.dtype} {frame.shape}")
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise VideoError(f"ffmpeg failed to encode: {err.strip()[-300:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
