"""Real videos -> training clips: ``python -m data_prep videos IN_DIR OUT_DIR``.

Every video under IN_DIR is decoded at 25 fps, tracked, split into face segments (see
:mod:`data_prep.video_segments`) and each segment of at least ``min_frames`` frames is
written as a clip ``<stem>-<k:03d>`` through :mod:`vividtalk.data`. Then ``manifest.json``
(splits by identity) and ``prep_report.json`` (one entry per video) are written.

Resuming: ``OUT_DIR/.prep/<hash of the path>.json`` records a finished video (its size,
mtime and the output-affecting settings); it is written only after all of the video's clips.
A rerun skips recorded videos and redoes the others after deleting their partial clips, so
an interrupted run never leaves duplicates, and clips are written atomically by
``write_clip``. Bad inputs (unreadable, empty, faceless, too short) get a report entry and
never stop the run. Statuses: ``ok`` (clips written; ``reason`` says which frames when only
part of the video has a face), ``no_face``, ``too_short`` (a face, but never for
``min_frames`` frames in a row), ``failed`` (unreadable, corrupt, zero-length) and
``skipped_done`` (finished by an earlier run). Videos without audio are kept (flagged: stage
2 only).

Example::

    python -m data_prep videos ~/voxceleb/mp4 ~/corpus --identity parent --workers 8

Each worker is a spawned process pinned to one core; ``--workers 1`` runs in this process.

On a cluster, two ways (both resumable through the same state files, so they mix):

- ``--engine ray [--address auto]``: one Ray task per video on a Ray cluster (see
  :mod:`data_prep.cluster`; ``pip install -e '.[cluster]'``); this process gathers the
  entries and writes the report and the manifest.
- ``--shard K/N``, for job arrays without Ray: this run processes only the videos whose index
  in the sorted list of videos is K modulo N, writes ``prep_report.shard-K-of-N.json`` and no
  manifest (a shard cannot see the others' clips). Once every shard has finished, one run
  without ``--shard`` skips all the finished videos, redoes any a shard did not finish, and
  writes ``prep_report.json`` and ``manifest.json``. E.g. with Slurm::

      vividtalk-prep videos IN OUT --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
      vividtalk-prep videos IN OUT            # afterwards, once

  Every shard must see the same videos (do not add videos while shards run).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import queue
import re
import resource
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from vividtalk.audio import load_audio
from vividtalk.audio.align import FPS
from vividtalk.audio.io import AudioError, NoAudioStreamError, UnreadableMediaError, probe_streams
from vividtalk.data import VideoError, build_manifest, iter_frames, probe_video, remove_incomplete, write_clip
from vividtalk.face import MediaPipeTracker

from . import video_segments as vs

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".flv",
        ".f4v",
        ".mpg",
        ".mpeg",
        ".mpe",
        ".m2v",
        ".ts",
        ".mts",
        ".m2ts",
        ".wmv",
        ".3gp",
        ".3g2",
        ".ogv",
        ".vob",
        ".mxf",
        ".dv",
    }
)
STATE_DIR = ".prep"
REPORT = "prep_report.json"
ENGINES = ("local", "ray")
STATE_VERSION = 1
STATUSES = ("ok", "no_face", "too_short", "failed", "skipped_done")


@dataclass
class PrepSettings:
    """Options that change the output (a change makes finished videos be redone)."""

    size: int = 256
    min_frames: int = 25
    identity: str = "file"
    split: vs.SplitSettings = field(default_factory=vs.SplitSettings)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class VideoJob:
    """One input video and where its outputs go."""

    path: str  # absolute
    rel: str  # relative to IN_DIR, posix
    stem: str  # clip id prefix, unique in the run
    identity: str
    out_dir: str
    state_path: str


# --------------------------------------------------------------------------- discovery
def find_videos(in_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Video files under ``in_dir`` (recursive, by extension; hidden entries, broken links
    and ``exclude`` skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(in_dir):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (exclude is None or here / d != exclude)
        )
        names = [f for f in files if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS]
        found += [here / f for f in names if (here / f).is_file()]  # (not broken links)
    return sorted(found)


def _safe(name: str) -> str:
    """A name usable as (part of) a clip id: [A-Za-z0-9._-], no leading dot."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "video"


def clip_stems(videos: list[Path], in_dir: Path) -> dict[Path, str]:
    """Clip id prefix per video: its stem, or (when stems collide, e.g. VoxCeleb's
    ``id/url/00001.mp4``) its relative path joined by ``_``; a hash settles what is left."""
    plain = {v: _safe(v.stem) for v in videos}
    counts: dict[str, int] = {}
    for s in plain.values():
        counts[s] = counts.get(s, 0) + 1
    stems, used = {}, set()
    for v in videos:
        stem = (
            plain[v]
            if counts[plain[v]] == 1
            else _safe("_".join(v.relative_to(in_dir).with_suffix("").parts))
        )
        if stem in used:
            stem = f"{stem}_{hashlib.sha1(str(v).encode()).hexdigest()[:6]}"
        used.add(stem)
        stems[v] = stem
    return stems


def make_jobs(in_dir: Path, out_dir: Path, identity: str) -> list[VideoJob]:
    """Jobs for every video under ``in_dir``; identity = file stem or parent folder name."""
    videos = find_videos(in_dir, exclude=out_dir)
    stems = clip_stems(videos, in_dir)
    jobs = []
    for v in videos:
        who = v.stem if identity == "file" else v.parent.name
        key = hashlib.sha1(str(v.resolve()).encode()).hexdigest()[:16]
        jobs.append(
            VideoJob(
                str(v.resolve()),
                v.relative_to(in_dir).as_posix(),
                stems[v],
                who,
                str(out_dir),
                str(out_dir / STATE_DIR / f"{key}.json"),
            )
        )
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard K/N`` -> (K, N) with 0 <= K < N (an argparse ``type``)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected K/N (this job's shard K of N, counted from 0: 0/4 ... 3/4), got {text!r}"
        )
    shard = int(match[1]), int(match[2])
    check_shard(shard, argparse.ArgumentTypeError)
    return shard


def check_shard(shard: tuple[int, int], error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``shard`` is (K, N) with N >= 1 and 0 <= K < N."""
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise error(f"shard K/N needs N >= 1 and 0 <= K < N (K counts from 0), got {k}/{n}")


def shard_jobs(jobs: list[VideoJob], shard: tuple[int, int]) -> list[VideoJob]:
    """The jobs of shard (K, N): those whose index in ``jobs`` (sorted by path) is K mod N.
    Clip stems were settled over all the videos, so every shard names clips the same way."""
    k, n = shard
    return [job for i, job in enumerate(jobs) if i % n == k]


def report_name(shard: tuple[int, int] | None) -> str:
    """The report's file name: ``prep_report.json``, or one per shard (``prep_report.shard-K-of-N.json``)."""
    return REPORT if shard is None else f"{Path(REPORT).stem}.shard-{shard[0]}-of-{shard[1]}.json"


# ------------------------------------------------------------------------ resume state
def file_signature(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_state(job: VideoJob, settings: PrepSettings) -> dict | None:
    """The recorded entry of a finished video, or None when it must be (re)done."""
    try:
        state = json.loads(Path(job.state_path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("entry"), dict):
        return None
    fresh = (
        state.get("version") == STATE_VERSION
        and state.get("path") == job.path
        and state.get("signature") == file_signature(job.path)
        and state.get("settings") == settings.fingerprint()
    )
    clips_there = all(
        (Path(job.out_dir) / c / "meta.json").is_file() for c in state["entry"].get("clips", [])
    )
    return state["entry"] if fresh and clips_there else None


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def remove_video_clips(job: VideoJob) -> None:
    """Delete clips left by an unfinished or outdated run of this video (ids ``stem-NNN``)."""
    pattern = re.compile(re.escape(job.stem) + r"-\d{3}")
    for p in Path(job.out_dir).iterdir():
        if p.is_dir() and pattern.fullmatch(p.name):
            shutil.rmtree(p)


# ------------------------------------------------------------------- one video, worker
class InputError(ValueError):
    """A video that cannot be used as it is (unreadable, empty): reported, not retried."""


def describe_unreadable(path: str, err: Exception) -> str:
    """A human-readable reason why ffmpeg cannot read ``path`` as a video (from
    :func:`~vividtalk.audio.io.probe_streams`: whether it opens, whether it has a video track)."""
    if os.path.getsize(path) == 0:
        return "zero-length file (0 bytes)"
    try:
        streams = probe_streams(path)
    except UnreadableMediaError:
        return "unreadable or corrupt file: ffmpeg cannot open it as a video"
    if not streams.video:
        return "zero-length video: the file has no video stream (empty, or audio only)"
    return (
        f"unreadable video: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}"
    )


def inspect_video(path: str) -> dict:
    """``probe_video`` facts, or InputError with a clear reason."""
    try:
        return probe_video(path)
    except VideoError as err:
        raise InputError(describe_unreadable(path, err)) from err


def decode(path: str):
    """Frames at a constant 25 fps (ffmpeg's fps filter: odd and variable frame rates too):
    uint8 [H, W, 3] each. Decoding errors become InputError."""
    count = 0
    try:
        for frame in iter_frames(path, fps=FPS):
            count += 1
            yield frame
    except VideoError as err:
        raise InputError(describe_unreadable(path, err)) from err
    except (RuntimeError, OSError) as err:
        raise InputError(
            f"corrupt video: decoding failed after {count} frames ({str(err).splitlines()[0]})"
        ) from err


def read_audio(path: str) -> tuple:
    """The video's audio at 16 kHz (float32 [N]) or None, with a note when None."""
    try:
        return load_audio(path), None
    except NoAudioStreamError:
        return None, "no audio track: clips kept without audio (usable for stage 2 only)"
    except AudioError as err:
        return None, f"audio track unreadable ({err}): clips kept without audio (stage 2 only)"


def new_entry(job: VideoJob) -> dict:
    """A report entry before processing (status ``failed`` until shown otherwise)."""
    return {
        "video": job.rel,
        "source": job.path,
        "identity": job.identity,
        "status": "failed",
        "reason": "",
        "notes": [],
        "clips": [],
        "frames": 0,
        "frames_kept": 0,
        "kept_ranges": [],
        "dropped": [],
        "has_audio": False,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished children (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def frame_ranges(ranges: list) -> str:
    """[[0, 50], [60, 90]] -> '0-49, 60-89' (inclusive frame numbers at 25 fps)."""
    return ", ".join(f"{a}-{b - 1}" for a, b in ranges)


class VideoProcessor:
    """Turns one video into clips; holds the tracker, face model and segmenter (build one
    per process: MediaPipe graphs are slow to build and not shareable)."""

    def __init__(self, settings: PrepSettings) -> None:
        self.settings = settings
        self.single = MediaPipeTracker(max_num_faces=1, min_face_size=vs.MIN_FACE_SIZE)
        self.multi = MediaPipeTracker(max_num_faces=4, min_face_size=vs.MIN_FACE_SIZE)
        self.counter = vs.FaceCounter()
        self.tools = vs.ClipTools.create(settings.size)

    def __call__(self, job: VideoJob, progress=lambda n: None) -> dict:
        """Process ``job``; returns its report entry. Never raises for a bad video."""
        start, cpu, entry, record = time.perf_counter(), cpu_seconds(), new_entry(job), True
        try:
            remove_video_clips(job)
            self._process(job, entry, progress)
        except InputError as err:
            entry.update(status="failed", reason=str(err))
        except Exception as err:  # noqa: BLE001 (a bug or resource problem: report it, retry next run)
            entry.update(
                status="failed",
                reason=f"unexpected error: {type(err).__name__}: {err}",
                traceback=traceback.format_exc(limit=5),
            )
            record = False
        if entry["status"] == "failed":
            remove_video_clips(job)  # no half-finished video in the corpus
            entry.update(clips=[], frames_kept=0, kept_ranges=[])
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entry["cpu_seconds"] = round(cpu_seconds() - cpu, 3)
        if record and os.path.isfile(job.path):  # (a video deleted meanwhile is not recorded)
            state = {
                "version": STATE_VERSION,
                "path": job.path,
                "signature": file_signature(job.path),
                "settings": self.settings.fingerprint(),
                "entry": entry,
            }
            write_json_atomic(Path(job.state_path), state)
        return entry

    def _process(self, job: VideoJob, entry: dict, progress) -> None:
        info = inspect_video(job.path)
        entry.update(source_fps=info["fps"], source_size=list(info["size"]), duration=info["duration"])
        audio, audio_note = read_audio(job.path)
        entry["has_audio"] = audio is not None
        if audio_note:
            entry["notes"].append(audio_note)
        meta = {
            "source": job.path,
            "video": job.rel,
            "identity": job.identity,
            "face_model_id": self.tools.preparer.face.model_id,
            "source_fps": info["fps"],
            "source_size": list(info["size"]),
            "tracker": "mediapipe-facemesh-478",
        }
        stats = vs.VideoStats()
        tracker = vs.FrameTracker(self.single, self.multi, self.counter)
        try:
            observations = vs.observe(decode(job.path), tracker, stats, lambda: progress(1))
            for segment in vs.split_segments(observations, self.settings.split, stats):
                self._segment(job, entry, segment, audio, meta)
        finally:
            tracker.close()
        if tracker.multi_from is not None:
            entry["several_faces_from"] = tracker.multi_from  # frame where several-face tracking began
        classify(entry, stats, self.settings)

    def _segment(self, job: VideoJob, entry: dict, segment: vs.Segment, audio, meta: dict) -> None:
        """Write one segment as a clip, or record it as dropped when too short."""
        span = [segment.start, segment.stop]
        if len(segment) < self.settings.min_frames:
            entry["dropped"].append(
                {
                    "frames": span,
                    "reason": f"too short ({len(segment)} < "
                    f"{self.settings.min_frames} frames), ended by {segment.end_reason}",
                }
            )
            return
        clip_id = f"{job.stem}-{len(entry['clips']):03d}"
        data = vs.build_clip(self.tools, segment, audio, {**meta, "segment": len(entry["clips"])})
        write_clip(job.out_dir, clip_id, data)
        if "audio_note" in data.meta:
            entry["notes"].append(f"{clip_id}: {data.meta['audio_note']}")
        entry["clips"].append(clip_id)
        entry["kept_ranges"].append(span)
        entry["frames_kept"] += span[1] - span[0]

    def close(self) -> None:
        self.tools.close()
        self.counter.close()
        self.single.close()
        self.multi.close()


def video_notes(entry: dict, stats: vs.VideoStats) -> list[str]:
    """Human-readable remarks on a processed video: truncation, several faces, small faces,
    where it was split, which face runs were dropped."""
    n, notes = stats.frames, []
    expected = round(entry.get("duration", 0.0) * FPS)
    if n < 0.9 * expected - 2:
        notes.append(f"only {n} of the {expected} frames its header announces could be decoded (truncated?)")
    if stats.multi_face:
        several = f"several faces (up to {stats.max_faces}) in {stats.multi_face} of {n} frames"
        notes.append(f"{several}: the largest was used")
    if stats.too_small:
        notes.append(f"face smaller than {vs.MIN_FACE_SIZE} px in {stats.too_small} frames (not used)")
    notes += [f"split at frame {i}: {why}" for i, why in stats.cuts if why != "maximum clip length"]
    notes += [f"frames {frame_ranges([d['frames']])} dropped: {d['reason']}" for d in entry["dropped"]]
    return notes


def classify(entry: dict, stats: vs.VideoStats, settings: PrepSettings) -> None:
    """Status, reason and notes of a processed video (fills ``entry``): ``ok`` with at
    least one clip, else ``too_short`` when a face was tracked but never long enough, else
    ``no_face``. Raises InputError for a video without frames."""
    n = stats.frames
    entry.update(frames=n, max_faces=stats.max_faces, frames_without_face=stats.no_face)
    if n == 0:
        raise InputError("zero-length video: no frames could be decoded")
    entry["notes"] += video_notes(entry, stats)
    if entry["clips"]:
        entry["status"] = "ok"
        if entry["frames_kept"] < n:
            kept = frame_ranges(entry["kept_ranges"])
            entry["reason"] = f"face only in part: kept frames {kept} of 0-{n - 1}"
    elif entry["dropped"]:
        longest = max(d["frames"][1] - d["frames"][0] for d in entry["dropped"])
        entry["status"] = "too_short"
        entry["reason"] = (
            f"the face is tracked for at most {longest} consecutive frames "
            f"({longest / FPS:.2f} s); at least {settings.min_frames} are needed"
        )
    else:
        small = f" (faces under {vs.MIN_FACE_SIZE} px in {stats.too_small} frames are not used)"
        entry["status"] = "no_face"
        entry["reason"] = f"no face found in any of the {n} frames" + (small if stats.too_small else "")


# ---------------------------------------------------------------------- running a batch
_WORKER: dict = {}


def _init_worker(settings: PrepSettings, progress_queue, counter) -> None:
    """Spawned worker: its own models, pinned to one CPU core (MediaPipe's thread pools and
    x264 otherwise spread over every core and spin; ffmpeg children inherit the pinning),
    with one thread for torch and OpenCV."""
    with counter.get_lock():
        index, counter.value = counter.value, counter.value + 1
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[index % len(cores)]})
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER.update(processor=VideoProcessor(settings), queue=progress_queue)


def _work(job: VideoJob) -> dict:
    """Process one job in a worker, sending frame counts to the parent every 25 frames."""
    pending = [0]

    def progress(n: int) -> None:
        pending[0] += n
        if pending[0] >= FPS:
            _WORKER["queue"].put(pending[0])
            pending[0] = 0

    entry = _WORKER["processor"](job, progress)
    _WORKER["queue"].put(pending[0])
    return entry


def crashed_entry(job: VideoJob, err: BaseException) -> dict:
    """Entry of a video whose worker died (not recorded: the next run retries it)."""
    entry = new_entry(job)
    entry["reason"] = f"worker crashed ({type(err).__name__}: {err}); rerun to retry this video"
    return entry


def run_serial(jobs: list[VideoJob], settings: PrepSettings, bars) -> list[dict]:
    """Process jobs in this process (``--workers 1``)."""
    processor = VideoProcessor(settings)
    entries = []
    try:
        for job in jobs:
            entries.append(processor(job, bars.frames.update))
            bars.video_done(entries[-1])
    finally:
        processor.close()
    return entries


def run_parallel(jobs: list[VideoJob], settings: PrepSettings, workers: int, bars) -> list[dict]:
    """Process jobs in ``workers`` spawned processes; a crashed worker fails only its videos."""
    ctx = mp.get_context("spawn")
    progress_queue, counter = ctx.Queue(), ctx.Value("i", 0)
    entries = []
    pool = cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(settings, progress_queue, counter)
    )
    try:
        futures = {pool.submit(_work, job): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
            _drain(progress_queue, bars.frames)
            for future in done:
                try:
                    entries.append(future.result())
                except Exception as err:  # noqa: BLE001 (BrokenProcessPool and the like: the worker died)
                    entries.append(crashed_entry(futures[future], err))
                bars.video_done(entries[-1])
    finally:  # on Ctrl-C, do not wait for the queued videos
        pool.shutdown(wait=True, cancel_futures=True)
    _drain(progress_queue, bars.frames)
    return entries


def _drain(progress_queue, bar) -> None:
    """Add the frame counts the workers have sent so far to the frames bar."""
    while True:
        try:
            bar.update(progress_queue.get_nowait())
        except queue.Empty:
            return


class Bars:
    """Two tqdm bars: videos (with the last one's status) and frames (with the frame rate)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.videos = tqdm(total=total, desc="videos", unit="video", disable=not enabled)
        self.frames = tqdm(desc="frames", unit="frame", disable=not enabled, position=1, leave=False)

    def video_done(self, entry: dict) -> None:
        self.videos.set_postfix_str(f"{entry['video']}: {entry['status']}", refresh=False)
        self.videos.update(1)

    def close(self) -> None:
        self.frames.close()
        self.videos.close()


def skipped_entry(previous: dict) -> dict:
    return {
        **previous,
        "status": "skipped_done",
        "previous_status": previous["status"],
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }


def summarise(entries: list[dict], workers: int, wall: float) -> dict:
    """Totals over the report entries. Throughput of the videos processed in this run
    (decode, track, crop, fit, masks and write): frames per second of a worker's wall time,
    and frames per CPU second (this process and its ffmpeg children: per core, whatever
    else the machine runs)."""
    worked = [e for e in entries if e["status"] != "skipped_done"]
    busy = sum(e["seconds"] for e in worked)
    cpu = sum(e.get("cpu_seconds", 0.0) for e in worked)
    frames = sum(e["frames"] for e in worked)
    return {
        "videos": len(entries),
        "status": {s: sum(e["status"] == s for e in entries) for s in STATUSES},
        "clips": sum(len(e["clips"]) for e in entries),
        "clip_frames": sum(e["frames_kept"] for e in entries),
        "clips_without_audio": sum(len(e["clips"]) for e in entries if not e["has_audio"]),
        "frames_processed": frames,
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "fps_per_worker": round(frames / busy, 2) if busy > 0 else None,
        "fps_per_cpu_second": round(frames / cpu, 2) if cpu > 0 else None,
    }


def print_summary(report: dict, out_dir: Path, report_path: Path | None = None) -> None:
    """A short human-readable summary on stdout (``report_path``: where the report went)."""
    t = report["totals"]
    counts = ", ".join(f"{n} {s}" for s, n in t["status"].items() if n)
    print(f"prepared {t['videos']} videos in {t['wall_seconds']:.1f} s: {counts}")
    print(
        f"clips: {t['clips']} ({t['clip_frames']} frames, {t['clip_frames'] / FPS:.1f} s); "
        f"{t['clips_without_audio']} without audio (stage 2 only)"
    )
    if t["fps_per_worker"]:
        print(
            f"throughput: {t['fps_per_worker']:.1f} frames/s per worker, "
            f"{t['fps_per_cpu_second']:.1f} frames per CPU second "
            f"({t['workers']} workers, {t['frames_processed']} frames processed)"
        )
    remarks = [e for e in report["videos"] if e["status"] != "skipped_done" and (e["reason"] or e["notes"])]
    for e in remarks[:20]:
        text = "; ".join(([e["reason"]] if e["reason"] else []) + e["notes"])
        print(f"  {e['video']}: {e['status']}: {text[:300]}")
    if len(remarks) > 20:
        print(f"  ... and {len(remarks) - 20} more (see the report)")
    report_path = report_path or out_dir / REPORT
    if report["manifest_splits"] is None:
        print(f"report: {report_path}; no manifest (shard {report['shard']}): once every shard has finished, "
              "run again without --shard to write it")
        return
    splits = {k: len(v) for k, v in report["manifest_splits"].items()}
    print(f"report: {report_path}; manifest: {out_dir / 'manifest.json'} {splits}")


def check_dirs(in_dir, out_dir) -> tuple[Path, Path]:
    """Both folders, resolved: the input must exist and must not lie inside the output."""
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input directory not found: {in_dir}")
    if in_dir == out_dir or in_dir.is_relative_to(out_dir):
        raise ValueError(f"the output directory {out_dir} must not contain the input directory {in_dir}")
    return in_dir, out_dir


def check_options(settings: PrepSettings, engine: str, shard: tuple[int, int] | None) -> None:
    """ValueError for a bad identity rule, engine or shard; ModuleNotFoundError for the ray
    engine without Ray (before any work)."""
    if settings.identity not in ("file", "parent"):
        raise ValueError(f"identity must be 'file' or 'parent', got {settings.identity!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "ray":
        from .cluster import require_ray

        require_ray()
    if shard is not None:
        check_shard(shard)


def run_jobs(
    todo: list[VideoJob], settings: PrepSettings, workers: int, engine: str, address: str, bars
) -> tuple[list[dict], int]:
    """Process ``todo`` on ``engine``; returns the entries and the number of workers (for
    Ray: the cluster's CPUs; 0 when there was nothing to do and no cluster was joined)."""
    if not todo:
        return [], 0 if engine == "ray" else workers
    if engine == "ray":
        from .cluster import run_ray  # (imports Ray)

        return run_ray(todo, settings, bars, VideoProcessor, crashed_entry, address)
    if workers > 1 and len(todo) > 1:
        return run_parallel(todo, settings, min(workers, len(todo)), bars), workers
    return run_serial(todo, settings, bars), workers


def prepare_videos(
    in_dir,
    out_dir,
    workers: int = 1,
    settings: PrepSettings | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    verbose: bool = True,
    engine: str = "local",
    address: str = "auto",
    shard: tuple[int, int] | None = None,
) -> dict:
    """Prepare every video under ``in_dir`` as clips in ``out_dir`` (resumable).

    ``engine``: ``local`` (``workers`` processes here) or ``ray`` (one task per video on the
    Ray cluster at ``address``, see :mod:`data_prep.cluster`). ``shard=(k, n)``: only the
    videos whose index in the sorted list is k mod n, and no manifest.
    Returns the report (also written to ``out_dir/prep_report.json``, or for a shard to
    ``out_dir/prep_report.shard-k-of-n.json``), after writing the corpus manifest.
    """
    in_dir, out_dir = check_dirs(in_dir, out_dir)
    settings = settings or PrepSettings()
    check_options(settings, engine, shard)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if shard is None:  # (shards run side by side: a temp dir may be another shard's clip being written)
        remove_incomplete(out_dir)  # temp dirs of clips interrupted mid-write
    jobs = make_jobs(in_dir, out_dir, settings.identity)
    if shard is not None:
        jobs = shard_jobs(jobs, shard)
    finished = {job.path: read_state(job, settings) for job in jobs}
    todo = sorted((j for j in jobs if finished[j.path] is None), key=lambda j: -os.path.getsize(j.path))
    bars = Bars(len(jobs), progress)
    try:
        bars.videos.update(len(jobs) - len(todo))
        entries, workers = run_jobs(todo, settings, workers, engine, address, bars)
    finally:
        bars.close()
    by_path = {e["source"]: e for e in entries}
    ordered = [by_path.get(j.path) or skipped_entry(finished[j.path]) for j in jobs]
    manifest = None if shard is not None else build_manifest(out_dir, val_fraction, test_fraction, seed)
    report = {
        "in_dir": str(in_dir),
        "out_dir": str(out_dir),
        "settings": asdict(settings),
        "engine": engine,
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "totals": summarise(ordered, workers, time.perf_counter() - started),
        "manifest_splits": None if manifest is None else manifest["splits"],
        "videos": ordered,
    }
    write_json_atomic(out_dir / report_name(shard), report)
    if verbose:
        print_summary(report, out_dir, out_dir / report_name(shard))
    return report


# -------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``videos`` subcommand's arguments."""
    parser.add_argument(
        "in_dir", help="folder searched recursively for videos (mp4, mov, mkv, avi, webm, ...)"
    )
    parser.add_argument("out_dir", help="corpus folder for the clips, manifest.json and prep_report.json")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1: in this process)")
    parser.add_argument(
        "--identity",
        choices=("file", "parent"),
        default="file",
        help="identity of a video: its file stem (default) or its parent folder (VoxCeleb)",
    )
    parser.add_argument("--min-frames", type=int, default=25, help="shorter face segments are dropped")
    parser.add_argument(
        "--max-frames",
        type=int,
        default=250,
        help="longer segments are cut into clips of at most this many frames (default 10 s); "
        "bounds memory: one segment's frames are held at source resolution, "
        "250 frames of 720p are 0.7 GB per worker",
    )
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument(
        "--shot-threshold",
        type=float,
        default=0.5,
        help="colour-histogram distance (0..1) between frames that marks a shot change",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cluster_arguments(parser)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine``, ``--address`` and ``--shard``: preparing a corpus on many machines."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: --workers processes on this machine (default); ray: one Ray task per video on "
        "the Ray cluster at --address (pip install -e '.[cluster]')",
    )
    parser.add_argument(
        "--address",
        default="auto",
        help="with --engine ray: the cluster, 'auto' (default: the one `ray start` began here, or "
        "RAY_ADDRESS), HOST:PORT, ray://HOST:PORT, or 'local' (a new Ray instance on this machine)",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        metavar="K/N",
        help="process only the videos whose index in the sorted list is K mod N (K from 0; for job "
        "arrays), write prep_report.shard-K-of-N.json and no manifest; when all N shards are done, "
        "one run without --shard skips their videos and writes the manifest",
    )


def run_cli(args: argparse.Namespace) -> int:
    """Run from parsed arguments; 0 when the batch ran (bad videos are reported, not fatal)."""
    if args.workers < 1 or args.min_frames < 1 or args.max_frames < args.min_frames:
        raise SystemExit("need --workers >= 1 and 1 <= --min-frames <= --max-frames")
    if args.engine == "ray":
        if args.workers != 1:
            raise SystemExit("--workers is for --engine local: Ray runs one task per CPU of its cluster")
        from .cluster import require_ray

        try:
            require_ray()  # before scanning the videos
        except ImportError as err:
            raise SystemExit(f"vividtalk-prep videos: error: {err}") from err
    settings = PrepSettings(
        size=args.size,
        min_frames=args.min_frames,
        identity=args.identity,
        split=vs.SplitSettings(max_frames=args.max_frames, shot_threshold=args.shot_threshold),
    )
    if not Path(args.in_dir).is_dir():
        print(f"input directory not found: {args.in_dir}")
        return 1
    if not find_videos(Path(args.in_dir).resolve(), exclude=Path(args.out_dir).resolve()):
        print(f"no videos found under {args.in_dir}")
        return 1
    prepare_videos(
        args.in_dir,
        args.out_dir,
        args.workers,
        settings,
        args.val_fraction,
        args.test_fraction,
        args.seed,
        progress=not args.no_progress,
        engine=args.engine,
        address=args.address,
        shard=args.shard,
    )
    return 0
