"""Choosing a face tracker by name (``--tracker`` on the command line)."""

from __future__ import annotations

from .tracking import Tracker

TRACKERS = ("mediapipe", "face-alignment")


def get_tracker(name: str = "mediapipe", **kwargs) -> Tracker:
    """Build a tracker by name: ``"mediapipe"`` (default, offline) or ``"face-alignment"``.

    Keyword arguments go to the backend's constructor.
    """
    if name == "mediapipe":
        from .mediapipe_tracker import MediaPipeTracker

        return MediaPipeTracker(**kwargs)
    if name == "face-alignment":
        from .fan_tracker import FaceAlignmentTracker

        return FaceAlignmentTracker(**kwargs)
    raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
