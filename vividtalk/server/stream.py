"""``WebSocket /v1/stream``: live talking-head frames from streamed audio.

Protocol (client -> server):

1. text ``{"type": "start", "options": {...}}``: options ``pose`` ("audio" | "still"),
   ``expression_scale``, ``blink``, ``seed``, ``temperature`` (as for ``POST /v1/generate``;
   all optional).
2. ONE binary message: the image file's bytes (JPEG, PNG, ...), at most ``--max-upload-mb``.
   The server prepares the face and answers text ``{"type": "ready", "fps": 25, "size": 256}``.
3. binary messages of raw PCM audio: float32 little-endian, 16 kHz mono, any length (whole
   samples: a multiple of 4 bytes). Frames come back as they are generated.
4. text ``{"type": "flush"}`` ends an utterance: the server generates what is pending and
   answers ``{"type": "flushed", "frames": n, "total": t}`` (n frames since the previous flush,
   t since the start), after the last of them.
5. text ``{"type": "end"}`` ends the session: pending audio is flushed as by ``flush``, then the
   server closes (1000). Closing the socket ends it too (pending audio dropped).

Server -> client, for every frame one binary message: a 16-byte header
``struct.pack("<4sIq", b"VTFR", frame_index, timestamp_microseconds)`` (the frame's index since
the start and its time in the audio) followed by the frame as a JPEG (quality 85, RGB).
On bad input: text ``{"type": "error", "message": ...}``, then the server closes with 1003
(data it cannot use: an image that does not decode or has no face, audio that is not whole
float32 samples or holds NaN/Inf, a text message that is not JSON) or 1008 (the protocol or a
limit broken: messages out of order, an unknown option or type, more audio buffered than
``stream_buffer_mb``, an image over the size limit, no message for ``stream_idle_seconds``).
1011: the server failed; 1013 "try again later": ``max_streams`` (4) streams are running.

Sessions (``pipe.stream_session(image, **options)``, from :mod:`vividtalk.streaming`) run on a
thread pool (two threads a stream), so the event loop stays free; each session's calls run
one at a time (a lock). A reader task takes the client's messages while frames are generated, so a
client that disconnects is seen at once: queued audio is dropped and its session closed as
soon as the push in progress (one chunk) returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..audio.align import FPS
from ..data.frame_store import encode_jpeg
from .inputs import STREAM_OPTIONS, parse_options, pcm_samples, read_image_bytes
from .settings import ServerSettings

log = logging.getLogger("vividtalk.server")

FRAME_MAGIC = b"VTFR"
FRAME_HEADER = struct.Struct("<4sIq")  # magic, frame index, timestamp in microseconds: 16 bytes
JPEG_QUALITY = 85
DEFAULT_SIZE = 256  # the crop size, when the session does not say
UNSUPPORTED, POLICY, INTERNAL, TRY_LATER = 1003, 1008, 1011, 1013


class StreamError(Exception):
    """Ends a stream: ``message`` sent as an error, then closed with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StreamHub:
    """What the streams share: the pipeline, the limits, the thread pool, the live count."""

    pipe: object
    settings: ServerSettings
    executor: ThreadPoolExecutor | None = None
    active: int = 0

    def start(self) -> None:
        # two threads a stream: its push, and its close waiting for that push
        self.executor = ThreadPoolExecutor(2 * self.settings.max_streams, thread_name_prefix="vividtalk-stream")

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn, *args):
        """``fn(*args)`` on the stream threads (the event loop waits without blocking)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def close(self, session: _Guarded) -> None:
        """Close ``session`` on the stream threads; it is closed even if this task is cancelled
        while waiting (the shield keeps the submitted call from being cancelled)."""
        await asyncio.shield(asyncio.wrap_future(self.executor.submit(session.close)))


def encode_frames(batches) -> list[bytes]:
    """FrameBatches -> one message per frame: the 16-byte header + the JPEG (RGB in)."""
    out = []
    for batch in batches:
        for i, frame in enumerate(batch.frames):
            micros = int(round(float(batch.timestamps[i]) * 1e6))
            out.append(FRAME_HEADER.pack(FRAME_MAGIC, int(batch.first_frame) + i, micros)
                       + encode_jpeg(frame, JPEG_QUALITY))
    return out


def _frame_size(session) -> int:
    """The side of the session's square frames: its ``size``, else its source crop's, else 256."""
    if getattr(session, "size", None):
        return int(session.size)
    crop = getattr(getattr(session, "source", None), "crop", None)
    return int(crop.shape[0]) if crop is not None else DEFAULT_SIZE


class _Guarded:
    """A session whose calls run one at a time (a lock), frames encoded on the same thread: a
    close asked for while a push runs (the client left, the server stops) waits for it."""

    def __init__(self, session) -> None:
        self.session, self.lock = session, threading.Lock()
        self.size = _frame_size(session)

    def push(self, chunk: np.ndarray) -> list[bytes]:
        with self.lock:
            return encode_frames(self.session.push(chunk))

    def flush(self) -> list[bytes]:
        with self.lock:
            return encode_frames(self.session.flush())

    def close(self) -> None:
        with self.lock:
            self.session.close()


async def serve_stream(ws: WebSocket, hub: StreamHub) -> None:
    """One stream (the module docstring's protocol), from the accepted socket to its close.
    The session is closed (freed) before the client hears the close."""
    if hub.active >= hub.settings.max_streams:
        await ws.close(TRY_LATER, "try again later")
        return
    hub.active += 1
    session, ending = None, None
    try:
        session = await _open_session(ws, hub)
        ending = await _run_session(ws, hub, session)
    except StreamError as err:
        ending = (err.code, str(err))
    except WebSocketDisconnect:
        ending = None
    except Exception as err:
        log.exception("stream failed")
        ending = (INTERNAL, f"internal error ({type(err).__name__}); see the server's log")
    finally:
        hub.active -= 1  # first: a cancelled task (server shutdown) skips what follows an await
        if session is not None:
            await hub.close(session)
    if ending is not None:
        await _close(ws, *ending)


async def _close(ws: WebSocket, code: int, message: str | None) -> None:
    """Close with ``code``; an error ``message`` is sent first (and as the close reason)."""
    try:
        if message is not None:
            await ws.send_text(json.dumps({"type": "error", "message": message}))
        await ws.close(code, (message or "")[:120])  # a close reason is at most 123 bytes
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client has gone already


async def _receive(ws: WebSocket, timeout: float, busy: Callable[[], bool] = lambda: False) -> dict:
    """The next ASGI message; WebSocketDisconnect when the client left, 1008 after ``timeout`` s
    of silence (not counted while ``busy()``: a client waiting for its frames is not idle)."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout)
            break
        except asyncio.TimeoutError:
            if not busy():
                raise StreamError(POLICY, f"no message for {timeout:g} s: closing the stream") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


def _command(message: dict) -> dict:
    """A text message -> its JSON object with a "type" (1003 when not JSON, 1008 without a type)."""
    try:
        value = json.loads(message["text"])
    except (TypeError, ValueError):
        raise StreamError(UNSUPPORTED, "text messages must be JSON objects with a \"type\"") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise StreamError(POLICY, "text messages must be JSON objects with a \"type\"")
    return value


async def _open_session(ws: WebSocket, hub: StreamHub):
    """The start message and the image -> a prepared session; sends "ready"."""
    idle = hub.settings.stream_idle_seconds
    message = await _receive(ws, idle)
    start = _command(message) if message.get("text") is not None else {}
    if start.get("type") != "start":
        raise StreamError(POLICY, 'the first message must be the text {"type": "start", "options": {...}}')
    try:
        options = parse_options(start.get("options") or {}, STREAM_OPTIONS)
    except ValueError as err:
        raise StreamError(POLICY, str(err)) from None
    message = await _receive(ws, idle)
    data = message.get("bytes")
    if data is None:
        raise StreamError(POLICY, "after start, send the image file's bytes as one binary message")
    if len(data) > hub.settings.max_upload_bytes:
        raise StreamError(POLICY, f"the image is larger than the server's limit of {hub.settings.max_upload_mb:g} MiB")
    if not hasattr(hub.pipe, "stream_session"):
        raise StreamError(INTERNAL, "this server's pipeline cannot stream (vividtalk.streaming is missing)")
    try:
        image = await hub.call(read_image_bytes, data, hub.settings.max_image_pixels)
        session = _Guarded(await hub.call(lambda: hub.pipe.stream_session(image, **options)))
    except ValueError as err:  # unreadable image, no face, ...: the pipeline's own message
        raise StreamError(UNSUPPORTED, str(err)) from None
    try:
        await ws.send_text(json.dumps({"type": "ready", "fps": FPS, "size": session.size}))
    except BaseException:
        await hub.close(session)
        raise
    return session


@dataclass
class _Inbox:
    """The reader's hand-over: ``items`` ("audio", samples) / ("flush",) / ("end",) / ("stop",);
    ``buffered`` audio bytes received, not yet pushed; ``gone`` set as soon as the client has
    left, ``failed`` (code, message) as soon as it broke the protocol: both are seen before the
    queued items (the audio before them is dropped)."""

    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    buffered: int = 0
    busy: bool = False  # a push or a flush is running
    gone: bool = False
    failed: tuple[int, str] | None = None


async def _read_loop(ws: WebSocket, hub: StreamHub, inbox: _Inbox) -> None:
    """Client messages -> ``inbox``, until end, an error or the disconnect."""
    limit = hub.settings.stream_buffer_bytes
    try:
        while True:
            message = await _receive(ws, hub.settings.stream_idle_seconds, lambda: inbox.busy or inbox.buffered > 0)
            if message.get("bytes") is not None:
                samples = pcm_samples(message["bytes"])
                inbox.buffered += samples.nbytes
                if inbox.buffered > limit:
                    raise StreamError(POLICY, f"more than {hub.settings.stream_buffer_mb:g} MiB of audio waiting: "
                                              "send audio no faster than frames come back")
                if samples.size:
                    await inbox.items.put(("audio", samples))
                continue
            kind = _command(message)["type"]
            if kind not in ("flush", "end"):
                raise StreamError(POLICY, f"unknown message type {kind!r}: expected flush or end (or audio)")
            await inbox.items.put((kind,))
            if kind == "end":
                return
    except WebSocketDisconnect:
        inbox.gone = True
    except StreamError as err:
        inbox.failed = (err.code, str(err))
    except ValueError as err:  # AudioError: not whole float32 samples, NaN/Inf
        inbox.failed = (UNSUPPORTED, str(err))
    await inbox.items.put(("stop",))  # wakes the generating side


async def _run_session(ws: WebSocket, hub: StreamHub, session) -> tuple[int, None] | None:
    """Push audio and send frames until end ((1000, None): close normally), an error (raised as
    StreamError) or the client's leaving (None)."""
    inbox = _Inbox()
    reader = asyncio.create_task(_read_loop(ws, hub, inbox))
    utterance = total = 0
    try:
        while True:
            item = await inbox.items.get()
            if inbox.gone:  # queued audio is not worth generating for nobody
                return None
            if inbox.failed is not None:
                raise StreamError(*inbox.failed)
            if item[0] == "stop":  # (only after "end", which returned already)
                return None
            inbox.busy = True
            if item[0] == "audio":
                sent = await _send(ws, await hub.call(session.push, item[1]))
                inbox.buffered -= item[1].nbytes
                inbox.busy = False
                utterance, total = utterance + sent, total + sent
                continue
            sent = await _send(ws, await hub.call(session.flush))
            inbox.busy = False
            total += sent
            await ws.send_text(json.dumps({"type": "flushed", "frames": utterance + sent, "total": total}))
            utterance = 0
            if item[0] == "end":
                return (1000, None)
    finally:
        reader.cancel()


async def _send(ws: WebSocket, messages: list[bytes]) -> int:
    for message in messages:
        await ws.send_bytes(message)
    return len(messages)
