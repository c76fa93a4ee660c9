"""vividtalk serve as a real server on 127.0.0.1 (uvicorn, real sockets; not only TestClient):
a bounded load test of 16 concurrent jobs on the packaged demo weights (every job finishes,
each mp4 has the audio's frame count, the server's peak RSS), a full queue's 503, the server's
temporary files, and 4 concurrent WebSocket streams (a fake pipeline, and the real streaming
core when it is there). ``pytest -s`` shows the load figures."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from vividtalk.audio.io import load_audio
from vividtalk.data.video import read_frames
from vividtalk.face.visualize import default_portrait
from vividtalk.pipeline import demo_weights_dir

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
websockets_client = pytest.importorskip("websockets.sync.client")


# ---------------------------------------------------------------------------- clients
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None,
            timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one HTTP request (errors too)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def multipart(files: dict[str, bytes], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, content in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_job(url: str, image: bytes, audio: bytes, **fields) -> tuple[int, dict, dict]:
    body, kind = multipart({"image": image, "audio": audio}, {k: str(v) for k, v in fields.items()})
    status, headers, answer = request(f"{url}/v1/generate", body, {"Content-Type": kind})
    return status, headers, json.loads(answer)


def wait_done(url: str, job: str, timeout: float = 150) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = json.loads(request(f"{url}/v1/jobs/{job}")[2])
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish: {state}")


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def inputs() -> SimpleNamespace:
    """The default portrait as PNG; 1 s and all (5.4 s) of the demo speech as wav."""
    speech = load_audio(str(demo_weights_dir() / "speech.wav"))

    def as_wav(samples: np.ndarray) -> bytes:
        buf = io.BytesIO()
        wavfile.write(buf, SR, samples.astype(np.float32))
        return buf.getvalue()

    png = cv2.imencode(".png", default_portrait()[..., ::-1])[1].tobytes()
    return SimpleNamespace(png=png, one_second=as_wav(speech[:SR]), whole=as_wav(speech),
                           whole_seconds=len(speech) / SR)


# ---------------------------------------------------------------------------- servers
@contextmanager
def cli_server(tmp: Path, *args: str):
    """``vividtalk serve`` in a subprocess (its own TMPDIR, to see what it leaves); yields
    (url, process); stopped with SIGTERM (a graceful uvicorn shutdown) at the end."""
    port, tmp_dir = free_port(), tmp / f"tmp{uuid.uuid4().hex[:6]}"
    tmp_dir.mkdir()
    log = (tmp / f"server-{port}.log").open("w")
    env = {**os.environ, "TMPDIR": str(tmp_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("VIVIDTALK_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "vividtalk.cli", "serve", "--port", str(port), *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log.name)
        yield SimpleNamespace(url=url, proc=proc, tmp=tmp_dir, log=Path(log.name))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{Path(log).read_text()[-3000:]}")
        try:
            if request(f"{url}/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"the server did not come up:\n{Path(log).read_text()[-3000:]}")


@contextmanager
def thread_server(app):
    """A uvicorn server for ``app`` on a thread of this process (real sockets, injected fakes)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """``vividtalk serve --queue 16`` on the demo weights, shared by the load and stream tests."""
    with cli_server(tmp_path_factory.mktemp("live"), "--queue", "16") as server:
        yield server


# ---------------------------------------------------------------------------- HTTP load
@pytest.mark.slow
def test_load_16_concurrent_jobs_on_a_real_server(real_server, inputs, tmp_path):
    """16 clients post at once; every job finishes, none is lost, each mp4 has 25 frames (1 s)."""
    url, n = real_server.url, 16
    began = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        posted = list(pool.map(lambda i: post_job(url, inputs.png, inputs.one_second, seed=i), range(n)))
        assert [p[0] for p in posted] == [202] * n, [p[2] for p in posted]
        jobs = [p[2]["job"] for p in posted]
        assert len(set(jobs)) == n
        states = list(pool.map(lambda job: wait_done(url, job), jobs))
    wall = time.perf_counter() - began
    failures = [s for s in states if s["status"] != "done"]
    peak = vm_hwm_mb(real_server.proc.pid)
    print(f"\nload: {n} requests, {len(failures)} failures, {wall:.1f} s wall ({wall / n:.2f} s a job on one "
          f"worker), server peak RSS (VmHWM) {peak:.0f} MiB")
    assert not failures, failures
    for job, state in zip(jobs, states):
        assert state["frames"] == 25 and state["progress"] == 1.0
        status, headers, body = request(f"{url}/v1/jobs/{job}/video")
        assert status == 200 and headers["content-type"] == "video/mp4" and int(headers["content-length"]) == len(body)
        path = tmp_path / f"{job}.mp4"
        path.write_bytes(body)
        assert len(read_frames(path)) == 25
        assert abs(len(load_audio(str(path))) / SR - 1.0) < 0.1  # the audio track is muxed in
    # the server keeps just each job's video: no uploads, decoded inputs or partial files
    (work,) = real_server.tmp.glob("vividtalk-server-*")
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert left == sorted(f"{job}/video.mp4" for job in jobs)
    assert peak < 4096


@pytest.mark.slow
def test_a_full_queue_answers_503_and_shutdown_leaves_no_files(tmp_path, inputs):
    with cli_server(tmp_path, "--queue", "1") as server:
        with ThreadPoolExecutor(5) as pool:  # 5.4 s of audio: each job takes seconds
            posted = list(pool.map(lambda i: post_job(server.url, inputs.png, inputs.whole, seed=i), range(5)))
        statuses = sorted(p[0] for p in posted)
        assert 503 in statuses and 202 in statuses, statuses
        for status, headers, body in posted:
            if status == 503:
                assert int(headers["retry-after"]) >= 1 and "queue is full" in body["detail"]
        frames = int(np.ceil(inputs.whole_seconds * 25))
        for status, _, body in posted:
            if status == 202:
                state = wait_done(server.url, body["job"])
                assert state["status"] == "done" and state["frames"] == frames
        status, _, body = request(f"{server.url}/v1/jobs/{posted[0][2].get('job', 'x')}/nothing")
        assert status == 404
        assert list(server.tmp.glob("vividtalk-server-*"))
    assert not list(server.tmp.glob("vividtalk-server-*"))  # a graceful stop removes the work folder
    print(f"\n503 test: {statuses.count(202)} accepted, {statuses.count(503)} refused with 503 (queue 1)")


# ---------------------------------------------------------------------------- WebSocket
def stream_once(address: str, image: bytes, audio: np.ndarray, chunk: int = 1600, token: str | None = None,
                options: dict | None = None) -> dict:
    """One stream: start, the image, ``audio`` in chunks, end; the frames' indexes and times."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with websockets_client.connect(f"ws://{address}/v1/stream", additional_headers=headers, proxy=None,
                                   max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "options": options or {}}))
        ws.send(image)
        ready = json.loads(ws.recv(timeout=120))
        for s in range(0, len(audio), chunk):
            ws.send(audio[s:s + chunk].astype("<f4").tobytes())
        ws.send(json.dumps({"type": "end"}))
        frames, flushed = [], None
        while flushed is None:
            message = ws.recv(timeout=120)
            if isinstance(message, str):
                flushed = json.loads(message)
            else:
                magic, index, micros = struct.unpack("<4sIq", message[:16])
                assert magic == b"VTFR"
                jpeg = cv2.imdecode(np.frombuffer(message[16:], np.uint8), cv2.IMREAD_COLOR)
                frames.append((index, micros, jpeg.shape))
    return {"ready": ready, "flushed": flushed, "frames": frames}


def _fake_app():
    from test_server import FakePipeline

    from vividtalk.server import ServerSettings
    from vividtalk.server.app import create_app

    pipe = FakePipeline(push_delay=0.1)  # 1 s of audio in 10 chunks: a stream lasts a second
    return pipe, create_app(pipe, ServerSettings(max_streams=4))


def _active(address: str) -> int:
    return json.loads(request(f"http://{address}/healthz")[2])["streams"]["active"]


def test_four_concurrent_streams_on_a_real_socket_fake_pipeline(inputs):
    """4 streams at once through uvicorn; a 5th meanwhile gets 1013; a client that drops its
    connection mid-stream frees its session."""
    from websockets.exceptions import ConnectionClosed

    pipe, app = _fake_app()
    audio = (0.1 * np.sin(np.arange(SR) / 7)).astype(np.float32)
    with thread_server(app) as address:
        with websockets_client.connect(f"ws://{address}/v1/stream", proxy=None) as holder:
            holder.send(json.dumps({"type": "start"}))
            holder.send(inputs.png)
            assert json.loads(holder.recv(timeout=10))["type"] == "ready"
            with ThreadPoolExecutor(3) as pool:  # the holder and these three: 4 at once
                results = list(pool.map(lambda _: stream_once(address, inputs.png, audio), range(3)))
            with ThreadPoolExecutor(3) as pool:  # again, and a fifth while these run
                busy = [pool.submit(stream_once, address, inputs.png, audio) for _ in range(3)]
                end = time.monotonic() + 20
                while _active(address) < 4 and time.monotonic() < end:
                    time.sleep(0.02)
                with websockets_client.connect(f"ws://{address}/v1/stream", proxy=None) as fifth:
                    with pytest.raises(ConnectionClosed) as closed:
                        fifth.recv(timeout=10)
                assert closed.value.rcvd.code == 1013 and closed.value.rcvd.reason == "try again later"
                results += [f.result() for f in busy]
        for _ in range(30):  # the holder left without ending: its session is freed
            if pipe.sessions[0].closed:
                break
            time.sleep(0.1)
        assert pipe.sessions[0].closed
    for result in results:
        assert result["ready"] == {"type": "ready", "fps": 25, "size": 64}
        assert result["flushed"] == {"type": "flushed", "frames": 25, "total": 25}
        assert [f[0] for f in result["frames"]] == list(range(25))
        assert [f[1] for f in result["frames"]] == [40_000 * i for i in range(25)]
    assert all(s.closed for s in pipe.sessions)


def test_stream_token_over_a_real_socket(inputs):
    from websockets.exceptions import InvalidStatus

    from test_server import FakePipeline
    from vividtalk.server import ServerSettings
    from vividtalk.server.app import create_app

    app = create_app(FakePipeline(), ServerSettings(token="t0k"))
    audio = np.zeros(SR // 5, np.float32)
    with thread_server(app) as address:
        with pytest.raises(InvalidStatus) as refused:
            stream_once(address, inputs.png, audio)
        assert refused.value.response.status_code == 401
        assert stream_once(address, inputs.png, audio, token="t0k")["flushed"]["frames"] == 5
        status, _, _ = request(f"http://{address}/v1/jobs/x")
        assert status == 401


@pytest.mark.slow
def test_four_concurrent_streams_with_the_real_streaming_core(real_server, inputs):
    pytest.importorskip("vividtalk.streaming")
    speech = load_audio(str(demo_weights_dir() / "speech.wav"))[:SR]
    address = real_server.url.removeprefix("http://")
    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: stream_once(address, inputs.png, speech, chunk=640 * 4,
                                                      options={"seed": i}), range(4)))
    wall = time.perf_counter() - began
    print(f"\nstreams: 4 concurrent real streams of 1 s in {wall:.1f} s; server peak RSS "
          f"{vm_hwm_mb(real_server.proc.pid):.0f} MiB")
    for result in results:
        assert result["ready"] == {"type": "ready", "fps": 25, "size": 256}
        assert result["flushed"]["total"] == 25
        assert [f[0] for f in result["frames"]] == list(range(25)) and result["frames"][0][2] == (256, 256, 3)
