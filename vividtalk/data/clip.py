"""The clip format: the one module that writes and reads training clips (docs/architecture.md, "Data contracts").

A clip is a directory::

    <clip_id>/
        frames.mp4    cropped RGB frames, 256 x 256 (any square size), 25 fps, H.264
        audio.wav     16 kHz mono PCM (absent when the source had no audio)
        arrays.npz    per-frame arrays, see CLIP_ARRAYS
        meta.json     provenance; written last; ``format_version`` = CLIP_FORMAT_VERSION

Writes are atomic: everything goes to a hidden temporary directory that is renamed into
place only when complete, so a crash never leaves a directory that reads as a clip. A corpus
is a directory of clips plus ``manifest.json`` with train/val/test splits by identity.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..audio.align import FPS, SAMPLE_RATE
from ..face.segmentation import BACKGROUND, FACE, HAIR_TORSO  # noqa: F401  (the labels of ``masks`` [T, H, W] uint8)
from .video import read_frames, write_video

CLIP_FORMAT_VERSION = 1

# name -> (shape with T/V/K/L/N symbols, dtype, description)
CLIP_ARRAYS = {
    "vertices": ("T,V,3", "float32", "mesh vertices in crop pixels (x, y, depth)"),
    "pose": ("T,7", "float32", "similarity pose canonical -> crop pixels (face.pose)"),
    "beta": ("T,K", "float32", "expression (blendshape) coefficients"),
    "lip_offsets": ("T,L,3", "float32", "lip vertex offsets O_lip (canonical units)"),
    "identity": ("V,3", "float32", "identity (neutral) shape, canonical frame"),
    "lip_landmarks": ("T,N,2", "float32", "2-D lip contour points in crop pixels"),
    "masks": ("T,H,W", "uint8", "0 background, 1 hair/torso, 2 face"),
}


class ClipError(ValueError):
    """A clip directory that is missing, incomplete or of another format version."""


@dataclass
class ClipData:
    """Everything a clip holds, in memory.

    Attributes:
        frames: uint8 [T, S, S, 3] RGB crops.
        audio: float32 [N] 16 kHz mono, or None (no audio track).
        arrays: dict of CLIP_ARRAYS entries (all of them).
        meta: provenance, at least ``source``, ``identity`` and ``face_model_id``; the writer
            adds ``format_version``, ``num_frames``, ``fps``, ``size``, ``has_audio``.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    arrays: dict
    meta: dict = field(default_factory=dict)


def validate(data: ClipData) -> None:
    """Check shapes and dtypes against CLIP_ARRAYS; raise ClipError naming what is wrong."""
    t = len(data.frames)
    if data.frames.ndim != 4 or data.frames.shape[3] != 3 or data.frames.dtype != np.uint8:
        raise ClipError(f"frames must be uint8 [T, S, S, 3], got {data.frames.dtype} {data.frames.shape}")
    missing = sorted(set(CLIP_ARRAYS) - set(data.arrays))
    if missing:
        raise ClipError(f"clip arrays missing: {missing}")
    for name, (shape, dtype, _) in CLIP_ARRAYS.items():
        a = data.arrays[name]
        if shape.startswith("T,") and (a.ndim == 0 or a.shape[0] != t):
            raise ClipError(f"{name} has {a.shape[0] if a.ndim else 0} frames, the video has {t}")
        if a.ndim != len(shape.split(",")):
            raise ClipError(f"{name} must have shape [{shape}], got {a.shape}")
    if data.arrays["masks"].shape[1:] != data.frames.shape[1:3]:
        raise ClipError("masks must have the frames' height and width")
    for key in ("source", "identity", "face_model_id"):
        if key not in data.meta:
            raise ClipError(f"clip meta lacks {key!r}")


def write_clip(root: str | os.PathLike, clip_id: str, data: ClipData) -> Path:
    """Write a clip atomically to ``root/clip_id`` (replacing an existing one).

    Returns the clip directory.
    """
    validate(data)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{clip_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # veryfast: half the encoding time of the default for a few % more bytes at CRF 18.
        write_video(tmp / "frames.mp4", data.frames, fps=FPS, preset="veryfast")
        if data.audio is not None:
            _write_wav(tmp / "audio.wav", data.audio)
        arrays = {k: np.asarray(data.arrays[k], dtype=CLIP_ARRAYS[k][1]) for k in CLIP_ARRAYS}
        np.savez_compressed(tmp / "arrays.npz", **arrays)
        meta = {
            **data.meta,
            "format_version": CLIP_FORMAT_VERSION,
            "clip_id": clip_id,
            "num_frames": int(len(data.frames)),
            "fps": FPS,
            "size": int(data.frames.shape[1]),
            "has_audio": data.audio is not None,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        final = root / clip_id
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def is_clip(path: str | os.PathLike) -> bool:
    """True for a complete clip directory of this format version."""
    try:
        return read_meta(path)["format_version"] == CLIP_FORMAT_VERSION
    except ClipError:
        return False


def read_meta(path: str | os.PathLike) -> dict:
    """The clip's meta.json. Raises ClipError if absent (incomplete) or unreadable."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise ClipError(f"{path} is not a complete clip (no meta.json)")
    try:
        return json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClipError(f"{meta_path} is corrupt: {err}") from err


class Clip:
    """Read access to one clip directory (lazy: nothing is decoded until asked).

    Args:
        path: the clip directory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        version = self.meta.get("format_version")
        if version != CLIP_FORMAT_VERSION:
            raise ClipError(f"{self.path} has clip format {version}; this vividtalk reads {CLIP_FORMAT_VERSION}")
        self._arrays = None

    def __len__(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def clip_id(self) -> str:
        return self.meta["clip_id"]

    @property
    def identity(self) -> str:
        return str(self.meta["identity"])

    @property
    def has_audio(self) -> bool:
        return bool(self.meta["has_audio"])

    def arrays(self, keys: tuple[str, ...] | None = None) -> dict:
        """All per-frame arrays (see CLIP_ARRAYS), loaded once and cached; with ``keys``, only
        those arrays, read without filling the cache (the masks are most of a clip's bytes)."""
        if keys is not None and self._arrays is None:
            with np.load(self.path / "arrays.npz", allow_pickle=False) as z:
                missing = set(keys) - set(z.files)
                if missing:
                    raise ClipError(f"clip {self.clip_id} has no arrays {sorted(missing)}")
                return {k: z[k] for k in keys}
        if self._arrays is None:
            with np.load(self.path / "arrays.npz", allow_pickle=False) as z:
                self._arrays = {k: z[k] for k in z.files}
        return self._arrays if keys is None else {k: self._arrays[k] for k in keys}

    def frames(self) -> np.ndarray:
        """uint8 [T, S, S, 3] RGB frames."""
        return read_frames(self.path / "frames.mp4")

    def audio(self) -> np.ndarray:
        """float32 [N] 16 kHz mono; raises ClipError when the clip has no audio."""
        if not self.has_audio:
            raise ClipError(f"clip {self.clip_id} has no audio (its source video had none)")
        return load_audio(self.path / "audio.wav")

    def features(self, name: str) -> np.ndarray:
        """Cached per-frame audio features [T, D] written by :func:`write_features`."""
        path = self.path / f"features-{name}.npy"
        if not path.is_file():
            raise ClipError(
                f"clip {self.clip_id} has no cached features {name!r}; write them with "
                "vividtalk.data.write_features (one vector per frame)"
            )
        return np.load(path, allow_pickle=False)

    def load(self) -> ClipData:
        """Everything in memory."""
        return ClipData(self.frames(), self.audio() if self.has_audio else None, dict(self.arrays()), self.meta)


def write_features(clip_path: str | os.PathLike, name: str, features: np.ndarray) -> Path:
    """Cache audio features [T, D] (one vector per frame) beside a clip, atomically."""
    clip = Clip(clip_path)
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(clip):
        raise ClipError(f"features must be [{len(clip)}, D] for clip {clip.clip_id}, got {features.shape}")
    path = clip.path / f"features-{name}.npy"
    tmp = clip.path / f".features-{name}.tmp.npy"
    np.save(tmp, features)
    os.replace(tmp, path)
    return path


def list_clips(root: str | os.PathLike) -> list[Path]:
    """Complete clip directories under a corpus root, sorted by name (temporary and
    incomplete directories are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"corpus directory not found: {root}")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_clip(p))


def remove_incomplete(root: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted writes (hidden ``.tmp-*`` directories); returns them."""
    leftovers = [p for p in Path(root).glob(".tmp-*") if p.is_dir()]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers
