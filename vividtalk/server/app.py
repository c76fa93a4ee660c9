"""The HTTP API (FastAPI): :func:`create_app`.

Routes (``TOKEN``: every route but ``/healthz`` and the page needs ``Authorization: Bearer
TOKEN`` when the server has a token, else 401):

- ``GET /healthz`` -> ``{"status": "ok", "device", "queue": {"waiting", "running", "capacity"},
  "streams": {"active", "capacity"}}``.
- ``POST /v1/generate`` (multipart: files ``image``, ``audio``; optional fields ``pose``
  (audio | still), ``expression_scale``, ``blink``, ``seed``, ``size`` (crop | full),
  ``temperature``) -> 202 ``{"job": ID, "status": "queued"}``; 413 over ``max_upload_mb``,
  422 for bad options or files (``{"detail": message}``, the messages of ``vividtalk generate``),
  503 with Retry-After when the queue is full.
- ``GET /v1/jobs/{id}`` -> ``{"job", "status": queued | running | done | failed, "progress":
  0..1, "frames", "error", "video"}``; ``GET /v1/jobs/{id}/video`` -> the mp4 (200 when done,
  409 before, 404 for an unknown, failed or expired job); ``DELETE /v1/jobs/{id}`` deletes a
  finished job's video now (204).
- ``WebSocket /v1/stream``: :mod:`vividtalk.server.stream` (token also as ``?token=``).
- ``/``: the demo page (``vividtalk/server/static/``), or a placeholder while it is missing.

Bad input is checked when it arrives (options, image decoding, audio decoding and length),
so those are 422s; a face is looked for when the job runs, so "no face" is a failed job with
the pipeline's message. Each request reads into its own folder under the server's work folder;
a refused request's folder is removed before the answer, an accepted one's belongs to its job
(:mod:`vividtalk.server.jobs`). Client file names are never used and no path is read from a
client.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .inputs import JOB_OPTIONS, parse_options, read_audio_file, read_image_bytes
from .jobs import DONE, Job, JobQueue, QueueFull, new_job_id, render_job, save_inputs
from .settings import ServerSettings, allowed_hosts, bearer_ok
from .stream import StreamHub, serve_stream
from .uploads import UploadError, read_form

log = logging.getLogger("vividtalk.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"
CHUNK = 1 << 16


def create_app(pipeline=None, settings: ServerSettings | None = None, *,
               pipe_factory: Callable[[], object] | None = None, static_dir: Path | None = STATIC_DIR) -> FastAPI:
    """The server's FastAPI app.

    Args:
        pipeline: a loaded pipeline (anything with ``plan``/``frames`` and, for streaming,
            ``stream_session``: tests inject fakes), or None to load one at startup.
        settings: limits, token, work folder (default :class:`ServerSettings`).
        pipe_factory: builds the pipeline at startup when ``pipeline`` is None (default:
            ``VividTalkPipeline.from_pretrained(settings.weights, settings.device)``).
        static_dir: the demo page's folder, mounted at ``/`` when it has an index.html.
    """
    settings = settings or ServerSettings()
    state = _State(settings, pipeline, pipe_factory or (lambda: _load_pipeline(settings)))
    app = FastAPI(title="vividtalk", lifespan=state.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.vividtalk = state
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings))
    _add_routes(app, state)
    _add_page(app, static_dir)
    return app


def _load_pipeline(settings: ServerSettings):
    from ..pipeline import VividTalkPipeline

    return VividTalkPipeline.from_pretrained(settings.weights, device=settings.device)


class _State:
    """The running server: pipeline, work folder, job queue, stream hub (made at startup)."""

    def __init__(self, settings: ServerSettings, pipeline, factory: Callable[[], object]) -> None:
        self.settings, self.pipe, self.factory = settings, pipeline, factory
        self.work_dir: Path | None = None
        self.jobs: JobQueue | None = None
        self.hub: StreamHub | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        if self.pipe is None:
            self.pipe = await run_in_threadpool(self.factory)
        own_dir = self.settings.work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="vividtalk-server-")) if own_dir else Path(self.settings.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self.jobs = JobQueue(lambda job: render_job(self.pipe, job), s.queue, s.keep_jobs, s.keep_seconds)
        self.hub = StreamHub(self.pipe, s)
        self.jobs.start()
        self.hub.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.jobs.stop)
            self.hub.stop()
            if own_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def device(self) -> str:
        return str(getattr(self.pipe, "device", self.settings.device))


def _authorize(request: Request) -> None:
    settings = request.app.state.vividtalk.settings
    if not bearer_ok(settings, request.headers.get("authorization")):
        raise HTTPException(401, "missing or wrong token: send Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})


def _add_routes(app: FastAPI, state: _State) -> None:
    auth = [Depends(_authorize)]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "device": state.device(), "queue": state.jobs.counts(),
                "streams": {"active": state.hub.active, "capacity": state.settings.max_streams}}

    @app.post("/v1/generate", status_code=202, dependencies=auth)
    async def generate(request: Request) -> JSONResponse:
        job = await _accept_job(request, state)
        return JSONResponse({"job": job.id, "status": job.status}, status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", dependencies=auth)
    def job_status(job_id: str) -> dict:
        job = state.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (unknown, or finished and deleted)")
        return job.to_json()

    @app.get("/v1/jobs/{job_id}/video", dependencies=auth)
    def job_video(job_id: str) -> Response:
        return _video_response(state.jobs, job_id)

    @app.delete("/v1/jobs/{job_id}", status_code=204, dependencies=auth)
    def delete_job(job_id: str) -> Response:
        if not state.jobs.delete(job_id):
            raise HTTPException(404, f"no finished job {job_id!r}")
        return Response(status_code=204)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        if not bearer_ok(state.settings, websocket.headers.get("authorization"), websocket.query_params.get("token")):
            await websocket.send_denial_response(JSONResponse(
                {"detail": "missing or wrong token: send Authorization: Bearer TOKEN or ?token=TOKEN"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"}))
            return
        await websocket.accept()
        await serve_stream(websocket, state.hub)


def _video_response(jobs: JobQueue, job_id: str) -> Response:
    found = jobs.open_video(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id!r} (unknown, or finished and deleted)")
    job, handle = found
    if handle is None:
        if job.status == DONE:  # pragma: no cover (open_video opens every done job's video)
            raise HTTPException(500, "the video is missing")
        if job.status == "failed":
            raise HTTPException(404, f"job {job_id} failed: {job.error}")
        raise HTTPException(409, f"job {job_id} is {job.status} ({job.progress:.0%}); the video is not ready")
    size = os.fstat(handle.fileno()).st_size  # of the open file: right even if pruned meanwhile

    def chunks():
        with handle:
            while data := handle.read(CHUNK):
                yield data

    headers = {"Content-Disposition": f'attachment; filename="vividtalk-{job_id}.mp4"',
               "Content-Length": str(size)}
    return StreamingResponse(chunks(), media_type="video/mp4", headers=headers)


async def _accept_job(request: Request, state: _State) -> Job:
    """Read, check and queue one generation; its folder is removed unless the job took it."""
    settings, jobs = state.settings, state.jobs
    retry = jobs.full()
    if retry is not None:  # refuse before reading a byte of the upload
        raise _busy(retry)
    job_id = new_job_id()
    folder = state.work_dir / job_id
    folder.mkdir()
    try:
        form = await read_form(request.headers, request.stream(), folder, settings.max_upload_bytes,
                               ("image", "audio"), JOB_OPTIONS)
        options = parse_options(form.fields)
        for name in ("image", "audio"):
            if name not in form.files:
                raise UploadError(422, f"missing the {name} file (the multipart field {name!r})")
        await run_in_threadpool(_decode_inputs, form.files, folder, settings)
        return jobs.submit(Job(job_id, folder, options))
    except UploadError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(err.status, str(err)) from None
    except QueueFull as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise _busy(err.retry_after) from None
    except ValueError as err:  # AudioError, an unreadable image, a bad option: the project's messages
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(422, str(err)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _decode_inputs(files: dict[str, Path], folder: Path, settings: ServerSettings) -> None:
    """Decode the uploads (422s on failure), keep the decoded arrays, delete the uploads."""
    image = read_image_bytes(files["image"].read_bytes(), settings.max_image_pixels)
    files["image"].unlink()
    audio = read_audio_file(files["audio"], settings.max_audio_seconds)
    files["audio"].unlink()
    save_inputs(folder, image, audio)


def _busy(retry_after: int) -> HTTPException:
    return HTTPException(503, f"the queue is full; try again in about {retry_after} s",
                         headers={"Retry-After": str(retry_after)})


PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>vividtalk</title></head>
<body><h1>vividtalk server</h1><p>The demo page is missing (vividtalk/server/static/index.html is not
installed). The API is here: <code>POST /v1/generate</code>, <code>GET /v1/jobs/{id}</code>,
<code>WebSocket /v1/stream</code>; see the README's "Server" section.</p></body></html>"""


def _add_page(app: FastAPI, static_dir: Path | None) -> None:
    """The demo page at ``/``: the static folder when it has an index.html, else a placeholder.
    Mounted last, so the API routes come first."""
    if static_dir is not None and (Path(static_dir) / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static_dir, html=True), name="page")
        return

    @app.get("/", response_class=HTMLResponse)
    def placeholder() -> str:
        return PLACEHOLDER

