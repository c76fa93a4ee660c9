"""The clip format: the one module that writes and reads training clips (docs/architecture.md, "Data contracts").

A clip is a directory::

    <clip_id>/
        frames.pack   the frame store: every frame's RGB crop, 256 x 256 (any square size), as
                      JPEG and its mask labels as PNG, indexed (``frame_store``): a frame is
                      read alone, without decoding the clip
        audio.wav     16 kHz mono PCM (absent when the source had no audio); read by sample range
        arrays/       one uncompressed ``.npy`` per CLIP_ARRAYS entry (the masks live in the
                      frame store): a frame's row is read alone (one pread)
        meta.json     provenance; written last; ``format_version`` = CLIP_FORMAT_VERSION

Format 1 (``frames.mp4`` + ``arrays.npz``) had to decode a whole clip to use two frames of it;
``vividtalk-prep migrate CORPUS`` (:func:`migrate_clip`) rewrites such clips in place.

Writes are atomic: everything goes to a hidden temporary directory that is renamed into
place only when complete, so a crash never leaves a directory that reads as a clip. A corpus
is a directory of clips plus ``manifest.json`` with train/val/test splits by identity.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
import wave
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..audio.align import FPS, SAMPLE_RATE
from ..face.segmentation import BACKGROUND, FACE, HAIR_TORSO  # noqa: F401  (the labels of ``masks`` [T, H, W] uint8)
from .frame_store import FrameStore, write_frame_store
from .video import read_frames

CLIP_FORMAT_VERSION = 2
MIGRATE_HINT = "rewrite it with `vividtalk-prep migrate CORPUS`"

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
STORED_IN_FRAMES = ("masks",)  # kept in the frame store beside the images, not in arrays/


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
    with _replacing(Path(root), clip_id) as tmp:
        _write_files(tmp, clip_id, data)
    return Path(root) / clip_id


@contextmanager
def _replacing(root: Path, clip_id: str):
    """A temporary directory that replaces ``root/clip_id`` when the block ends without error.
    The old clip is renamed aside before the new one moves in, so a crash leaves one of the
    two complete (a hidden ``.old-*`` directory at worst), never neither."""
    root.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, final, old = root / f".tmp-{clip_id}-{tag}", root / clip_id, root / f".old-{clip_id}-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _write_files(directory: Path, clip_id: str, data: ClipData) -> None:
    write_frame_store(directory / "frames.pack", data.frames, np.asarray(data.arrays["masks"], np.uint8))
    if data.audio is not None:
        _write_wav(directory / "audio.wav", data.audio)
    (directory / "arrays").mkdir()
    for name, (_, dtype, _) in CLIP_ARRAYS.items():
        if name not in STORED_IN_FRAMES:
            np.save(directory / "arrays" / f"{name}.npy", np.asarray(data.arrays[name], dtype=dtype))
    meta = {
        **data.meta,
        "format_version": CLIP_FORMAT_VERSION,
        "clip_id": clip_id,
        "num_frames": int(len(data.frames)),
        "fps": FPS,
        "size": int(data.frames.shape[1]),
        "has_audio": data.audio is not None,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))


def _write_wav(path: Path, audio: np.ndarray) -> None:
    # The s16 scale of ffmpeg (and Clip.audio): float = pcm / 32768, so reading and writing
    # again is lossless (a migrated clip keeps its samples).
    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype("<i2")
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
    """Read access to one clip directory (lazy: each read touches only what it returns).

    Args:
        path: the clip directory (raises ClipError when incomplete or of another format).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        version = self.meta.get("format_version")
        if version != CLIP_FORMAT_VERSION:
            raise ClipError(f"{self.path} has clip format {version}; this vividtalk reads {CLIP_FORMAT_VERSION}: "
                            + MIGRATE_HINT)
        self._store, self._headers = None, {}

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

    @property
    def store(self) -> FrameStore:
        """The frame store (images and masks, random access)."""
        if self._store is None:
            self._store = FrameStore(self.path / "frames.pack")
        return self._store

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one array (a CLIP_ARRAYS name but ``masks``; all of
        ``identity``), read alone from its ``.npy`` file: a frame's row costs one small read."""
        if name in STORED_IN_FRAMES or name not in CLIP_ARRAYS:
            raise ClipError(f"clip arrays are {sorted(set(CLIP_ARRAYS) - set(STORED_IN_FRAMES))}, not {name!r}"
                            + (" (masks: Clip.mask / Clip.masks)" if name == "masks" else ""))
        return self._read_rows(self.path / "arrays" / f"{name}.npy", start, stop)

    def _read_rows(self, path: Path, start: int, stop: int | None) -> np.ndarray:
        if path not in self._headers:  # shape, dtype and data offset, parsed once per clip object
            if not path.is_file():
                raise ClipError(f"clip {self.clip_id} has no {path.name} ({path} missing)")
            self._headers[path] = _npy_header(path)
        shape, dtype, offset = self._headers[path]
        count = shape[0] if shape else 1
        start, stop, _ = slice(start, stop).indices(count)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        with open(path, "rb", buffering=0) as f:
            data = os.pread(f.fileno(), row * max(0, stop - start), offset + row * start)
        rows = np.frombuffer(data, dtype).reshape(-1, *shape[1:])
        return rows.copy() if shape else rows.reshape(())  # (frombuffer is read-only)

    def arrays(self, keys: tuple[str, ...] | None = None) -> dict:
        """Per-frame arrays in memory (see CLIP_ARRAYS): all of them, or only ``keys`` (the
        masks, decoded from the frame store, are most of the bytes: leave them out when unused)."""
        keys = tuple(CLIP_ARRAYS) if keys is None else keys
        return {k: self.masks() if k == "masks" else self.rows(k) for k in keys}

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t``: uint8 [S, S, 3] RGB (read alone)."""
        return self.store.frame(t)

    def mask(self, t: int) -> np.ndarray:
        """The mask labels of frame ``t``: uint8 [S, S]."""
        return self.store.mask(t)

    def frames(self, indices=None) -> np.ndarray:
        """uint8 [T, S, S, 3] RGB frames (only ``indices`` when given)."""
        return self.store.frames(indices)

    def masks(self, indices=None) -> np.ndarray:
        """uint8 [T, S, S] mask labels (only ``indices`` when given)."""
        return self.store.masks(indices)

    def audio(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [N] 16 kHz mono, samples ``start:stop`` (read alone; shorter at the end of the
        file). Raises ClipError when the clip has no audio."""
        if not self.has_audio:
            raise ClipError(f"clip {self.clip_id} has no audio (its source video had none)")
        with wave.open(str(self.path / "audio.wav"), "rb") as w:
            stop = w.getnframes() if stop is None else min(stop, w.getnframes())
            w.setpos(min(start, stop))
            pcm = np.frombuffer(w.readframes(max(0, stop - start)), "<i2")
        return pcm.astype(np.float32) / 32768.0  # ffmpeg's s16 -> float scale (load_audio agrees)

    def features(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Cached per-frame audio features [T, D] written by :func:`write_features` (rows
        ``start:stop`` read alone)."""
        path = self.path / f"features-{name}.npy"
        if not path.is_file():
            raise ClipError(
                f"clip {self.clip_id} has no cached features {name!r}; write them with "
                "vividtalk.data.write_features (one vector per frame)"
            )
        return self._read_rows(path, start, stop)

    def load(self) -> ClipData:
        """Everything in memory."""
        return ClipData(self.frames(), self.audio() if self.has_audio else None, self.arrays(), self.meta)


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, offset of the data) of a C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran or dtype.hasobject:
            raise ClipError(f"{path} is not a plain C-ordered array")
        return shape, dtype, f.tell()


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
    incomplete directories are skipped). Raises ClipError when some clips are of an older
    format, naming the migration."""
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"corpus directory not found: {root}")
    versions = {p: _version(p) for p in _clip_dirs(root)}
    other = sorted((v, p.name) for p, v in versions.items() if v not in (None, CLIP_FORMAT_VERSION))
    if other:
        version, name = other[0]
        fix = MIGRATE_HINT if version < CLIP_FORMAT_VERSION else "it was written by a newer vividtalk: upgrade"
        raise ClipError(f"{root} holds {len(other)} clips of format {version} (e.g. {name}), this vividtalk "
                        f"reads {CLIP_FORMAT_VERSION}; {fix}")
    return [p for p, v in versions.items() if v == CLIP_FORMAT_VERSION]


def _clip_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _version(path: Path) -> int | None:
    try:
        return int(read_meta(path).get("format_version", 0))
    except ClipError:  # incomplete
        return None


def migrate_clip(path: str | os.PathLike) -> bool:
    """Rewrite a format-1 clip (frames.mp4 + arrays.npz) in the current format, in place and
    atomically, keeping its cached features. Returns False when it already is current."""
    path = Path(path)
    meta = read_meta(path)
    version = meta.get("format_version")
    if version == CLIP_FORMAT_VERSION:
        return False
    if version != 1:
        raise ClipError(f"{path} has clip format {version}; migration reads format 1")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    audio = load_audio(path / "audio.wav") if meta.get("has_audio") else None
    data = ClipData(read_frames(path / "frames.mp4"), audio, arrays, meta)
    validate(data)
    with _replacing(path.parent, path.name) as tmp:
        _write_files(tmp, path.name, data)
        for cached in glob.glob(str(path / "features-*.npy")):
            shutil.copy2(cached, tmp)
    return True


def migrate_corpus(root: str | os.PathLike, progress: bool = True) -> dict[str, int]:
    """Rewrite every format-1 clip under ``root`` in the current format (:func:`migrate_clip`).
    Resumable: clips already current are skipped, each clip is replaced atomically, and an
    interrupted run's leftovers are cleaned first. The manifest stays valid (same clip ids).

    Returns: counts ``migrated`` and ``current``.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"corpus directory not found: {root}")
    remove_incomplete(root)
    counts = {"migrated": 0, "current": 0}
    clips = [p for p in _clip_dirs(root) if _version(p) is not None]
    for path in tqdm(clips, desc="migrating clips", unit="clip", disable=not progress):
        counts["migrated" if migrate_clip(path) else "current"] += 1
    return counts


def remove_incomplete(root: str | os.PathLike) -> list[Path]:
    """Clean up after interrupted writes: delete hidden ``.tmp-*`` directories, and put back an
    old clip that was renamed aside (``.old-*``) when its replacement never moved in.
    Returns the directories deleted."""
    root = Path(root)
    for old in root.glob(".old-*"):
        clip_id = old.name[len(".old-"):].rsplit("-", 1)[0]
        if (root / clip_id).exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, root / clip_id)
    leftovers = [p for p in root.glob(".tmp-*") if p.is_dir()]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers
