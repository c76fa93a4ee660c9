"""The person's video -> one clip in the training format (docs/architecture.md, "Data contracts").

Personalisation trains stage 2 on (source, driving) pairs of one person, as stage 2's own
training does, so the video is prepared like a training clip: decoded at 25 fps, tracked by
MediaPipe, cut with **one** crop box (the clip's FOMM-style box around every frame's face, so
that the source frame and every driving frame share the crop), fitted, labelled
(face / hair-torso / background) and written through :mod:`vividtalk.data`.

Resuming: the clip is written atomically with the video's size, mtime and the settings in its
meta; a later call with the same video and settings returns it without work, anything else
prepares it again. Frames are decoded twice (tracking, then cropping) rather than held at full
size: a few minutes of video at 720p would be gigabytes.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio.align import FPS
from ..audio.io import frames_sound
from ..data import ClipData, write_clip
from ..data.clip import is_clip, read_meta
from ..data.video import VideoError, iter_frames
from ..face.model import FaceModel
from ..face.prepare import FacePreparer, crop_and_fit
from ..face.tracking import NoFaceError, fill_missing

CLIP_ID = "person"
MIN_SECONDS = 2.0
MAX_MISSING = 0.25
"""Refuse a video in which more than this share of the frames shows no face."""
LABEL_CHUNK = 100


def video_signature(path: Path, max_seconds: float, size: int) -> dict:
    """What identifies a preparation: the file (size, mtime) and the settings."""
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "max_seconds": max_seconds, "size": size}


def prepare_person_video(video: str | os.PathLike, work_dir: str | os.PathLike, face: FaceModel,
                         max_seconds: float = 300.0, size: int = 256, progress: bool = True) -> Path:
    """Prepare (or find already prepared) the person's video as the clip ``work_dir/person``.

    Args:
        video: the person's video (any format ffmpeg reads; its sound, if any, is kept).
        work_dir: where the clip goes (created).
        face: the face model of the stages.
        max_seconds: only the first this many seconds are used.
        size: crop side in pixels.
    Returns:
        The clip directory.
    Raises:
        VideoError: missing, unreadable or shorter than 2 s; NoFaceError: no face, or none in
        more than a quarter of the frames.
    """
    path, work = Path(video), Path(work_dir)
    if not path.is_file():
        raise VideoError(f"person video not found: {path}")
    signature = video_signature(path, max_seconds, size)
    if is_clip(work / CLIP_ID) and read_meta(work / CLIP_ID).get("video_signature") == signature:
        return work / CLIP_ID
    limit = int(max_seconds * FPS)
    with FacePreparer(face, size, min_face_size=32) as preparer:
        frames = tqdm(islice(iter_frames(path, fps=FPS), limit), desc="tracking the person's video", unit="frame",
                      disable=not progress)
        landmarks = preparer.tracker.track_video(frames)  # [T, 478, 3], NaN rows without a face
        _check_tracks(landmarks, path)
        landmarks = fill_missing(landmarks)
        frames = tqdm(islice(iter_frames(path, fps=FPS), len(landmarks)), total=len(landmarks), unit="frame",
                      desc="cropping", disable=not progress)
        fitted = crop_and_fit(frames, landmarks, preparer.fitter, size)  # one box for the whole video
        crops, points, fit = fitted.crops, fitted.points, fitted.fit
        chunks = tqdm(range(0, len(crops), LABEL_CHUNK), desc="labelling face / hair / background", unit="chunk",
                      disable=not progress)
        labels = np.concatenate([preparer.labels(crops[i: i + LABEL_CHUNK], points[i: i + LABEL_CHUNK])
                                 for i in chunks])
    arrays = {"vertices": fitted.vertices, "pose": fit.pose.numpy(),
              "beta": fit.beta.numpy(), "lip_offsets": fit.lip_offsets.numpy(), "identity": fit.identity.numpy(),
              "masks": labels, "lip_landmarks": points[:, face.lip_contour().numpy(), :2].astype(np.float32)}
    meta = {"source": str(path), "identity": "person", "face_model_id": face.model_id, "crop_box": fitted.box.to_list(),
            "video_signature": signature, "fit_residual_px": float(fit.residual.mean())}
    work.mkdir(parents=True, exist_ok=True)
    return write_clip(work, CLIP_ID, ClipData(crops, frames_sound(path, len(crops)), arrays, meta))


def _check_tracks(landmarks: np.ndarray, path: Path) -> None:
    if len(landmarks) < MIN_SECONDS * FPS:
        raise VideoError(f"{path} has {len(landmarks)} frames at {FPS} fps; personalisation needs at least "
                         f"{MIN_SECONDS:g} s of the person")
    missing = float(np.isnan(landmarks[:, 0, 0]).mean())
    if missing == 1.0:
        raise NoFaceError(f"no face found in any frame of {path}")
    if missing > MAX_MISSING:
        raise NoFaceError(f"no face in {missing:.0%} of the frames of {path}; use a video in which the person's "
                          f"face is visible throughout (at most {MAX_MISSING:.0%} of the frames without it)")
