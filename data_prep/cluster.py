"""Preparing videos on a Ray cluster: ``vividtalk-prep videos IN_DIR OUT_DIR --engine ray``.

One Ray task per video (one CPU each). A task builds the :class:`~data_prep.videos.VideoProcessor`
of its settings once per Ray worker process and reuses it for every later video (MediaPipe
graphs are slow to build), processes the video exactly as the local engine does (atomic clip
writes, a state file once all its clips are written) and returns the report entry. The
driver submits the tasks, gathers the entries with ``ray.wait`` as videos finish (the progress
bars advance), and afterwards writes the report and the manifest itself.

Every node needs this package installed (the same version) and IN_DIR and OUT_DIR on a shared
file system at the same paths: tasks read and write those paths directly.

Ray is imported only here, inside the functions, so the local engine never needs it.
"""

from __future__ import annotations

from typing import Callable

import cv2
import torch

# This module sits below data_prep.videos (which dispatches to it), so what it runs comes in
# as arguments: ``make_processor`` (VideoProcessor: settings -> a callable job -> entry) and
# ``crashed`` (crashed_entry: job, error -> entry). Jobs and settings are videos.py's.

RAY_MISSING = "the ray engine needs Ray: pip install -e '.[cluster]'"
# Tasks in flight per cluster CPU: enough to keep every CPU busy while the driver gathers
# results, few enough that ray.wait stays cheap on a corpus of 100k videos.
IN_FLIGHT_PER_CPU = 2

# The processor of this Ray worker process, by settings fingerprint (one at a time).
_PROCESSORS: dict[str, Callable] = {}


def require_ray():
    """The ``ray`` module, or ModuleNotFoundError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ModuleNotFoundError(RAY_MISSING, name="ray") from err
    return ray


def prepare_one(job, settings, make_processor: Callable) -> dict:
    """Process one video in a Ray worker; returns its report entry (never raises for a bad video)."""
    key = settings.fingerprint()
    processor = _PROCESSORS.get(key)
    if processor is None:
        for old in _PROCESSORS.values():  # a driver with other settings used this worker before
            old.close()
        _PROCESSORS.clear()
        # One thread each: Ray runs one task per CPU, and torch or OpenCV pools would
        # oversubscribe the node (as the local engine's spawned workers do).
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        processor = _PROCESSORS[key] = make_processor(settings)
    return processor(job)


def connect(ray, address: str) -> bool:
    """Join the Ray cluster at ``address``: ``auto`` (the one ``ray start`` began on this
    machine, or RAY_ADDRESS), ``HOST:PORT`` or ``ray://HOST:PORT``, or ``local`` (a new Ray
    instance on this machine alone). An already initialised Ray session (a notebook's, a
    test's) is used as it is. True when this call connected, so it must also disconnect."""
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False)
        else:
            ray.init(address=address)
    except ConnectionError as err:
        raise ValueError(
            f"no Ray cluster at --address {address}: start one with `ray start --head` on the head node "
            f"(and `ray start --address HEAD:6379` on the others), or use --address local for this "
            f"machine alone ({err})"
        ) from err
    return True


def run_ray(jobs: list, settings, bars, make_processor: Callable, crashed: Callable,
            address: str = "auto") -> tuple[list[dict], int]:
    """Process ``jobs`` as Ray tasks on the cluster at ``address`` (``make_processor``,
    ``crashed``: see the top of this module); returns the report entries (in the order the
    videos finished) and the cluster's CPU count."""
    ray = require_ray()
    connected = connect(ray, address)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return gather(ray, jobs, settings, bars, IN_FLIGHT_PER_CPU * cpus, make_processor, crashed), cpus
    finally:
        if connected:
            ray.shutdown()


def gather(ray, jobs: list, settings, bars, window: int, make_processor: Callable, crashed: Callable) -> list[dict]:
    """Keep ``window`` tasks in flight (submitted in the order of ``jobs``) and collect each
    entry as soon as its video is done; a task whose worker died fails only its video."""
    # max_retries=1: a node lost mid-video is retried once (the video is redone from
    # scratch: its partial clips are deleted first), a video that kills its worker is not
    # retried forever.
    task = ray.remote(num_cpus=1, max_retries=1)(prepare_one)
    settings_ref = ray.put(settings)
    waiting, running, entries = list(reversed(jobs)), {}, []
    try:
        while waiting or running:
            while waiting and len(running) < window:
                job = waiting.pop()
                running[task.remote(job, settings_ref, make_processor)] = job
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                job = running.pop(ref)
                try:
                    entries.append(ray.get(ref))
                except Exception as err:  # noqa: BLE001 (WorkerCrashedError, a lost node: report it, retry next run)
                    entries.append(crashed(job, err))
                bars.frames.update(entries[-1]["frames"])
                bars.video_done(entries[-1])
    finally:  # on Ctrl-C, stop the videos still queued or running (none is recorded as done)
        for ref in running:
            ray.cancel(ref)
    return entries
