"""The web demo page (vividtalk/server/static/) in a real headless Chromium against a real
``vividtalk serve`` with the packaged demo weights.

Needs Debian's Chromium (``apt-get install chromium``: /usr/bin/chromium, or $VIVIDTALK_CHROMIUM)
and Playwright for Python (``pip install playwright``; no ``playwright install``: the system
Chromium is driven). Skips with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow

SPEECH = Path(__file__).resolve().parents[1] / "vividtalk" / "pretrained" / "demo" / "speech.wav"
CLIP_SECONDS = 2.0
SCREENSHOT_COPY = Path("/work/out/web_demo.png")


def _chromium() -> str:
    path = os.environ.get("VIVIDTALK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.skip("Chromium is not installed (apt-get install chromium, or set VIVIDTALK_CHROMIUM)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vividtalk_command() -> list[str]:
    script = Path(sys.executable).with_name("vividtalk")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from vividtalk.cli import main; sys.exit(main())"]


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The demo portrait as a PNG, a 2 s cut of the demo speech, and a text file named .png."""
    from PIL import Image

    from vividtalk.face.visualize import default_portrait

    root = tmp_path_factory.mktemp("web_demo_files")
    portrait = root / "portrait.png"
    Image.fromarray(default_portrait()).save(portrait)
    speech = root / "speech_2s.wav"
    with wave.open(str(SPEECH)) as src, wave.open(str(speech), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(CLIP_SECONDS * src.getframerate())))
    bad = root / "not_an_image.png"
    bad.write_text("this is a text file, not a photo\n")
    return {"portrait": portrait, "speech": speech, "bad": bad, "speech_full": SPEECH}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``vividtalk serve`` on a free port; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("web_demo_server") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_vividtalk_command() + ["serve", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vividtalk serve exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    if json.load(r).get("status") == "ok":
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vividtalk serve did not answer /healthz within 120 s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield {"url": base, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(files):
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox",                                  # CI runs as root
            "--use-fake-ui-for-media-stream",                # grant the microphone without a prompt
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={files['speech_full']}",
            "--autoplay-policy=no-user-gesture-required",
        ])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    """A fresh page on the demo, recording every request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.console_lines = []
    page.on("console", lambda msg: page.console_lines.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: page.console_lines.append(f"pageerror: {err}"))
    page.goto(server["url"] + "/")
    page.wait_for_function("document.getElementById('health').textContent.startsWith('Server ok')",
                           timeout=10_000)
    yield page
    context.close()


def _assert_only_own_host(page, server) -> None:
    own = urlsplit(server["url"]).netloc
    foreign = [u for u in page.requests
               if urlsplit(u).scheme not in ("blob", "data") and urlsplit(u).netloc != own]
    assert not foreign, f"the page contacted other hosts: {foreign}"


def _post_generate(base: str, image: Path, audio: Path) -> tuple[int, dict]:
    """POST /v1/generate directly (multipart by hand), for the server's own error message."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, path, ctype in (("image", image, "image/png"), ("audio", audio, "audio/wav")):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
                 f"Content-Type: {ctype}\r\n\r\n").encode() + path.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/v1/generate", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _wait_video_or_error(page, timeout_ms: int):
    page.wait_for_function(
        """() => { const v = document.getElementById('video');
                   return !document.getElementById('error').hidden
                       || (v.src && v.readyState >= 2 && isFinite(v.duration) && v.duration > 0); }""",
        timeout=timeout_ms, polling=250)
    error = page.locator("#error")
    return error.inner_text() if error.is_visible() else None


def test_generate_in_browser(page, server, files, tmp_path):
    start = time.monotonic()
    page.set_input_files("#image", str(files["portrait"]))
    page.wait_for_function("document.getElementById('image-preview').complete "
                           "&& document.getElementById('image-preview').naturalWidth === 512")
    page.set_input_files("#audio", str(files["speech"]))
    assert page.locator("#audio-preview").is_visible()
    page.click("#generate")

    error = _wait_video_or_error(page, 120_000)
    assert error is None, f"the page shows an error: {error}\nserver log:\n{_log_tail(server['log'])}"
    state = page.evaluate("""() => { const v = document.getElementById('video');
        return {src: v.src, width: v.videoWidth, height: v.videoHeight, duration: v.duration,
                progress: document.getElementById('progress').value,
                status: document.getElementById('status').textContent}; }""")
    assert state["src"].startswith("blob:")
    assert state["width"] == 256 and state["height"] == 256, state
    assert abs(state["duration"] - CLIP_SECONDS) < 0.2, state
    assert state["progress"] == 1 and state["status"] == "Done.", state

    times = page.evaluate("""async () => { const v = document.getElementById('video');
        v.muted = true; v.currentTime = 0; await v.play();
        const t0 = v.currentTime; await new Promise(r => setTimeout(r, 800));
        const t1 = v.currentTime; v.pause(); return [t0, t1]; }""")
    assert times[1] > times[0] + 0.2, f"playing did not advance currentTime: {times}"

    # A frame from the middle of the clip for the screenshot.
    page.evaluate("""() => new Promise(resolve => { const v = document.getElementById('video');
        v.addEventListener('seeked', resolve, {once: true}); v.currentTime = 1.0; })""")
    page.wait_for_timeout(300)
    shot = tmp_path / "web_demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    try:
        SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT_COPY)
    except OSError:
        pass                                               # the copy is a convenience only
    _assert_only_own_host(page, server)
    assert not [line for line in page.console_lines if line.startswith("pageerror")], page.console_lines
    print(f"generated and played in the browser in {time.monotonic() - start:.1f} s")


def test_bad_image_shows_server_message(page, server, files):
    status, body = _post_generate(server["url"], files["bad"], files["speech"])
    assert status == 422, (status, body)
    detail = body.get("detail")

    page.set_input_files("#image", str(files["bad"]))
    page.set_input_files("#audio", str(files["speech"]))
    page.click("#generate")
    error = _wait_video_or_error(page, 60_000)
    assert error is not None, "no error shown for a text file as the photo"
    assert "422" in error
    if isinstance(detail, str):
        assert detail in error, (detail, error)
    assert page.locator("#video").is_hidden()
    assert page.locator("#generate").is_enabled()
    _assert_only_own_host(page, server)


def test_live_mode_draws_frames(page, server, files, tmp_path):
    """Live mode with Chromium's fake microphone playing the demo speech: frames arrive over the
    WebSocket and are drawn on the canvas; Stop flushes the utterance."""
    page.set_input_files("#image", str(files["portrait"]))
    page.click("#live-start")
    try:
        page.wait_for_function("Number(document.getElementById('live-canvas').dataset.frames || 0) >= 10 "
                               "|| !document.getElementById('live-error').hidden", timeout=60_000, polling=250)
    finally:
        live_error = page.locator("#live-error")
        message = live_error.inner_text() if live_error.is_visible() else None
    assert message is None, f"live mode error: {message}\nserver log:\n{_log_tail(server['log'])}"
    page.click("#live-stop")
    page.wait_for_function("document.getElementById('live-start').disabled === false", timeout=60_000)
    status = page.locator("#live-status").inner_text()
    assert status.startswith("Live: finished ("), status
    # Something other than a black canvas was drawn.
    lit = page.evaluate("""() => { const c = document.getElementById('live-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
        return s / (d.length / 4) / 3; }""")
    page.locator("section.live").screenshot(path=str(tmp_path / "web_demo_live.png"))
    assert lit > 60, f"the live canvas shows no face (mean brightness {lit:.1f})"
    _assert_only_own_host(page, server)
