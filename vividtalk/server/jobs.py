"""The job queue of ``POST /v1/generate``: a bounded queue and ONE worker thread.

One worker because the pipeline is not thread-safe and torch already spreads one generation
over every core; a second worker would only make both slower. ``capacity`` jobs may wait (the
running one not counted); :meth:`JobQueue.submit` refuses more with :class:`QueueFull` (the
server answers 503 with a Retry-After estimate).

Each job owns a folder (the folder its request was read into): its decoded inputs
(``image.npy``, ``audio.npy``) are removed when it finishes, done or failed; a done job leaves
``video.mp4`` there, written under a temporary name and renamed (never a partial mp4), and the
job turns "done" only after the rename. A failed job's folder is removed at once.

Retention: the last ``keep_jobs`` (32) finished jobs are kept, each for at most
``keep_seconds`` (600: 10 minutes) after it finished, whichever comes first; then its record
and its folder (the video) are deleted and the job is unknown (404). The worker prunes after
each job and every ``janitor_seconds`` when idle.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

log = logging.getLogger("vividtalk.server")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
VIDEO_NAME = "video.mp4"


class QueueFull(Exception):
    """The queue holds ``capacity`` waiting jobs; ``retry_after`` estimates when to try again (s)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; try again in about {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One generation: its folder, options (keyword arguments of ``pipe.plan``) and state.

    ``progress`` is 0..1: the share of frames rendered (planning counts as 0, the mp4 in place
    as 1); ``frames`` the number of frames (known once planned); ``error`` the message when failed.
    """

    id: str
    dir: Path
    options: dict
    status: str = QUEUED
    progress: float = 0.0
    frames: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def video(self) -> Path:
        return self.dir / VIDEO_NAME

    def to_json(self) -> dict:
        out = {"job": self.id, "status": self.status, "progress": round(self.progress, 4), "frames": self.frames,
               "error": self.error}
        if self.status == DONE:
            out["video"] = f"/v1/jobs/{self.id}/video"
        return out


def new_job_id() -> str:
    """An unguessable id (122 random bits): knowing it is what lets a client read a job."""
    return uuid.uuid4().hex


class JobQueue:
    """Waiting jobs, the running one, and the finished ones still kept (see the module docstring).

    Args:
        runner: ``runner(job)`` generates ``job.video`` (raising on failure) and may update
            ``job.progress`` / ``job.frames``; called on the worker thread only.
        capacity: the most jobs waiting; keep_jobs, keep_seconds: retention of finished jobs.
        janitor_seconds: how often an idle worker prunes.
    """

    def __init__(self, runner: Callable[[Job], None], capacity: int, keep_jobs: int = 32,
                 keep_seconds: float = 600.0, janitor_seconds: float = 10.0) -> None:
        self.runner, self.capacity = runner, capacity
        self.keep_jobs, self.keep_seconds, self.janitor_seconds = keep_jobs, keep_seconds, janitor_seconds
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._durations: deque[float] = deque(maxlen=8)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="vividtalk-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, drop the waiting ones (their folders removed), wait for the running
        one up to ``timeout`` s (a torch call cannot be interrupted), delete the finished ones."""
        with self._cond:
            self._stopping = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in dropped:
            shutil.rmtree(job.dir, ignore_errors=True)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            for job in self._finished.values():
                shutil.rmtree(job.dir, ignore_errors=True)
            self._finished.clear()

    # ------------------------------------------------------------------ clients' side
    def submit(self, job: Job) -> Job:
        """Queue ``job``. Raises QueueFull when ``capacity`` jobs are waiting (the caller still
        owns ``job.dir`` then)."""
        with self._cond:
            self._prune_locked()
            if self._stopping or len(self._waiting) >= self.capacity:
                raise QueueFull(self._retry_after_locked())
            self._waiting.append(job)
            self._cond.notify()
        return job

    def full(self) -> int | None:
        """None when a job would be taken now, else the Retry-After estimate in seconds."""
        with self._cond:
            return self._retry_after_locked() if len(self._waiting) >= self.capacity else None

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            self._prune_locked()
            if self._running is not None and self._running.id == job_id:
                return self._running
            return self._finished.get(job_id) or next((j for j in self._waiting if j.id == job_id), None)

    def open_video(self, job_id: str) -> tuple[Job, BinaryIO | None] | None:
        """(job, its mp4 opened for reading when done, else None); None for an unknown job. The
        file is opened under the lock, so pruning cannot delete it in between (an open file
        outlives its deletion)."""
        with self._cond:
            job = self.get(job_id)
            if job is None:
                return None
            return job, (job.video.open("rb") if job.status == DONE else None)

    def delete(self, job_id: str) -> bool:
        """Forget a finished job and delete its video now; False when none such (or unfinished)."""
        with self._cond:
            job = self._finished.pop(job_id, None)
        if job is not None:
            shutil.rmtree(job.dir, ignore_errors=True)
        return job is not None

    def counts(self) -> dict:
        with self._cond:
            return {"waiting": len(self._waiting), "running": int(self._running is not None),
                    "capacity": self.capacity}

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    if not self._cond.wait(self.janitor_seconds):
                        self._prune_locked()
                if self._stopping:
                    return
                job = self._running = self._waiting.popleft()
                job.status = RUNNING
            self._run(job)

    def _run(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            self.runner(job)
            error = None
        except ValueError as err:  # the project's typed input errors: their message is for the client
            error = str(err)
        except Exception as err:  # a bug or the machine: the details go to the log, not the client
            log.exception("job %s failed", job.id)
            error = f"internal error ({type(err).__name__}); see the server's log"
        for name in ("image.npy", "audio.npy"):
            (job.dir / name).unlink(missing_ok=True)
        with self._cond:
            if error is None:
                job.status, job.progress = DONE, 1.0
            else:
                job.status, job.error = FAILED, error
                shutil.rmtree(job.dir, ignore_errors=True)
            job.finished = time.time()
            self._durations.append(time.perf_counter() - start)
            self._running = None
            self._finished[job.id] = job
            self._prune_locked()

    def _prune_locked(self) -> None:
        """Drop finished jobs beyond ``keep_jobs`` or older than ``keep_seconds`` (oldest first)."""
        now = time.time()
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if len(self._finished) <= self.keep_jobs and now - oldest.finished < self.keep_seconds:
                break
            self._finished.popitem(last=False)
            shutil.rmtree(oldest.dir, ignore_errors=True)

    def _retry_after_locked(self) -> int:
        """Seconds until a place frees: the mean of the recent jobs' durations (5 s before any)."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, math.ceil(mean))


def save_inputs(directory: Path, image: np.ndarray, audio: np.ndarray) -> None:
    """Keep a job's decoded inputs on disk while it waits (memory stays flat however long the queue)."""
    np.save(directory / "image.npy", image)
    np.save(directory / "audio.npy", audio)


def render_job(pipe, job: Job, batch_size: int = 8) -> None:
    """Generate ``job``: ``pipe.plan`` (stage 1 and the controls), then ``pipe.frames`` streamed
    into ``job.video`` (written under a temporary name and renamed), updating its progress.
    The same steps, and so the same video, as ``pipe.write``."""
    from ..audio.align import FPS
    from ..data.video import write_video

    image = np.load(job.dir / "image.npy")
    audio = np.load(job.dir / "audio.npy")
    plan = pipe.plan(audio, image, **job.options)
    job.frames = total = len(plan.vertices)

    def counted():
        for done, frame in enumerate(pipe.frames(plan, batch_size), 1):
            job.progress = min(done / total, 0.99)  # 1 only once the mp4 is in place
            yield frame

    write_video(job.video, counted(), fps=FPS, audio=plan.audio)
