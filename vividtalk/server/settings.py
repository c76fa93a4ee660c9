"""The server's settings (``vividtalk serve`` options) and its access checks: the bearer token
and the host names a loopback-bound server answers to."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "VIVIDTALK_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServerSettings:
    """What ``vividtalk serve`` is started with (see its ``--help``) and the limits behind it.

    Attributes:
        host, port: where uvicorn listens (default 127.0.0.1:7860: this machine only).
        weights: a saved pipeline directory (None: the packaged demo weights); device: torch device.
        token: the bearer token every route but ``/healthz`` and the page needs (None: no token).
        max_upload_mb: the largest request body of ``POST /v1/generate`` and the largest image
            of a stream, in MiB (enforced while reading).
        queue: jobs that may wait for the worker (the running one not counted); more -> 503.
        keep_jobs, keep_seconds: finished jobs (and their videos) kept: the last ``keep_jobs``,
            each at most ``keep_seconds`` after it finished, whichever ends first.
        max_audio_seconds: the longest audio a job accepts (a small compressed file can decode
            to hours of samples).
        max_image_pixels: the largest image (width x height) decoded (decompression bombs).
        max_streams: concurrent WebSocket streams; more are closed with 1013.
        stream_buffer_mb: audio received but not yet generated, per stream, in MiB; more -> 1008.
        stream_idle_seconds: a stream that sends nothing for this long is closed (1008).
        work_dir: where per-request folders live (None: a fresh temporary folder, removed at
            shutdown).
    """

    host: str = "127.0.0.1"
    port: int = 7860
    weights: str | None = None
    device: str = "cpu"
    token: str | None = None
    max_upload_mb: float = 20.0
    queue: int = 8
    keep_jobs: int = 32
    keep_seconds: float = 600.0
    max_audio_seconds: float = 600.0
    max_image_pixels: int = 40_000_000
    max_streams: int = 4
    stream_buffer_mb: float = 4.0
    stream_idle_seconds: float = 120.0
    work_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ValueError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.queue < 1:
            raise ValueError(f"--queue must be >= 1, got {self.queue}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.keep_jobs < 1 or self.max_streams < 1:
            raise ValueError("keep_jobs and max_streams must be >= 1")
        if self.token is not None and not self.token.strip():
            raise ValueError("the token is empty: give a non-empty --token (or unset VIVIDTALK_TOKEN)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def stream_buffer_bytes(self) -> int:
        return int(self.stream_buffer_mb * 2**20)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def token_from_env(token: str | None) -> str | None:
    """``--token`` when given, else ``$VIVIDTALK_TOKEN`` (None when neither is set)."""
    return token if token is not None else (os.environ.get(TOKEN_ENV) or None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: ServerSettings) -> list[str]:
    """The Host headers answered: a loopback-bound server answers only to loopback names,
    so a web page cannot reach it through a DNS name rebound to 127.0.0.1; elsewhere any."""
    if is_loopback(settings.host):
        return ["localhost", "127.0.0.1", "[::1]", settings.host]
    return ["*"]


def bearer_ok(settings: ServerSettings, authorization: str | None, query_token: str | None = None) -> bool:
    """Whether a request carries the token: ``Authorization: Bearer TOKEN`` (or, for a
    WebSocket, which browsers open without headers, ``?token=TOKEN``). Constant-time compare."""
    if settings.token is None:
        return True
    given = None
    if authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    elif query_token is not None:
        given = query_token
    return given is not None and hmac.compare_digest(given.encode(), settings.token.encode())
