// VividTalk web demo (see the comment at the top of index.html). No dependencies, no other hosts.
"use strict";

const $ = (id) => document.getElementById(id);

const SAMPLE_RATE = 16000;           // the live stream's PCM rate
const CHUNK_SAMPLES = 1600;          // 100 ms of it per WebSocket message
const POLL_MS = 500;                 // job polling interval
const LIVE_LATENCY_MS = 150;         // frames are shown this long after the first one arrives
const MAX_LAG_SECONDS = 8;           // audio sent but not yet answered by frames: beyond this, drop

// ---------------------------------------------------------------- shared helpers

function token() {
  return $("token").value.trim();
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function show(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function formatDetail(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {        // FastAPI's validation errors: [{loc, msg, ...}]
    return detail.map((d) => (d && d.msg ? `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}` : JSON.stringify(d)))
      .join("\n");
  }
  return JSON.stringify(detail);
}

// A readable message for a failed response: the server's own "detail" plus what the status means.
async function errorMessage(response) {
  let detail = "";
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      detail = formatDetail(body.detail ?? body.error ?? body.message ?? text);
    } catch (_) {
      detail = text.trim();
    }
  } catch (_) { /* no body */ }
  const status = response.status;
  if (status === 401 || status === 403) {
    $("token").closest("details").open = true;
    return `Not authorised (${status}): ${detail || "this server needs an access token"}. Enter it under "Access token".`;
  }
  if (status === 413) return `The file is too large (413)${detail ? `: ${detail}` : "."}`;
  if (status === 422) return `The server could not use the files (422): ${detail || "invalid input"}`;
  if (status === 503) {
    const retry = response.headers.get("Retry-After");
    return `The server is busy (503)${detail ? `: ${detail}` : ""}. Try again${retry ? ` in ${retry} s` : " later"}.`;
  }
  return `Request failed (${status} ${response.statusText})${detail ? `: ${detail}` : ""}`;
}

// The options of the form; the live stream takes all but "size" (its frames are the crop).
function options() {
  const seed = $("seed").value.trim();
  const opts = {
    pose: document.querySelector('input[name="pose"]:checked').value,
    expression_scale: Number($("expression-scale").value),
    blink: $("blink").checked,
    size: $("size").value,
  };
  if (seed !== "") opts.seed = Math.trunc(Number(seed));
  return opts;
}

// ---------------------------------------------------------------- inputs

let speech = null;        // the Blob/File to upload as "audio": the chosen file or the last recording
let imagePreviewUrl = null;
let audioPreviewUrl = null;

function imageFile() {
  return $("image").files[0] || null;
}

$("image").addEventListener("change", () => {
  if (imagePreviewUrl) URL.revokeObjectURL(imagePreviewUrl);
  imagePreviewUrl = null;
  const file = imageFile();
  const preview = $("image-preview");
  if (file) {
    imagePreviewUrl = URL.createObjectURL(file);
    preview.src = imagePreviewUrl;
  }
  preview.hidden = !file;
});

function setSpeech(blob, label) {
  speech = blob;
  if (audioPreviewUrl) URL.revokeObjectURL(audioPreviewUrl);
  audioPreviewUrl = blob ? URL.createObjectURL(blob) : null;
  const preview = $("audio-preview");
  if (audioPreviewUrl) preview.src = audioPreviewUrl;
  preview.hidden = !blob;
  $("record-status").textContent = label || "";
}

$("audio").addEventListener("change", () => {
  const file = $("audio").files[0] || null;
  setSpeech(file, file ? `Using ${file.name}` : "");
});

// Recording with MediaRecorder: the result is uploaded like a chosen file.
let recorder = null;

$("record").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $("record-status").textContent = "Recording is not supported by this browser (or the page is not on https/localhost).";
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    $("record-status").textContent = `No microphone: ${err.message || err.name}`;
    return;
  }
  const mimeType = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"]
    .find((t) => MediaRecorder.isTypeSupported(t)) || "";
  recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  const started = performance.now();
  recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((t) => t.stop());
    const type = recorder.mimeType || mimeType || "audio/webm";
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    const file = new File(chunks, `recording.${ext}`, { type });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("audio").value = "";
    setSpeech(file, `Using the recording (${seconds} s)`);
    recorder = null;
    $("record").disabled = false;
    $("record-stop").disabled = true;
    $("record").focus();
  });
  recorder.start();
  $("record").disabled = true;
  $("record-stop").disabled = false;
  $("record-stop").focus();
  $("record-status").textContent = "Recording\u2026";
});

$("record-stop").addEventListener("click", () => {
  if (recorder && recorder.state !== "inactive") recorder.stop();
});

$("expression-scale").addEventListener("input", () => {
  $("expression-scale-value").textContent = Number($("expression-scale").value).toFixed(2);
});

// ---------------------------------------------------------------- generate

let videoUrl = null;
let generating = false;

function setProgress(value) {
  const bar = $("progress");
  bar.hidden = value == null;
  if (value != null) bar.value = Math.max(0, Math.min(1, value));
}

function finishGenerate(error) {
  generating = false;
  $("generate").disabled = false;
  if (error) {
    setProgress(null);
    $("status").textContent = "";
    show($("error"), error);
  }
}

async function fetchJson(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

async function pollJob(job) {
  for (;;) {
    const state = await fetchJson(`v1/jobs/${encodeURIComponent(job)}`);
    if (typeof state.progress === "number") setProgress(state.progress);
    if (state.status === "done") return;
    if (state.status === "failed") throw new Error(`Generation failed: ${state.error || "unknown error"}`);
    $("status").textContent = state.status === "queued" ? "Queued\u2026"
      : `Generating\u2026 ${Math.round(100 * (state.progress || 0))} %`;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

$("generate").addEventListener("click", async () => {
  if (generating) return;
  show($("error"), "");
  const image = imageFile();
  if (!image) { show($("error"), "Choose a face photo first."); $("image").focus(); return; }
  if (!speech) { show($("error"), "Choose a speech file or record one first."); $("audio").focus(); return; }

  generating = true;
  $("generate").disabled = true;
  setProgress(0);
  $("status").textContent = "Uploading\u2026";
  const form = new FormData();
  form.append("image", image, image.name || "photo.png");
  form.append("audio", speech, speech.name || "speech.webm");
  for (const [key, value] of Object.entries(options())) form.append(key, String(value));

  try {
    const response = await fetch("v1/generate", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const { job } = await response.json();
    $("status").textContent = "Queued\u2026";
    await pollJob(job);
    $("status").textContent = "Downloading the video\u2026";
    const video = await fetch(`v1/jobs/${encodeURIComponent(job)}/video`, { headers: authHeaders() });
    if (!video.ok) throw new Error(await errorMessage(video));
    const blob = await video.blob();
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = URL.createObjectURL(blob.type ? blob : new Blob([blob], { type: "video/mp4" }));
    const player = $("video");
    player.src = videoUrl;
    player.hidden = false;
    const link = $("download");
    link.href = videoUrl;
    link.hidden = false;
    setProgress(1);
    $("status").textContent = "Done.";
    finishGenerate(null);
  } catch (err) {
    finishGenerate(err.message || String(err));
  }
});

// ---------------------------------------------------------------- live mode

const live = {
  ws: null, audio: null, stream: null, nodes: [], pending: new Float32Array(0),
  queue: [], clockBase: null, raf: 0, stopping: false, closeTimer: 0,
  sentSeconds: 0, answeredSeconds: 0, dropped: false, failed: false, opened: false,
};

function liveStatus(text) { $("live-status").textContent = text; }

// A streaming resampler to 16 kHz (used only when the browser will not run an AudioContext at
// 16 kHz): a running mean over one output period against aliasing, then linear interpolation.
function makeResampler(fromRate) {
  if (fromRate === SAMPLE_RATE) return (x) => x;
  const step = fromRate / SAMPLE_RATE;
  const width = Math.max(1, Math.round(step));
  const history = new Float32Array(width);
  let histPos = 0, sum = 0;
  let carry = new Float32Array(0);
  let pos = 0;                        // the next output sample's position in `carry + input`
  return (input) => {
    const filtered = new Float32Array(input.length);
    for (let i = 0; i < input.length; i++) {
      sum += input[i] - history[histPos];
      history[histPos] = input[i];
      histPos = (histPos + 1) % width;
      filtered[i] = sum / width;
    }
    const x = new Float32Array(carry.length + filtered.length);
    x.set(carry);
    x.set(filtered, carry.length);
    const out = [];
    while (pos + 1 < x.length) {
      const i = Math.floor(pos), f = pos - i;
      out.push(x[i] * (1 - f) + x[i + 1] * f);
      pos += step;
    }
    const keep = Math.min(Math.floor(pos), x.length);
    carry = x.slice(keep);
    pos -= keep;
    return Float32Array.from(out);
  };
}

function sendPcm(samples) {
  const ws = live.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const buffer = new ArrayBuffer(samples.length * 4);
  const view = new DataView(buffer);
  for (let i = 0; i < samples.length; i++) view.setFloat32(4 * i, samples[i], true);   // little-endian
  ws.send(buffer);
}

// A server slower than real time falls behind the microphone; rather than let its buffer
// overflow (it closes the stream), audio beyond MAX_LAG_SECONDS ahead of the frames is dropped.
function sendChunk(chunk) {
  if (live.sentSeconds - live.answeredSeconds > MAX_LAG_SECONDS) {
    if (!live.dropped) liveStatus("Live: the server is slower than real time; dropping microphone audio\u2026");
    live.dropped = true;
    return;
  }
  sendPcm(chunk);
  live.sentSeconds += chunk.length / SAMPLE_RATE;
}

function pushAudio(samples) {
  const merged = new Float32Array(live.pending.length + samples.length);
  merged.set(live.pending);
  merged.set(samples, live.pending.length);
  let start = 0;
  for (; start + CHUNK_SAMPLES <= merged.length; start += CHUNK_SAMPLES) {
    sendChunk(merged.subarray(start, start + CHUNK_SAMPLES));
  }
  live.pending = merged.slice(start);
}

// The AudioContext is made in the click handler (a user gesture); 16 kHz where supported.
function makeAudioContext() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) throw new Error("the Web Audio API is not supported by this browser");
  try {
    return new Context({ sampleRate: SAMPLE_RATE });
  } catch (_) {
    return new Context();
  }
}

async function startCapture() {
  let ctx = live.audio;
  let source;
  try {
    source = ctx.createMediaStreamSource(live.stream);
  } catch (_) {                       // e.g. a browser that cannot mix sample rates: use its own rate
    await ctx.close();
    ctx = live.audio = new (window.AudioContext || window.webkitAudioContext)();
    source = ctx.createMediaStreamSource(live.stream);
  }
  if (ctx.state === "suspended") await ctx.resume();
  const resample = makeResampler(ctx.sampleRate);
  const onSamples = (samples) => { if (!live.stopping) pushAudio(resample(samples)); };
  const mute = ctx.createGain();
  mute.gain.value = 0;                // keep the tap in the rendered graph without playing it back
  let tap;
  if (ctx.audioWorklet && window.AudioWorkletNode) {
    await ctx.audioWorklet.addModule("pcm-worklet.js");
    tap = new AudioWorkletNode(ctx, "pcm-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
    tap.port.onmessage = (e) => onSamples(e.data);
  } else {
    tap = ctx.createScriptProcessor(2048, 1, 1);
    tap.onaudioprocess = (e) => onSamples(new Float32Array(e.inputBuffer.getChannelData(0)));
  }
  source.connect(tap);
  tap.connect(mute);
  mute.connect(ctx.destination);
  live.nodes = [source, tap, mute];
  liveStatus(`Live: streaming the microphone (${ctx.sampleRate} Hz${ctx.sampleRate === SAMPLE_RATE ? "" : " resampled to 16 kHz"})\u2026`);
}

function stopCapture() {
  for (const node of live.nodes) { try { node.disconnect(); } catch (_) { /* already */ } }
  live.nodes = [];
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null;
  if (live.audio) live.audio.close().catch(() => {});
  live.audio = null;
}

// Frames are drawn at their timestamps: the first one fixes the clock; a frame that arrives more
// than a little late (a server slower than real time) moves the clock rather than being skipped.
function scheduleFrame(bitmap, timestampUs) {
  const now = performance.now();
  let due = live.clockBase == null ? null : live.clockBase + timestampUs / 1000;
  if (due == null || due < now - 300) {
    live.clockBase = now + LIVE_LATENCY_MS - timestampUs / 1000;
    due = live.clockBase + timestampUs / 1000;
  }
  live.queue.push({ bitmap, due });
  live.queue.sort((a, b) => a.due - b.due);
}

function drawLoop() {
  const now = performance.now();
  let frame = null;
  while (live.queue.length && live.queue[0].due <= now) {
    if (frame) frame.bitmap.close();
    frame = live.queue.shift();
  }
  if (frame) {
    const canvas = $("live-canvas");
    if (canvas.width !== frame.bitmap.width || canvas.height !== frame.bitmap.height) {
      canvas.width = frame.bitmap.width;
      canvas.height = frame.bitmap.height;
    }
    canvas.getContext("2d").drawImage(frame.bitmap, 0, 0);
    frame.bitmap.close();
  }
  live.raf = requestAnimationFrame(drawLoop);
}

async function onFrame(buffer) {
  if (buffer.byteLength < 16) return;
  const view = new DataView(buffer);
  const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic !== "VTFR") return;
  const index = view.getUint32(4, true);
  const timestampUs = Number(view.getBigInt64(8, true));
  live.answeredSeconds = Math.max(live.answeredSeconds, timestampUs / 1e6);
  try {
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(buffer, 16)], { type: "image/jpeg" }));
    scheduleFrame(bitmap, timestampUs);
    $("live-canvas").dataset.frames = String(index + 1);
  } catch (err) {
    console.warn("undecodable frame", index, err);
  }
}

function onLiveMessage(event) {
  if (typeof event.data !== "string") { onFrame(event.data); return; }
  let message;
  try { message = JSON.parse(event.data); } catch (_) { return; }
  if (message.type === "ready") {
    if (message.size) { $("live-canvas").width = message.size; $("live-canvas").height = message.size; }
    liveStatus(`Live: connected (${message.fps || "?"} fps). Starting the microphone\u2026`);
    startCapture().catch((err) => { show($("live-error"), `Microphone capture failed: ${err.message || err}`); stopLive(); });
  } else if (message.type === "error") {
    live.failed = true;
    show($("live-error"), `Live error: ${message.message || "unknown error"}`);
  } else if (message.type === "flushed") {
    const total = message.total ?? message.frames;
    liveStatus(`Live: finished (${total} frame${total === 1 ? "" : "s"}).`);
  }
}

function liveUrl() {
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  if (token()) url.searchParams.set("token", token());   // a WebSocket cannot send headers
  return url.href;
}

function resetLiveUi() {
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

async function startLive() {
  show($("live-error"), "");
  const image = imageFile();
  if (!image) { show($("live-error"), "Choose a face photo first."); $("image").focus(); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    show($("live-error"), "The microphone is not available (the page must be on https or localhost).");
    return;
  }
  $("live-start").disabled = true;
  try {
    live.audio = makeAudioContext();
    live.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
  } catch (err) {
    stopCapture();
    resetLiveUi();
    show($("live-error"), `No microphone: ${err.message || err.name}`);
    return;
  }
  const imageBytes = await image.arrayBuffer();
  live.stopping = false;
  live.failed = false;
  live.dropped = false;
  live.sentSeconds = live.answeredSeconds = 0;
  live.pending = new Float32Array(0);
  live.queue = [];
  live.clockBase = null;
  liveStatus("Live: connecting\u2026");
  const ws = live.ws = new WebSocket(liveUrl());
  ws.binaryType = "arraybuffer";
  live.opened = false;
  ws.onopen = () => {
    live.opened = true;
    const { size, ...streamOptions } = options();
    ws.send(JSON.stringify({ type: "start", options: streamOptions }));
    ws.send(imageBytes);
    $("live-stop").disabled = false;
    $("live-stop").focus();
  };
  ws.onmessage = onLiveMessage;
  ws.onerror = () => {};               // onclose follows and says what happened
  ws.onclose = (event) => {
    clearTimeout(live.closeTimer);
    stopCapture();
    if (!live.opened) {
      show($("live-error"), "Could not open the live connection: is the server running, and if it needs an "
        + "access token, is it entered under \"Access token\"?");
    } else if (!live.failed && !live.stopping && event.code !== 1000) {   // else the server's "error" said more
      show($("live-error"), event.code === 1013 ? "The server is busy (too many live streams); try again later."
        : `The live connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`);
    }
    if (!$("live-status").textContent.startsWith("Live: finished")) liveStatus("Live: stopped.");
    live.ws = null;
    resetLiveUi();
    $("live-start").focus();
  };
  if (!live.raf) live.raf = requestAnimationFrame(drawLoop);
}

function stopLive() {
  const ws = live.ws;
  live.stopping = true;
  stopCapture();
  $("live-stop").disabled = true;
  if (ws && ws.readyState === WebSocket.OPEN) {
    if (live.pending.length) sendPcm(live.pending);
    live.pending = new Float32Array(0);
    ws.send(JSON.stringify({ type: "flush" }));
    ws.send(JSON.stringify({ type: "end" }));
    liveStatus("Live: finishing the utterance\u2026");
    live.closeTimer = setTimeout(() => ws.close(1000), 30000);   // the server closes it first normally
  } else if (ws) {
    ws.close();
  } else {
    resetLiveUi();
  }
}

$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", stopLive);

// ---------------------------------------------------------------- start-up

(function init() {
  const canvas = $("live-canvas");
  const g = canvas.getContext("2d");
  g.fillStyle = "#111";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#9aa1ad";
  g.font = "14px system-ui, sans-serif";
  g.textAlign = "center";
  g.fillText("Live frames appear here", canvas.width / 2, canvas.height / 2);
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) $("token").value = fromUrl;
  fetch("healthz", { headers: authHeaders() })
    .then(async (response) => {
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const extra = Object.entries(body).filter(([k, v]) => k !== "status" && typeof v !== "object")
        .map(([k, v]) => `${k}: ${v}`).join(", ");
      $("health").textContent = `Server ${body.status || "?"}${extra ? ` (${extra})` : ""}`;
      $("health").className = `health ${body.status === "ok" ? "ok" : "bad"}`;
    })
    .catch((err) => {
      $("health").textContent = `Server not reachable (${err.message}).`;
      $("health").className = "health bad";
    });
}());
