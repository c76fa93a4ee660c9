"""Training data: the clip format (the one module that reads and writes clips), corpus
manifests, video I/O and the LightningDataModules."""

from .clip import (
    BACKGROUND,
    CLIP_ARRAYS,
    CLIP_FORMAT_VERSION,
    FACE,
    HAIR_TORSO,
    Clip,
    ClipData,
    ClipError,
    list_clips,
    migrate_clip,
    remove_incomplete,
    write_clip,
    write_features,
)
from .frame_store import FrameStore, FrameStoreError
from .manifest import assign_splits, build_manifest, read_manifest, split_clips
from .video import VideoError, iter_frames, probe_video, read_frames, write_video

__all__ = [
    "BACKGROUND", "CLIP_ARRAYS", "CLIP_FORMAT_VERSION", "FACE", "HAIR_TORSO", "Clip", "ClipData",
    "ClipError", "FrameStore", "FrameStoreError", "VideoError", "assign_splits", "build_manifest", "iter_frames", "list_clips",
    "migrate_clip", "probe_video", "read_frames", "read_manifest", "remove_incomplete", "split_clips", "write_clip",
    "write_video", "write_features",
]
