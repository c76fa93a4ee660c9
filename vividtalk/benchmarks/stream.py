"""``vividtalk bench stream``: latency and throughput of streaming generation.

The demo weights (or ``weights``) stream the demo sentence, repeated with pauses, onto the
default portrait (prepared before the audio starts, as a server does when the image comes
first). Audio arrives at real-time pace in chunks of 20 to 200 ms; for each chunk size the
report gives the time from the first chunk's arrival to the first frame, and the median and
95th percentile of each frame's latency (from the moment the audio of the frame's end arrived
to the frame's emission). Then the sustained rate: audio pushed as fast as it is consumed,
frames per second over ``seconds`` of audio, with the resident memory at the start and at the
end (growth would mean something accumulates).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ..audio import load_audio
from ..audio.align import SAMPLE_RATE, SAMPLES_PER_FRAME
from .common import environment, synchronize

CHUNK_MS = (20, 50, 100, 200)


def speech(seconds: float) -> np.ndarray:
    """The demo sentence repeated with 0.5 s pauses, float32 [seconds * 16000]."""
    from ..pipeline import demo_weights_dir

    sentence = load_audio(str(demo_weights_dir() / "speech.wav"))
    unit = np.concatenate([sentence, np.zeros(SAMPLE_RATE // 2, np.float32)])
    return np.tile(unit, int(np.ceil(seconds * SAMPLE_RATE / len(unit))))[: int(seconds * SAMPLE_RATE)]


def rss_mb() -> float:
    """The process's current resident memory, MiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def paced(session, wav: np.ndarray, chunk: int, device: torch.device) -> dict:
    """Push ``wav`` in chunks of ``chunk`` samples as a real-time source would; latencies."""
    start, latencies, first = time.perf_counter(), [], None
    for k in range(0, len(wav), chunk):
        arrival = start + (k + chunk) / SAMPLE_RATE  # the chunk is complete at this moment
        time.sleep(max(0.0, arrival - time.perf_counter()))
        batches = session.push(wav[k: k + chunk])
        synchronize(device)
        now = time.perf_counter()
        for batch in batches:
            first = now - (start + chunk / SAMPLE_RATE) if first is None else first
            end = (batch.first_frame + 1 + np.arange(len(batch.frames))) * SAMPLES_PER_FRAME  # each frame's last sample
            arrived = start + np.ceil(end / chunk) * chunk / SAMPLE_RATE  # when the chunk holding it came
            latencies += list(now - arrived)
    session.flush()
    return {"first_frame_ms": 1000 * first, "frame_latency_median_ms": 1000 * statistics.median(latencies),
            "frame_latency_p95_ms": 1000 * float(np.percentile(latencies, 95))}


def bench_stream(device: str = "cpu", seconds: float = 20.0, weights: str = "") -> dict:
    """Latency at each chunk size of :data:`CHUNK_MS` (6 s of audio each) and the sustained
    frames/s over ``seconds`` of audio."""
    from ..face.visualize import default_portrait
    from ..pipeline import VividTalkPipeline

    dev = torch.device(device)
    pipe = VividTalkPipeline.from_pretrained(weights or None, device=device)
    image, report = default_portrait(), {"benchmark": "stream", "device": str(dev)}
    for ms in CHUNK_MS:
        with pipe.stream_session(image, seed=0) as session:
            figures = paced(session, speech(6.0), SAMPLE_RATE * ms // 1000, dev)
        report.update({f"chunk_{ms}ms_{k}": v for k, v in figures.items()})
    wav = speech(seconds)
    with pipe.stream_session(image, seed=0) as session:
        session.push(wav[: SAMPLE_RATE])  # warm-up second, not timed
        rss_start, frames, begin = rss_mb(), 0, time.perf_counter()
        for k in range(SAMPLE_RATE, len(wav), SAMPLE_RATE // 10):
            frames += sum(len(b.frames) for b in session.push(wav[k: k + SAMPLE_RATE // 10]))
        synchronize(dev)
        elapsed = time.perf_counter() - begin
        report.update(sustained_frames_per_second=frames / elapsed, sustained_frames=frames,
                      real_time_factor=(len(wav) - SAMPLE_RATE) / SAMPLE_RATE / elapsed,
                      rss_start_mb=rss_start, rss_end_mb=rss_mb(), seconds=seconds,
                      block=session.block, first_block=session.first_block, lookahead=session.lookahead)
    return {**report, **environment()}
