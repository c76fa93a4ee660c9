"""``vividtalk serve``: the talking-head generator as a local web service (FastAPI + uvicorn).

- :mod:`.app`: :func:`create_app` and the HTTP routes (health, jobs, videos, the demo page).
- :mod:`.jobs`: the bounded job queue with its one worker thread, and the retention of videos.
- :mod:`.stream`: the WebSocket protocol of live streaming (``/v1/stream``).
- :mod:`.uploads`: multipart bodies read as they arrive, under a size limit.
- :mod:`.inputs`: options, images and audio checked with the project's own errors.
- :mod:`.settings`: the settings, the bearer token and the host check.

Secure by default: it listens on 127.0.0.1 only, answers only to loopback host names there,
needs a token when one is set (``--token`` or ``$VIVIDTALK_TOKEN``), limits every upload while
reading it, never takes a path from a client and removes every request's files.
"""

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(*args, **kwargs):
    """:func:`vividtalk.server.app.create_app` (imported on first use: FastAPI is not needed
    to read the settings)."""
    from .app import create_app as create

    return create(*args, **kwargs)
