"""One video -> face segments -> clips: the streaming core of ``python -m data_prep videos``.

Frames arrive one at a time at 25 fps. Each is tracked (MediaPipe Face Mesh in tracking
mode) and summarised by a colour histogram; a segment ends where the face is lost, the shot
changes (histogram jump or landmark jump) or the segment reaches its maximum length. Only
the current segment's frames are held in memory. A finished segment becomes a clip: the
fixed crop box, 256 x 256 crops, the fitted face model, lip landmarks, masks and audio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from vividtalk.data import ClipData
from vividtalk.audio.align import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from vividtalk.face import FaceModel, MediaPipeTracker
from vividtalk.face.mediapipe_tracker import FaceDetector
from vividtalk.face.prepare import FacePreparer, FittedCrops, crop_and_fit
from vividtalk.face.tracking import face_size

HIST_BINS = 8  # per channel: a coarse 8x8x8 RGB histogram is enough to see a cut
MIN_FACE_SIZE = 64  # pixels: smaller faces are not tracked well enough to train on


@dataclass
class SplitSettings:
    """How a video is split into segments.

    Attributes:
        max_frames: longest segment (longer runs are cut into consecutive clips); bounds the
            frames held in memory.
        shot_threshold: histogram distance (total variation in [0, 1]) between consecutive
            frames above which a shot change is declared.
        jump_threshold: landmark-centre jump between consecutive frames, as a fraction of
            the face size, above which the tracked face is taken to be a different shot/face.
        scale_jump: face-size ratio between consecutive frames above which the same holds.
    """

    max_frames: int = 250
    shot_threshold: float = 0.5
    jump_threshold: float = 0.3
    scale_jump: float = 1.3


@dataclass
class Observation:
    """One decoded frame and what the tracker saw in it.

    Attributes:
        index: frame index at 25 fps.
        frame: uint8 [H, W, 3] RGB.
        landmarks: float32 [478, 3] source pixels of the largest face, or None (no usable face).
        faces: number of faces found (before the size check).
        hist: float32 [HIST_BINS**3] normalised colour histogram.
    """

    index: int
    frame: np.ndarray
    landmarks: np.ndarray | None
    faces: int
    hist: np.ndarray


@dataclass
class Segment:
    """Consecutive frames with one tracked face: frames [start, start + len)."""

    start: int
    frames: list = field(default_factory=list)  # uint8 [H, W, 3] each
    landmarks: list = field(default_factory=list)  # float32 [478, 3] each
    faces: list = field(default_factory=list)  # int each
    end_reason: str = "end of video"

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)


@dataclass
class VideoStats:
    """Per-video counters filled while observing frames (for the report)."""

    frames: int = 0
    no_face: int = 0
    too_small: int = 0
    multi_face: int = 0
    max_faces: int = 0
    cuts: list = field(default_factory=list)  # (frame index, reason)


# ----------------------------------------------------------------------------- tracking
class FaceCounter:
    """Counts faces in a frame with MediaPipe's short-range detector (the one inside Face
    Mesh), its graph kept open."""

    def __init__(self, min_confidence: float = 0.5, min_side: float = 20.0) -> None:
        self._detector = FaceDetector(min_confidence, full_range=False)
        self.min_side = min_side

    def __call__(self, frame: np.ndarray) -> int:
        """Faces at least ``min_side`` pixels wide in an RGB uint8 frame [H, W, 3]."""
        boxes = self._detector(frame)[0]
        return int((boxes[:, 2] - boxes[:, 0] >= self.min_side).sum())

    def close(self) -> None:
        self._detector.close()


class FrameTracker:
    """MediaPipe Face Mesh in tracking mode, fed one frame at a time.

    The streaming form of :meth:`MediaPipeTracker.track_video` (which needs the whole
    sequence before it returns), reusing the trackers' graph settings and pixel conversion.
    Speed: a one-face graph re-runs its detector only when the face is lost, while a
    several-face graph runs it on every frame (about 3 ms). So tracking starts with one face,
    and a detector looks every ``check_every`` frames; once it sees several faces the
    several-face graph takes over for the rest of the video, so that the largest face is used.

    Args:
        single, multi: trackers with ``max_num_faces`` 1 and > 1.
        counter: counts faces in a frame.
    """

    def __init__(
        self, single: MediaPipeTracker, multi: MediaPipeTracker, counter: FaceCounter, check_every: int = 10
    ) -> None:
        self._tracker, self._multi, self._counter = single, multi, counter
        self._stream = single.stream()
        self.check_every = check_every
        self.frames = 0
        self.multi_from: int | None = None  # frame where several-face tracking began

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, int, bool]:
        """frame uint8 [H, W, 3] -> (largest face float32 [478, 3] or None, faces found,
        whether the largest face was dropped for being under the minimum size)."""
        if self.multi_from is None and self.frames % self.check_every == 0 and self._counter(frame) > 1:
            self._stream.close()
            self._tracker, self._stream, self.multi_from = self._multi, self._multi.stream(), self.frames
        self.frames += 1
        faces = self._stream.faces(frame)
        if not faces:
            return None, 0, False
        face = max(faces, key=face_size)
        if face_size(face) < self._tracker.min_face_size:
            return None, len(faces), True
        return face, len(faces), False

    def close(self) -> None:
        self._stream.close()


def color_histogram(frame: np.ndarray) -> np.ndarray:
    """Normalised coarse RGB histogram of about 64 x 64 pixels sampled on a grid (cheaper
    than resizing a large frame): float32 [HIST_BINS**3]."""
    h, w = frame.shape[:2]
    thumb = frame[:: max(1, h // 64), :: max(1, w // 64)]
    bins = (thumb // (256 // HIST_BINS)).reshape(-1, 3).astype(np.int32)
    flat = (bins[:, 0] * HIST_BINS + bins[:, 1]) * HIST_BINS + bins[:, 2]
    return (np.bincount(flat, minlength=HIST_BINS**3) / len(flat)).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance of two normalised histograms, in [0, 1]."""
    return 0.5 * float(np.abs(a - b).sum())


def landmark_jump(prev: np.ndarray, cur: np.ndarray, settings: SplitSettings) -> bool:
    """Whether the face jumps between consecutive frames (a cut between two shots of a
    face, or the tracker switching to another person). prev, cur: [N, 2+] pixels."""
    size_prev, size_cur = face_size(prev), face_size(cur)
    shift = np.linalg.norm(cur[:, :2].mean(0) - prev[:, :2].mean(0)) / max(size_prev, 1.0)
    ratio = max(size_prev, size_cur) / max(min(size_prev, size_cur), 1.0)
    return bool(shift > settings.jump_threshold or ratio > settings.scale_jump)


def observe(
    frames: Iterable[np.ndarray], tracker: FrameTracker, stats: VideoStats, on_frame: Callable[[], None]
) -> Iterator[Observation]:
    """Track and summarise each frame (uint8 [H, W, 3]); counts go to ``stats``."""
    for index, frame in enumerate(frames):
        landmarks, faces, small = tracker(frame)
        stats.frames += 1
        stats.max_faces = max(stats.max_faces, faces)
        stats.multi_face += faces > 1
        stats.too_small += small
        stats.no_face += faces == 0
        on_frame()
        yield Observation(index, frame, landmarks, faces, color_histogram(frame))


def cut_reason(prev: Observation | None, obs: Observation, settings: SplitSettings) -> str | None:
    """Why a segment must end before ``obs`` (None: it continues)."""
    if obs.landmarks is None:
        return "face lost"
    if prev is None:
        return None
    if histogram_distance(prev.hist, obs.hist) > settings.shot_threshold:
        return "shot change"
    if prev.landmarks is not None and landmark_jump(prev.landmarks, obs.landmarks, settings):
        return "face jump"
    return None


def split_segments(
    observations: Iterable[Observation], settings: SplitSettings, stats: VideoStats
) -> Iterator[Segment]:
    """Group consecutive frames with a face into segments (only the open one is kept in
    memory); cuts that end a segment are recorded in ``stats.cuts``."""
    current, prev = None, None
    for obs in observations:
        reason = cut_reason(prev, obs, settings)
        if current is not None and reason is None and len(current) >= settings.max_frames:
            reason = "maximum clip length"
        if current is not None and reason is not None:
            current.end_reason = reason
            if reason != "face lost":
                stats.cuts.append((obs.index, reason))
            yield current
            current = None
        if obs.landmarks is not None:
            current = current if current is not None else Segment(start=obs.index)
            current.frames.append(obs.frame)
            current.landmarks.append(obs.landmarks)
            current.faces.append(obs.faces)
        prev = obs
    if current is not None:
        yield current


# --------------------------------------------------------------------------- clip build
@dataclass
class ClipTools:
    """What building a clip needs, built once per worker: the face preparation (its person
    segmenter's graph kept open) and the lip contour's vertex indices."""

    preparer: FacePreparer
    lip_indices: np.ndarray

    @classmethod
    def create(cls, size: int = 256) -> ClipTools:
        model = FaceModel.default()
        return cls(FacePreparer(model, size), model.lip_contour().numpy())

    def close(self) -> None:
        self.preparer.close()


def fit_segment(tools: ClipTools, segment: Segment) -> FittedCrops:
    """The segment's fixed crop box, crops uint8 [T, S, S, 3], landmarks in crop pixels
    [T, 478, 3] and the face model fitted to them (identity per segment). Releases the
    full-size frames."""
    fitted = crop_and_fit(segment.frames, np.stack(segment.landmarks), tools.preparer.fitter, tools.preparer.size)
    segment.frames.clear()  # the full-size frames are no longer needed
    return fitted


def segment_audio(audio: np.ndarray | None, start: int, stop: int, min_cover: float = 0.9):
    """The audio of frames [start, stop): float32 [(stop-start)*640] or None.

    A track that ends a little early is padded with silence; a segment less than
    ``min_cover`` covered by the track gets no audio. Returns (audio or None, note or None).
    """
    if audio is None:
        return None, None
    n = (stop - start) * SAMPLES_PER_FRAME
    piece = audio[start * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME]
    if len(piece) < min_cover * n:
        covered = f"{len(piece) / SAMPLE_RATE:.2f} s of {n / SAMPLE_RATE:.2f} s"
        return None, f"the audio track ends before this segment ({covered}): no audio"
    if len(piece) < n:
        note = f"audio padded with {(n - len(piece)) / SAMPLE_RATE:.2f} s of silence (the track ends early)"
        return np.pad(piece, (0, n - len(piece))).astype(np.float32), note
    return piece.astype(np.float32, copy=False), None


def build_clip(tools: ClipTools, segment: Segment, audio: np.ndarray | None, meta: dict) -> ClipData:
    """A clip from one segment; ``meta`` is the provenance shared by the video's clips."""
    start, stop = segment.start, segment.stop
    fitted = fit_segment(tools, segment)
    fit, points = fitted.fit, fitted.points
    arrays = {"vertices": fitted.vertices, "pose": fit.pose.numpy(), "beta": fit.beta.numpy(),
              "lip_offsets": fit.lip_offsets.numpy(), "identity": fit.identity.numpy(),
              "masks": tools.preparer.labels(fitted.crops, points), "lip_landmarks": points[:, tools.lip_indices, :2]}
    clip_audio, audio_note = segment_audio(audio, start, stop)
    clip_meta = {
        **meta,
        "crop_box": fitted.box.to_list(),
        "frame_range": [start, stop],
        "time_range": [start / FPS, stop / FPS],
        "max_faces": int(max(segment.faces)),
        "fit_residual_px": float(fit.residual.mean()),
        "lip_landmark_indices": tools.lip_indices.tolist(),
        "segment_end": segment.end_reason,
    }
    if audio_note:
        clip_meta["audio_note"] = audio_note
    return ClipData(fitted.crops, clip_audio, arrays, clip_meta)
