"""vividtalk.server through FastAPI's TestClient with fake pipelines: the routes, the token
(401), upload limits (413), bad input (422, with the command line's messages), the queue (503),
unknown and unfinished jobs (404, 409), the job lifecycle and retention, temporary files after
success and after failures, and the WebSocket protocol (one test on the real streaming core)."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from scipy.io import wavfile
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from vividtalk.face.tracking import NoFaceError
from vividtalk.server import ServerSettings
from vividtalk.server.app import create_app
from vividtalk.server.uploads import UploadError, read_form

SR, SPF = 16000, 640
BASE = "http://127.0.0.1"  # a loopback server answers only to loopback host names
WS = "ws://127.0.0.1/v1/stream"


# ---------------------------------------------------------------------------- fakes
@dataclass
class FakeBatch:
    """The interface of vividtalk.streaming.FrameBatch."""

    frames: np.ndarray
    first_frame: int
    audio: np.ndarray

    @property
    def timestamps(self) -> np.ndarray:
        return (self.first_frame + np.arange(len(self.frames))) / 25


def fake_frame(index: int, size: int = 64) -> np.ndarray:
    """Frame ``index`` of the fakes: one flat grey level (survives JPEG)."""
    return np.full((size, size, 3), (index * 37) % 200 + 20, np.uint8)


class FakeSession:
    """A stream session: one frame per 640 samples; ``delay`` s per push (a slow generator)."""

    size = 64

    def __init__(self, options: dict, delay: float = 0.0) -> None:
        self.options, self.delay = options, delay
        self.pending = np.zeros(0, np.float32)
        self.done = 0
        self.closed = False

    def _emit(self, n: int) -> list[FakeBatch]:
        if n == 0:
            return []
        frames = np.stack([fake_frame(self.done + i, self.size) for i in range(n)])
        batch = FakeBatch(frames, self.done, self.pending[: n * SPF].copy())
        self.pending, self.done = self.pending[n * SPF:], self.done + n
        return [batch]

    def push(self, chunk: np.ndarray) -> list[FakeBatch]:
        assert not self.closed and chunk.dtype == np.float32 and chunk.ndim == 1
        time.sleep(self.delay)
        self.pending = np.concatenate([self.pending, chunk])
        return self._emit(len(self.pending) // SPF)

    def flush(self) -> list[FakeBatch]:
        self.pending = np.pad(self.pending, (0, -len(self.pending) % SPF))
        return self._emit(len(self.pending) // SPF)

    def close(self) -> None:
        self.closed = True


class FakePipeline:
    """``plan``/``frames`` as VividTalkPipeline's (tiny frames), ``stream_session`` -> FakeSession.
    ``gate``: when set, frames wait for it after ``gate_after`` frames (a job held mid-render).
    A black image has "no face"; ``fail`` raises it as an unexpected error."""

    device = "cpu"

    def __init__(self, gate: threading.Event | None = None, gate_after: int = 2, fail: Exception | None = None,
                 push_delay: float = 0.0) -> None:
        self.gate, self.gate_after, self.fail, self.push_delay = gate, gate_after, fail, push_delay
        self.plans: list[dict] = []
        self.sessions: list[FakeSession] = []

    def plan(self, audio, image, **options):
        if self.fail is not None:
            raise self.fail
        if image.max() < 5:
            raise NoFaceError(f"no face found in the image ({image.shape[1]}x{image.shape[0]})")
        self.plans.append(options)
        frames = -(-len(audio) // SPF)
        return SimpleNamespace(vertices=np.zeros((frames, 1)), audio=np.pad(audio, (0, frames * SPF - len(audio))))

    def frames(self, plan, batch_size: int = 8):
        for i in range(len(plan.vertices)):
            if self.gate is not None and i == self.gate_after:
                assert self.gate.wait(30)
            yield fake_frame(i)

    def stream_session(self, image, **options):
        if image.max() < 5:
            raise NoFaceError("no face found in the image")
        self.sessions.append(FakeSession(options, self.push_delay))
        return self.sessions[-1]


# ---------------------------------------------------------------------------- helpers
def png(value: int = 128, size: int = 64) -> bytes:
    return cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))[1].tobytes()


def wav(seconds: float) -> bytes:
    t = np.arange(int(seconds * SR)) / SR
    buf = io.BytesIO()
    wavfile.write(buf, SR, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return buf.getvalue()


def upload(image: bytes | None = None, audio: bytes | None = None) -> dict:
    files = {"image": ("face.png", png() if image is None else image, "image/png"),
             "audio": ("speech.wav", wav(1.0) if audio is None else audio, "audio/wav")}
    return files


@pytest.fixture()
def work(tmp_path) -> Path:
    return tmp_path / "work"


def make_client(work: Path, pipe=None, **settings) -> TestClient:
    app = create_app(pipe or FakePipeline(), ServerSettings(work_dir=work, **settings))
    return TestClient(app, base_url=BASE)


def wait_job(client: TestClient, job: str, status=("done", "failed"), timeout: float = 30, headers=None) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = client.get(f"/v1/jobs/{job}", headers=headers).json()
        if state["status"] in status:
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job} still {state}")


def files_in(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob("*"))


# ---------------------------------------------------------------------------- HTTP
def test_healthz_reports_device_and_queue(work):
    with make_client(work, queue=3) as client:
        body = client.get("/healthz").json()
    assert body == {"status": "ok", "device": "cpu", "queue": {"waiting": 0, "running": 0, "capacity": 3},
                    "streams": {"active": 0, "capacity": 4}}


def test_token_is_needed_on_every_route_but_healthz(work):
    good = {"Authorization": "Bearer s3cret"}
    with make_client(work, token="s3cret") as client:
        assert client.get("/healthz").status_code == 200
        for method, url in [("post", "/v1/generate"), ("get", "/v1/jobs/abc"), ("get", "/v1/jobs/abc/video"),
                            ("delete", "/v1/jobs/abc")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                answer = getattr(client, method)(url, headers=headers)
                assert answer.status_code == 401, (method, url, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/jobs/abc?token=s3cret").status_code == 401  # query tokens: WebSocket only
        assert client.get("/v1/jobs/abc", headers=good).status_code == 404
        job = client.post("/v1/generate", files=upload(), headers=good).json()["job"]
        assert wait_job(client, job, headers=good)["status"] == "done"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect(WS):
                pass
        assert denied.value.status_code == 401
        for kwargs in ({"headers": good}, {"url": WS + "?token=s3cret"}):
            with client.websocket_connect(kwargs.pop("url", WS), **kwargs) as ws:
                ws.send_text(json.dumps({"type": "start"}))
                ws.send_bytes(png())
                assert json.loads(ws.receive_text())["type"] == "ready"


def test_a_foreign_host_name_is_refused(work):
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 gets nothing."""
    with make_client(work) as client:
        assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
        assert client.get("/healthz", headers={"Host": "localhost:7860"}).status_code == 200


def test_job_lifecycle_options_and_the_video(work):
    from vividtalk.data.video import read_frames

    pipe = FakePipeline()
    with make_client(work, pipe) as client:
        answer = client.post("/v1/generate", files=upload(audio=wav(1.0)),
                             data={"pose": "still", "expression_scale": "0.5", "blink": "false", "seed": "5",
                                   "size": "full", "temperature": "0"})
        assert answer.status_code == 202
        job = answer.json()["job"]
        assert answer.json() == {"job": job, "status": "queued"} and answer.headers["location"] == f"/v1/jobs/{job}"
        state = wait_job(client, job)
        assert state == {"job": job, "status": "done", "progress": 1.0, "frames": 25, "error": None,
                         "video": f"/v1/jobs/{job}/video"}
        video = client.get(f"/v1/jobs/{job}/video")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        path = work.parent / "got.mp4"
        path.write_bytes(video.content)
        assert len(read_frames(path)) == 25
    assert pipe.plans == [{"pose": "still", "expression_scale": 0.5, "blink": False, "seed": 5, "temperature": 0.0,
                           "output_size": "full"}]


def test_defaults_match_the_command_line(work):
    pipe = FakePipeline()
    with make_client(work, pipe) as client:
        wait_job(client, client.post("/v1/generate", files=upload()).json()["job"])
    assert pipe.plans == [{"pose": "audio", "expression_scale": 1.0, "blink": True, "seed": 0, "temperature": None,
                           "output_size": "crop"}]


def test_unfinished_video_is_409_unknown_404_and_no_partial_mp4(work):
    gate = threading.Event()
    with make_client(work, FakePipeline(gate=gate, gate_after=10)) as client:
        job = client.post("/v1/generate", files=upload()).json()["job"]
        state = wait_job(client, job, status=("running",))
        deadline = time.monotonic() + 10
        while client.get(f"/v1/jobs/{job}").json()["progress"] < 0.3 and time.monotonic() < deadline:
            time.sleep(0.01)  # frames are being encoded: ten of 25 rendered
        state = client.get(f"/v1/jobs/{job}").json()
        assert state["status"] == "running" and state["frames"] == 25 and 0.3 < state["progress"] < 1
        answer = client.get(f"/v1/jobs/{job}/video")
        assert answer.status_code == 409 and "running" in answer.json()["detail"]
        assert not (work / job / "video.mp4").exists()  # only ffmpeg's temporary name while encoding
        assert client.get("/v1/jobs/nope").status_code == 404
        assert client.get("/v1/jobs/nope/video").status_code == 404
        gate.set()
        assert wait_job(client, job)["status"] == "done"
        assert client.get(f"/v1/jobs/{job}/video").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(work):
    gate = threading.Event()
    with make_client(work, FakePipeline(gate=gate), queue=1) as client:
        first = client.post("/v1/generate", files=upload()).json()["job"]
        wait_job(client, first, status=("running",))
        second = client.post("/v1/generate", files=upload())
        assert second.status_code == 202
        assert client.get("/healthz").json()["queue"] == {"waiting": 1, "running": 1, "capacity": 1}
        third = client.post("/v1/generate", files=upload())
        assert third.status_code == 503 and int(third.headers["retry-after"]) >= 1
        assert "queue is full" in third.json()["detail"]
        assert sorted(p.name for p in work.iterdir()) == sorted([first, second.json()["job"]])
        gate.set()
        assert wait_job(client, second.json()["job"])["status"] == "done"
        assert client.post("/v1/generate", files=upload()).status_code == 202  # room again


def test_an_upload_over_the_limit_is_413(work):
    with make_client(work, max_upload_mb=0.05) as client:
        answer = client.post("/v1/generate", files=upload(audio=wav(2.0)))  # 128 KB of float32 samples
        assert answer.status_code == 413 and "limit of 0.05 MiB" in answer.json()["detail"]
        assert files_in(work) == []
        assert client.post("/v1/generate", files=upload(audio=wav(0.5))).status_code == 202


async def _chunks(n: int, size: int, seen: list[int]):
    """A multipart body (boundary XX) of one endless file part, in ``n`` chunks of ``size`` bytes."""
    part = b'--XX\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    for i in range(n):
        seen.append(size)
        yield part + b"x" * (size - len(part)) if i == 0 else b"x" * size


def test_the_limit_holds_while_reading_without_content_length(tmp_path):
    """A body without (or lying about) Content-Length is cut off at the limit, not read whole."""
    import asyncio

    seen: list[int] = []
    headers = {"content-type": "multipart/form-data; boundary=XX"}
    with pytest.raises(UploadError) as err:
        asyncio.run(read_form(headers, _chunks(1000, 4096, seen), tmp_path, 40_000, ("image", "audio"), ()))
    assert err.value.status == 413 and sum(seen) <= 40_000 + 4096
    seen.clear()
    with pytest.raises(UploadError) as err:  # Content-Length alone refuses before reading
        asyncio.run(read_form({**headers, "content-length": "50000"}, _chunks(10, 10, seen), tmp_path, 40_000,
                              ("image",), ()))
    assert err.value.status == 413 and seen == []


@pytest.mark.parametrize("files, data, message", [
    (upload(image=b"\x89PNG\r\n garbage"), {},
     "cannot read the uploaded image as an image (unsupported or corrupt file)"),
    (upload(audio=b"RIFF not really a wav file"), {},
     "cannot open the uploaded audio: not an audio/video file or corrupt"),
    (upload(audio=wav(0.1)), {}, "the audio is 0.100 s long; at least 0.2 s is needed"),
    (upload(), {"pose": "video"}, "pose: invalid choice 'video' (choose from audio, still)"),
    (upload(), {"size": "huge"}, "size: invalid choice 'huge' (choose from crop, full)"),
    (upload(), {"seed": "one"}, "seed must be an integer, got 'one'"),
    (upload(), {"expression_scale": "-1"}, "expression_scale must be >= 0, got -1.0"),
    (upload(), {"blink": "maybe"}, "blink must be true or false, got 'maybe'"),
    (upload(), {"path": "/etc/passwd"}, "unexpected form field 'path'"),
    ({"image": ("f.png", png(), "image/png")}, {}, "missing the audio file"),
])
def test_bad_input_is_422_with_the_command_lines_message(work, files, data, message):
    with make_client(work) as client:
        answer = client.post("/v1/generate", files=files, data=data)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(message) and str(work) not in detail  # no server path leaks
    assert files_in(work) == []


def test_a_body_that_is_no_form_is_422(work):
    with make_client(work) as client:
        answer = client.post("/v1/generate", content=b"{}", headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and "multipart/form-data" in answer.json()["detail"]
        huge = cv2.imencode(".png", np.zeros((9000, 9000), np.uint8))[1].tobytes()  # 81 Mpx, small file
        answer = client.post("/v1/generate", files=upload(image=huge))
        assert answer.status_code == 422 and "9000x9000 pixels" in answer.json()["detail"]
    assert files_in(work) == []


def test_a_job_without_a_face_fails_with_the_pipelines_message(work):
    with make_client(work) as client:
        job = client.post("/v1/generate", files=upload(image=png(0))).json()["job"]
        state = wait_job(client, job)
        assert state["status"] == "failed" and state["error"] == "no face found in the image (64x64)"
        answer = client.get(f"/v1/jobs/{job}/video")
        assert answer.status_code == 404 and "no face found" in answer.json()["detail"]
        assert files_in(work) == []


def test_an_internal_error_is_not_told_to_the_client(work):
    pipe = FakePipeline(fail=RuntimeError("CUDA out of memory at /secret/path"))
    with make_client(work, pipe) as client:
        state = wait_job(client, client.post("/v1/generate", files=upload()).json()["job"])
    assert state["status"] == "failed" and state["error"].startswith("internal error (RuntimeError)")
    assert "/secret" not in state["error"]
    assert files_in(work) == []


def test_temporary_files_after_success_delete_and_retention(work):
    with make_client(work, keep_jobs=2) as client:
        jobs = []
        for _ in range(3):
            jobs.append(client.post("/v1/generate", files=upload()).json()["job"])
            wait_job(client, jobs[-1])
        # the oldest of three is gone (keep_jobs=2), the others keep just their video
        assert client.get(f"/v1/jobs/{jobs[0]}").status_code == 404
        assert files_in(work) == sorted([jobs[1], f"{jobs[1]}/video.mp4", jobs[2], f"{jobs[2]}/video.mp4"])
        assert client.delete(f"/v1/jobs/{jobs[1]}").status_code == 204
        assert client.get(f"/v1/jobs/{jobs[1]}/video").status_code == 404
        assert files_in(work) == sorted([jobs[2], f"{jobs[2]}/video.mp4"])
    assert files_in(work) == []  # shutdown deletes the rest


def test_videos_expire_after_keep_seconds(work):
    with make_client(work, keep_seconds=0.2) as client:
        job = client.post("/v1/generate", files=upload()).json()["job"]
        wait_job(client, job)
        time.sleep(0.3)
        assert client.get(f"/v1/jobs/{job}").status_code == 404
        assert files_in(work) == []


def test_the_page_or_a_placeholder(work, tmp_path):
    settings = ServerSettings(work_dir=work)
    with TestClient(create_app(FakePipeline(), settings, static_dir=tmp_path / "none"), base_url=BASE) as client:
        answer = client.get("/")
        assert answer.status_code == 200 and "demo page is missing" in answer.text
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<h1>the demo</h1>")
    with TestClient(create_app(FakePipeline(), settings, static_dir=page), base_url=BASE) as client:
        assert client.get("/").text == "<h1>the demo</h1>"
        assert client.get("/healthz").json()["status"] == "ok"  # the API comes before the page


def test_settings_refuse_bad_values():
    for kwargs, message in [({"queue": 0}, "--queue"), ({"max_upload_mb": 0}, "--max-upload-mb"),
                            ({"token": " "}, "token is empty")]:
        with pytest.raises(ValueError, match=message):
            ServerSettings(**kwargs)


def test_the_cli_refuses_bad_options_in_one_line(capsys):
    from vividtalk.cli import main

    assert main(["serve", "--queue", "0"]) == 2
    assert capsys.readouterr().err.strip() == "vividtalk serve: error: --queue must be >= 1, got 0"


@pytest.fixture()
def served(monkeypatch):
    """``vividtalk serve`` / ``demo`` with uvicorn, the weights and the browser replaced by recorders."""
    import uvicorn

    from vividtalk import cli
    from vividtalk.pipeline import VividTalkPipeline

    calls = SimpleNamespace(run=[], opened=[])
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.run.append((app, kw)))
    monkeypatch.setattr(cli, "_open_when_ready", calls.opened.append)
    monkeypatch.setattr(VividTalkPipeline, "from_pretrained", classmethod(lambda cls, w, device: FakePipeline()))
    monkeypatch.delenv("VIVIDTALK_TOKEN", raising=False)
    return calls


def test_serve_and_demo_commands(served, monkeypatch, capsys):
    from vividtalk.cli import main

    assert main(["serve", "--port", "7999", "--queue", "3", "--max-upload-mb", "5"]) == 0
    app, kwargs = served.run[-1]
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 7999 and served.opened == []
    settings = app.state.vividtalk.settings
    assert settings.queue == 3 and settings.max_upload_bytes == 5 * 2**20 and settings.token is None
    out = capsys.readouterr()
    assert "vividtalk server on http://127.0.0.1:7999" in out.out and "warning" not in out.err
    assert main(["demo", "--port", "7999"]) == 0 and served.opened == ["http://127.0.0.1:7999"]
    assert main(["demo", "--no-browser"]) == 0 and len(served.opened) == 1
    assert main(["serve", "--host", "0.0.0.0"]) == 0  # elsewhere than loopback without a token: warned
    assert "warning: listening on 0.0.0.0 without a token" in capsys.readouterr().err
    monkeypatch.setenv("VIVIDTALK_TOKEN", "from-env")
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert served.run[-1][0].state.vividtalk.settings.token == "from-env"
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- WebSocket
def start(ws, options: dict | None = None, image: bytes | None = None) -> dict:
    ws.send_text(json.dumps({"type": "start", "options": options or {}}))
    ws.send_bytes(png() if image is None else image)
    return json.loads(ws.receive_text())


def pcm(samples: int) -> bytes:
    return (0.1 * np.sin(np.arange(samples) / 10)).astype("<f4").tobytes()


def read_frame(message: bytes) -> tuple[int, int, np.ndarray]:
    magic, index, micros = struct.unpack("<4sIq", message[:16])
    assert magic == b"VTFR"
    rgb = cv2.imdecode(np.frombuffer(message[16:], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    return index, micros, rgb


def test_stream_protocol_frames_flush_and_end(work):
    pipe = FakePipeline()
    with make_client(work, pipe) as client, client.websocket_connect(WS) as ws:
        assert start(ws, {"pose": "still", "seed": 4, "blink": False}) == {"type": "ready", "fps": 25, "size": 64}
        ws.send_bytes(pcm(1000))  # 1 whole frame
        ws.send_bytes(pcm(1000))  # 3 whole frames in all
        frames = [read_frame(ws.receive_bytes()) for _ in range(3)]
        ws.send_text(json.dumps({"type": "flush"}))  # 2000 samples: a 4th frame, padded
        frames.append(read_frame(ws.receive_bytes()))
        assert json.loads(ws.receive_text()) == {"type": "flushed", "frames": 4, "total": 4}
        ws.send_bytes(pcm(700))  # a whole frame, and 60 samples pending
        ws.send_text(json.dumps({"type": "end"}))  # end flushes what is pending
        frames += [read_frame(ws.receive_bytes()) for _ in range(2)]
        assert json.loads(ws.receive_text()) == {"type": "flushed", "frames": 2, "total": 6}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1000
    assert [f[0] for f in frames] == [0, 1, 2, 3, 4, 5]
    assert [f[1] for f in frames] == [0, 40_000, 80_000, 120_000, 160_000, 200_000]
    for index, _, rgb in frames:
        assert rgb.shape == (64, 64, 3) and np.abs(rgb.astype(int) - fake_frame(index)).max() <= 3
    session = pipe.sessions[0]
    assert session.options == {"pose": "still", "expression_scale": 1.0, "blink": False, "seed": 4,
                               "temperature": None}
    assert session.closed


@pytest.mark.parametrize("first, second, code, message", [
    ("not json", None, 1003, "text messages must be JSON"),
    (json.dumps({"type": "hello"}), None, 1008, "the first message must be"),
    (json.dumps({"type": "start", "options": {"size": "full"}}), None, 1008, "unknown option 'size'"),
    (json.dumps({"type": "start", "options": {"pose": "dance"}}), None, 1008, "pose: invalid choice"),
    (json.dumps({"type": "start", "options": {"seed": 1.5}}), None, 1008, "seed must be an integer, got 1.5"),
    (json.dumps({"type": "start", "options": 5}), None, 1008, "the options must be an object"),
    (json.dumps({"type": "start"}), json.dumps({"type": "flush"}), 1008, "after start, send the image"),
    (json.dumps({"type": "start"}), b"not an image", 1003, "cannot read the uploaded image"),
    (json.dumps({"type": "start"}), png(0), 1003, "no face found"),
])
def test_stream_bad_start_is_an_error_then_a_close(work, first, second, code, message):
    with make_client(work) as client, client.websocket_connect(WS) as ws:
        ws.send_text(first)
        if second is not None:
            ws.send_text(second) if isinstance(second, str) else ws.send_bytes(second)
        error = json.loads(ws.receive_text())
        assert error["type"] == "error" and error["message"].startswith(message), error
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == code


@pytest.mark.parametrize("message, code, text", [
    (b"\x00\x00\x80", 1003, "audio messages are float32 little-endian samples"),
    (np.array([0.0, np.nan], "<f4").tobytes(), 1003, "the audio contains NaN"),
    ('{"type": "dance"}', 1008, "unknown message type 'dance'"),
])
def test_stream_bad_audio_or_message(work, message, code, text):
    pipe = FakePipeline()
    with make_client(work, pipe) as client, client.websocket_connect(WS) as ws:
        start(ws)
        ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(message)
        error = json.loads(ws.receive_text())
        assert error["type"] == "error" and error["message"].startswith(text)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == code
    assert pipe.sessions[0].closed


def test_streams_beyond_the_limit_are_told_to_try_later(work):
    with make_client(work, max_streams=1) as client, client.websocket_connect(WS) as first:
        assert start(first)["type"] == "ready"
        with client.websocket_connect(WS) as second:
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_text()
            assert closed.value.code == 1013 and closed.value.reason == "try again later"
        assert client.get("/healthz").json()["streams"] == {"active": 1, "capacity": 1}


def test_a_stream_buffering_too_much_audio_is_closed(work):
    pipe = FakePipeline(push_delay=0.5)  # generation far slower than the client sends
    with make_client(work, pipe, stream_buffer_mb=0.01) as client, client.websocket_connect(WS) as ws:
        start(ws)
        for _ in range(10):
            ws.send_bytes(pcm(640))  # 2.5 KB each; 10 KiB may wait
        while True:
            message = ws.receive()
            if "text" in message and message["text"]:
                break
        error = json.loads(message["text"])
        assert error["type"] == "error" and "of audio waiting" in error["message"]


def test_a_client_leaving_frees_its_session_at_once(work):
    pipe = FakePipeline(push_delay=0.2)
    with make_client(work, pipe) as client:
        with client.websocket_connect(WS) as ws:
            start(ws)
            for _ in range(20):  # 4 s of generation queued
                ws.send_bytes(pcm(640))
            ws.receive_bytes()
        began = time.monotonic()
        while not pipe.sessions[0].closed and time.monotonic() - began < 5:
            time.sleep(0.01)
        assert client.get("/healthz").json()["streams"]["active"] == 0
        assert pipe.sessions[0].closed and time.monotonic() - began < 1.0  # queued audio dropped


def test_an_idle_stream_is_closed(work):
    with make_client(work, stream_idle_seconds=0.2) as client, client.websocket_connect(WS) as ws:
        error = json.loads(ws.receive_text())
        assert error == {"type": "error", "message": "no message for 0.2 s: closing the stream"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008


def test_a_client_waiting_for_its_frames_is_not_idle(work):
    pipe = FakePipeline(push_delay=0.4)
    with make_client(work, pipe, stream_idle_seconds=0.25) as client, client.websocket_connect(WS) as ws:
        start(ws)
        for _ in range(3):
            ws.send_bytes(pcm(640))
        indexes = [read_frame(ws.receive_bytes())[0] for _ in range(3)]  # 1.2 s of generation, silent client
        assert indexes == [0, 1, 2]
        error = json.loads(ws.receive_text())  # then it is idle
        assert error["message"].startswith("no message for 0.25 s")


def test_a_pipeline_that_cannot_stream_says_so(work):
    with make_client(work, SimpleNamespace(device="cpu")) as client, client.websocket_connect(WS) as ws:
        error = start(ws)
        assert error["type"] == "error" and "cannot stream" in error["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1011


def test_stream_with_the_real_streaming_core(work, tiny_pipeline_dir, portrait):
    pytest.importorskip("vividtalk.streaming")
    from vividtalk.pipeline import VividTalkPipeline

    pipe = VividTalkPipeline.from_pretrained(tiny_pipeline_dir)
    image = cv2.imencode(".jpg", portrait[..., ::-1])[1].tobytes()
    with make_client(work, pipe) as client, client.websocket_connect(WS) as ws:
        assert start(ws, {"seed": 1}, image) == {"type": "ready", "fps": 25, "size": 256}
        for _ in range(5):
            ws.send_bytes(pcm(3200))  # 1 s in all: 25 frames
        ws.send_text(json.dumps({"type": "end"}))
        frames = []
        while True:
            message = ws.receive()
            if message.get("text"):
                break
            frames.append(read_frame(message["bytes"]))
        assert json.loads(message["text"]) == {"type": "flushed", "frames": 25, "total": 25}
    assert [f[0] for f in frames] == list(range(25)) and frames[0][2].shape == (256, 256, 3)
    assert [f[1] for f in frames] == [40_000 * i for i in range(25)]
