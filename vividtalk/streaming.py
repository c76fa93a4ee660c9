"""Streaming generation: audio arriving piece by piece -> frames as soon as they are determined.

A :class:`StreamSession` holds one prepared source (tracked, fitted and encoded by stage 2
once) and turns pushed audio into :class:`FrameBatch` es, block by block: when the audio covers
``block`` more frames plus ``lookahead`` frames of future, stage 1 runs on the block (the audio
encoder with up to 1 s of past and the ``lookahead`` of future, the expression transformer
continuing from the last frame of the previous block, the head pose through the codebook from
the pose reached), the controls apply (silence gate, blinks, expression scale) and stage 2
renders the block. :meth:`StreamSession.flush` ends an utterance: the rest of the audio is
rendered without waiting for future audio. Silence keeps producing frames (the mouth closes,
blinks go on, the head keeps its idle motion), so a caller that pushes silence between
utterances keeps the face alive.

How the frames relate to the offline call (:meth:`VividTalkPipeline.plan`): offline, stage 1
decodes chunks of 400 frames with a 25-frame cross-fade, the audio encoder sees 1 s of context
on both sides of a chunk, and head poses come in windows of 96 frames. A stream decodes blocks
of ``block`` frames (the attention history restarts at every block; the next block continues
from the previous block's last frame, as offline chunks do), sees only ``lookahead`` frames of
future audio, and draws poses window by window (one per block). With ``block`` at least the
utterance's length and the whole audio flushed at once, the stream equals the offline call
exactly (a test checks it); with the defaults the expression differs by what the shorter
future and history change (measured by ``tests/test_streaming.py`` and ``vividtalk bench
stream``). Memory stays bounded: only the last second of audio before the current block is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import motion
from .audio.align import FPS, SAMPLES_PER_FRAME

STREAM_POSE_MODES = ("audio", "still")
GATE_CONTEXT = 25
"""Frames of past audio the silence gate sees before a block: its voice detector decides from
context (1 s), and its smoothing reaches two frames back."""


@dataclass
class FrameBatch:
    """Frames of a stream and the audio they show.

    Attributes:
        frames: uint8 [n, S, S, 3] RGB crops.
        first_frame: index of ``frames[0]`` since the session started (25 fps).
        audio: float32 [n * 640] the 16 kHz samples of these frames.
    """

    frames: np.ndarray
    first_frame: int
    audio: np.ndarray

    @property
    def timestamps(self) -> np.ndarray:
        """float64 [n]: each frame's start time in seconds since the session started."""
        return (self.first_frame + np.arange(len(self.frames))) / FPS


class StreamSession:
    """One source photo, audio pushed in, frames out (see the module docstring).

    Made by :meth:`VividTalkPipeline.stream_session <vividtalk.pipeline.VividTalkPipeline.stream_session>`.

    Args:
        pipe: the pipeline (its stages and face model).
        source: the prepared :class:`~vividtalk.face.prepare.SourceFace`.
        generator: the head-motion sampling's random source; blink_seed: the blink times' seed.
        pose: "audio" or "still"; expression_scale, blink, temperature: as for the offline call.
        block: frames rendered together (a multiple of the pose codebook's 4 frames, so that
            each block draws whole codes).
        first_block: frames of the first block (smaller: the first frame comes sooner; any
            number, its codes padded like the offline call's last window).
        lookahead: frames of future audio a block waits for (>= 2: the silence gate's smoothing).
        batch_size: frames per stage-2 batch.
        appearance: a personalisation's inverted appearance of ``source`` (None: encoded from it).
    """

    def __init__(self, pipe, source, generator: torch.Generator, blink_seed: int, pose: str = "audio",
                 expression_scale: float = 1.0, blink: bool = True, temperature: float | None = None,
                 block: int = 8, first_block: int = 2, lookahead: int = 2, batch_size: int = 8,
                 appearance: dict | None = None) -> None:
        _check_options(pose, expression_scale, block, first_block, lookahead, pipe.pose_mapper.mapper.downsample)
        self.pipe, self.source, self.generator, self.blink_seed = pipe, source, generator, blink_seed
        self.pose_mode, self.expression_scale, self.blink = pose, expression_scale, blink
        self.temperature = pipe.pose_mapper.temperature if temperature is None else temperature
        self.block, self.first_block, self.lookahead, self.batch_size = block, first_block, lookahead, batch_size
        dev = pipe.device
        self.identity = torch.from_numpy(source.identity).to(dev)[None]
        self.z_style = pipe.audio2mesh.style_encoder(self.identity)
        self.z_pose = pipe.pose_mapper.style_encoder(self.identity)
        self.source_pose = torch.from_numpy(source.pose).to(dev)[None]
        self.prepared = pipe.mesh2video.prepare_crop(source.crop, source.masks, source.vertices, appearance)
        self._wav = np.zeros(0, np.float32)  # the kept audio, from frame self._origin on
        self._origin, self._done = 0, 0  # first frame of _wav; frames rendered so far
        self._last_expr: dict | None = None  # the last frame's beta and lip offsets
        self._last_pose: torch.Tensor | None = None  # [1, 7]
        self.closed = False
        self._warm_up()

    def _warm_up(self) -> None:
        """One throwaway pass over a first block of silence, so that the first real block does
        not pay for the kernels' first-call set-up (a third of its time on a CPU); the session's
        state and random source are left untouched."""
        a2m, n = self.pipe.audio2mesh, self.first_block
        wav = torch.zeros((n + self.lookahead) * SAMPLES_PER_FRAME, device=self.pipe.device)
        a2m.network.generate(motion.encode_frames(a2m.audio_encoder, wav, 0, n), self.z_style)
        if self.pose_mode == "audio":
            motion.pose_window(self.pipe.pose_mapper, wav, self.z_pose, self.source_pose, 0, n, self.temperature,
                               torch.Generator(device=self.generator.device).manual_seed(0))
        driving = torch.from_numpy(self.source.vertices).float()[None].expand(n, -1, -1)
        for _ in self.pipe.mesh2video.render(self.prepared, driving, self.batch_size):
            pass

    @property
    def frames_done(self) -> int:
        """Frames rendered since the session started."""
        return self._done

    @torch.no_grad()
    def push(self, chunk) -> list[FrameBatch]:
        """Add float32 16 kHz mono samples [N] (any N); returns the frame batches they complete."""
        self._append(chunk)
        out = []
        while self._frames_available() >= self._done + self._next_block() + self.lookahead:
            out.append(self._render_block(self._next_block()))
        return out

    def _next_block(self) -> int:
        return self.first_block if self._done == 0 else self.block

    @torch.no_grad()
    def flush(self) -> list[FrameBatch]:
        """End of an utterance: render every frame the audio so far covers (its last frame
        padded with silence), without waiting for future audio. The session goes on."""
        self._check_open()
        pad = -len(self._wav) % SAMPLES_PER_FRAME
        self._wav = np.concatenate([self._wav, np.zeros(pad, np.float32)])
        out = []
        while self._frames_available() > self._done:
            size = min(self._next_block(), self._frames_available() - self._done)
            out.append(self._render_block(size, final=True))
        return out

    def close(self) -> None:
        """Free the session (its audio, the prepared source); later pushes raise."""
        self.closed, self._wav, self.prepared = True, np.zeros(0, np.float32), None

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this stream session is closed")

    def _append(self, chunk) -> None:
        self._check_open()
        samples = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"audio chunks must be 1-D float arrays of 16 kHz samples, got {samples.dtype} "
                             f"{samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError("audio chunk holds NaN or infinite samples")
        self._wav = np.concatenate([self._wav, np.clip(samples, -1.0, 1.0).astype(np.float32)])

    def _frames_available(self) -> int:
        """Whole frames of audio received since the session started."""
        return self._origin + len(self._wav) // SAMPLES_PER_FRAME

    def _render_block(self, n: int, final: bool = False) -> FrameBatch:
        s, e = self._done, self._done + n
        # Exactly ``lookahead`` frames of future (all there is when flushing), however the audio
        # was chunked: the frames do not depend on the chunk sizes.
        seen = len(self._wav) if final else (e + self.lookahead - self._origin) * SAMPLES_PER_FRAME
        wav = torch.from_numpy(self._wav[:seen]).to(self.pipe.device)
        vertices, audio = self._driving(wav, s, e), self._wav[(s - self._origin) * SAMPLES_PER_FRAME:
                                                             (e - self._origin) * SAMPLES_PER_FRAME]
        frames = np.concatenate(list(self.pipe.mesh2video.render(self.prepared, vertices, self.batch_size)))
        self._done = e
        self._forget()
        return FrameBatch(frames, s, audio.copy())

    def _driving(self, wav: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Stage 1 and the controls for frames [s, e): driving meshes [e - s, V, 3]."""
        a2m, o = self.pipe.audio2mesh, self._origin
        expr = a2m.network.generate(motion.encode_frames(a2m.audio_encoder, wav, s - o, e - o), self.z_style,
                                    start=self._last_expr)
        self._last_expr = {k: v[:, -1] for k, v in expr.items()}
        poses = self._poses(wav, s, e)  # [1, n, 7]
        lo = max(0, s - o - GATE_CONTEXT)
        gate = motion.speech_gate(wav[lo * SAMPLES_PER_FRAME:], len(wav) // SAMPLES_PER_FRAME - lo)
        blinks = motion.blink_track(e, self.blink_seed)[s:].to(wav.device) if self.blink else None
        return motion.driven_meshes(self.pipe.face, expr, gate[s - o - lo: e - o - lo], a2m.network.lip_index, blinks,
                                    self.expression_scale, self.identity, poses)[0]

    def _poses(self, wav: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Head poses [1, e - s, 7]: a codebook window from the pose reached (the window starts one
        frame early, at that pose, so that the motion continues without a repeated frame)."""
        if self.pose_mode == "still":
            return motion.still_poses(self.source_pose, e - s)
        first = s if self._last_pose is None else s - 1
        reference = self.source_pose if self._last_pose is None else self._last_pose
        poses = motion.pose_window(self.pipe.pose_mapper, wav, self.z_pose, reference, first - self._origin,
                                   e - self._origin, self.temperature, self.generator)[:, s - first:]  # [1, e - s, 7]
        self._last_pose = poses[:, -1]
        return poses

    def _forget(self) -> None:
        """Drop the audio older than the encoder's context before the next block."""
        keep_from = max(self._origin, self._done - motion.ENCODER_MARGIN)
        cut = (keep_from - self._origin) * SAMPLES_PER_FRAME
        self._wav, self._origin = self._wav[cut:], keep_from


def _check_options(pose: str, expression_scale: float, block: int, first_block: int, lookahead: int,
                   downsample: int) -> None:
    if pose not in STREAM_POSE_MODES:
        raise ValueError(f"a stream's pose must be one of {STREAM_POSE_MODES}, got {pose!r}")
    if expression_scale < 0:
        raise ValueError(f"expression_scale must be >= 0, got {expression_scale}")
    if block < 1 or block % downsample:
        raise ValueError(f"block must be a positive multiple of {downsample} frames, got {block}")
    if first_block < 1:
        raise ValueError(f"first_block must be >= 1 frame, got {first_block}")
    if lookahead < 2:
        raise ValueError(f"lookahead must be >= 2 frames (the silence gate's context), got {lookahead}")
