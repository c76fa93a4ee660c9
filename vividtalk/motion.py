"""Stage 1 at inference over audio of any length, and the user controls on its output.

Audio is processed in overlapping chunks so that memory stays bounded and the networks see
sequences as long as they were trained on: the blendshape / lip-offset transformer continues
from the last frame of the previous chunk (its ``start``), the pose mapper starts every window
from the pose reached so far, and inside each overlap the two chunks are cross-faded linearly,
so nothing jumps at a border. Then the controls: silence gating (the mouth closes where the
audio is silent or holds no speech), blinks, expression scale, and the head pose (from audio,
still, or copied from a reference video).
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import vad
from .audio.align import SAMPLES_PER_FRAME, frame_levels_db
from .audio2mesh.pose_mapper import generate_pose
from .audio2mesh.pose_modules import initial_pose
from .audio2mesh.pose_repr import features_to_pose, pose_to_features

ENCODER_MARGIN = 25
"""Frames of audio context on each side of a chunk when encoding it (1 s: more than the
log-mel front end's receptive field, so chunked features equal whole-file features)."""


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """First frames of overlapping chunks of ``chunk`` frames covering ``length`` frames."""
    if chunk <= overlap:
        raise ValueError(f"chunk ({chunk}) must be longer than its overlap ({overlap})")
    starts = [0]
    while starts[-1] + chunk < length:
        starts.append(starts[-1] + chunk - overlap)
    return starts


def encode_frames(encoder: torch.nn.Module, wav: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Features [1, stop - start, A] of frames [start, stop) of a 16 kHz waveform [N], encoded
    with :data:`ENCODER_MARGIN` frames of context on each side."""
    total = -(-wav.shape[0] // SAMPLES_PER_FRAME)
    lo, hi = max(0, start - ENCODER_MARGIN), min(total, stop + ENCODER_MARGIN)
    piece = wav[lo * SAMPLES_PER_FRAME : hi * SAMPLES_PER_FRAME]
    piece = torch.nn.functional.pad(piece, (0, (hi - lo) * SAMPLES_PER_FRAME - piece.shape[0]))
    return encoder(piece[None])[:, start - lo : stop - lo]


def crossfade(done: torch.Tensor, new: torch.Tensor, overlap: int) -> torch.Tensor:
    """Append chunk ``new`` [B, T, ...] to ``done`` [B, T0, ...] whose last ``overlap`` frames
    it repeats, blending linearly from the old to the new values over the overlap."""
    if overlap == 0 or done.shape[1] == 0:
        return torch.cat([done, new], dim=1)
    w = torch.linspace(0.0, 1.0, overlap + 2, device=new.device)[1:-1]  # (0, 1) exclusive
    w = w.view(1, overlap, *([1] * (new.dim() - 2)))
    mixed = (1 - w) * done[:, -overlap:] + w * new[:, :overlap]
    return torch.cat([done[:, :-overlap], mixed, new[:, overlap:]], dim=1)


@torch.no_grad()
def expression_track(module, wav: torch.Tensor, identity: torch.Tensor, frames: int, chunk: int = 400,
                     overlap: int = 25, progress=None) -> dict[str, torch.Tensor]:
    """Blendshapes ``beta`` [1, T, K] and ``lip_offsets`` [1, T, L, 3] for T = ``frames``.

    Args:
        module: an :class:`~vividtalk.audio2mesh.module.Audio2MeshModule` (network, style and
            audio encoders); wav: float [N] 16 kHz; identity: [1, V, 3] the source's shape.
        chunk, overlap: frames per chunk (at most the network's ``max_frames``) and overlap.
        progress: optional callable(frames_done) for a progress bar.
    """
    chunk = min(chunk, module.network.max_frames)
    z_style = module.style_encoder(identity)
    out: dict[str, torch.Tensor] = {}
    for s in chunk_starts(frames, chunk, overlap):
        e = min(frames, s + chunk)
        start = {k: v[:, s - 1] for k, v in out.items()} if out else None  # the frame before this chunk
        pred = module.network.generate(encode_frames(module.audio_encoder, wav, s, e), z_style, start=start)
        keep = (out["beta"].shape[1] - s) if out else 0  # frames of this chunk already made
        out = {k: crossfade(out[k], pred[k], keep) if out else pred[k] for k in ("beta", "lip_offsets")}
        if progress:
            progress(e)
    return out


@torch.no_grad()
def pose_track(module, wav: torch.Tensor, identity: torch.Tensor, source_pose: torch.Tensor, frames: int,
               window: int = 96, overlap: int = 16, temperature: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Head poses [1, T, 7] (crop pixels) generated from audio, starting at ``source_pose`` [1, 7].

    Args:
        module: a :class:`~vividtalk.audio2mesh.pose_modules.PoseMapperModule`.
        window, overlap: frames per mapper window (its training window) and overlap.
        temperature: codebook sampling temperature (None: the module's).
        generator: the random source of the codebook sampling (any device; None: torch's global one).
    """
    temperature = module.temperature if temperature is None else temperature
    z_style = module.style_encoder(identity)
    poses = source_pose.new_zeros(1, 0, 7)
    for s in chunk_starts(frames, window, overlap):
        e = min(frames, s + window)
        reference = source_pose if s == 0 else poses[:, s]  # the pose reached at this window's start
        new = pose_window(module, wav, z_style, reference, s, e, temperature, generator)
        poses = crossfade(poses, new, poses.shape[1] - s)
    return poses


def pose_window(module, wav: torch.Tensor, z_style: torch.Tensor, reference: torch.Tensor, start: int, stop: int,
                temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Head poses [1, stop - start, 7] of frames [start, stop) of ``wav`` through the codebook,
    the first frame exactly at ``reference`` [1, 7] (crop pixels).

    Args:
        module: a :class:`~vividtalk.audio2mesh.pose_modules.PoseMapperModule`; z_style: its
            style code of the identity [1, S]; temperature, generator: of the codebook sampling.
    """
    audio = encode_frames(module.audio_encoder, wav, start, stop)
    feats = generate_pose(module.mapper, module.vqvae, audio, z_style, initial_pose(reference), temperature,
                          generator)["features"]
    # The window's first frame is its reference: re-anchor so that it matches exactly.
    return features_to_pose(feats - feats[:, :1], reference)



@torch.no_grad()
def in_context_track(module, wav: torch.Tensor, frames: int, source_pose: torch.Tensor,
                     prompt: dict[str, torch.Tensor] | None = None, cfg_scale: float | None = None,
                     steps: int | None = None, generator: torch.Generator | None = None,
                     temperature: float | None = None):
    """Expression and head motion from MimicTalk's in-context model, styled by a prompt.

    Args:
        module: an :class:`~vividtalk.audio2mesh.in_context_module.InContextMotionModule`.
        wav: float [N] 16 kHz; frames: T; source_pose: [1, 7] where the head starts.
        prompt: from ``module.prompt`` (a reference clip of the person), None: unconditional.
        cfg_scale, steps, temperature: guidance weight, ODE steps and the starting noise's std
            (None: the module's defaults).
    Returns:
        (``{"beta": [1, T, K], "lip_offsets": [1, T, L, 3]}``, poses [1, T, 7] in crop pixels).
    """
    out = module.generate(encode_frames(module.audio_encoder, wav, 0, frames), prompt, cfg_scale, steps,
                          generator=generator, temperature=temperature)
    return ({"beta": out["beta"], "lip_offsets": out["lip_offsets"]},
            features_to_pose(out["pose_features"], source_pose))

def blink_indices(face) -> list[int]:
    """The face model's eyeBlink blendshapes (what :func:`apply_controls` blinks with)."""
    return [i for i, n in enumerate(face.expression_names) if n.startswith("eyeBlink")]


def driven_meshes(face, expr: dict[str, torch.Tensor], gate: torch.Tensor, lip_index: torch.Tensor,
                  blinks: torch.Tensor | None, expression_scale: float, identity: torch.Tensor,
                  poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's output with the controls (:func:`apply_controls`) assembled into meshes.

    Args:
        face: the face model; expr: ``beta`` [1, T, K] and ``lip_offsets`` [1, T, L, 3];
        gate, lip_index, blinks, expression_scale: as for :func:`apply_controls`;
        identity: [1, V, 3]; poses: [1, T, 7].
    Returns:
        (driving meshes [T, V, 3] in crop pixels, controlled beta [1, T, K]).
    """
    beta, lips = apply_controls(expr["beta"], expr["lip_offsets"], gate, lip_index, blink_indices(face), blinks,
                                expression_scale)
    vertices = face.to(beta.device).assemble(beta[0], identity=identity, lip_offsets=lips[0], pose=poses[0])
    return vertices, beta


def still_poses(source_pose: torch.Tensor, frames: int) -> torch.Tensor:
    """The source's pose for every frame: [1, T, 7]."""
    return source_pose[:, None].expand(1, frames, 7).clone()


def copied_poses(reference: np.ndarray, source_pose: torch.Tensor, frames: int) -> torch.Tensor:
    """The head motion of a reference video [T_ref, 7] (its own pixels) carried over to the
    source: motion relative to the video's first frame, applied to the source's pose. A
    shorter video is played forwards and backwards (no jump at its end): [1, T, 7]."""
    ref = torch.as_tensor(reference, dtype=source_pose.dtype, device=source_pose.device)
    if len(ref) > 1:
        cycle = torch.cat([ref, ref.flip(0)[1:-1]]) if len(ref) > 2 else ref
        ref = cycle[torch.arange(frames, device=ref.device) % len(cycle)]
    else:
        ref = ref.expand(frames, 7)
    return features_to_pose(pose_to_features(ref[None], ref[None, 0]), source_pose)


def speech_gate(wav: torch.Tensor, frames: int, floor_db: float = -55.0, range_db: float = 10.0,
                smooth: int = 5, voice: bool | None = None) -> torch.Tensor:
    """Per-frame weight [T] in [0, 1]: 0 where the audio is silent (RMS below ``floor_db``
    dBFS) or, with ``voice``, where it holds no speech (a pause over a recording's noise floor:
    :mod:`vividtalk.audio.vad`); 1 from ``floor_db + range_db`` up in speech; smoothed over
    ``smooth`` frames.

    Args:
        wav: 16 kHz samples [N]; voice: use the voice activity detector (None: when the
            ``silero-vad`` package is installed).
    """
    db = torch.from_numpy(frame_levels_db(wav, frames, floor_db=floor_db)).to(wav)  # [T]
    gate = ((db - floor_db) / range_db).clamp(0, 1)
    if vad.vad_available() if voice is None else voice:  # widened by the smoothing: its ramp lies in the pause
        voiced = vad.voiced_frames(vad.speech_probability(wav, frames), pad=1 + smooth // 2)
        gate = gate * torch.from_numpy(voiced).to(gate)
    kernel = torch.ones(1, 1, smooth, device=wav.device) / smooth
    return torch.nn.functional.conv1d(gate[None, None], kernel, padding=smooth // 2)[0, 0, :frames].clamp(0, 1)


def blink_track(frames: int, seed: int, fps: int = 25, every: tuple[float, float] = (2.0, 5.0)) -> torch.Tensor:
    """Procedural blinks [T] in [0, 1]: one every 2-5 s (seeded), each ~0.3 s long."""
    shape = torch.tensor([0.35, 0.8, 1.0, 0.9, 0.6, 0.3, 0.1])
    rng = np.random.default_rng(seed)
    out = torch.zeros(frames + len(shape))
    t = int(rng.uniform(0.5, every[1]) * fps)
    while t < frames:
        out[t : t + len(shape)] = torch.maximum(out[t : t + len(shape)], shape)
        t += int(rng.uniform(*every) * fps)
    return out[:frames]


def apply_controls(beta: torch.Tensor, lip_offsets: torch.Tensor, gate: torch.Tensor, lip_index: torch.Tensor,
                   blink_index: list[int], blinks: torch.Tensor | None, expression_scale: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Silence gate on the mouth, blinks and expression scale on stage 1's output.

    Args:
        beta: [1, T, K]; lip_offsets: [1, T, L, 3]; gate: [T] (:func:`speech_gate`);
        lip_index: the blendshapes of the lip branch (closed where the gate is 0);
        blink_index: the eyeBlink blendshapes; blinks: [T] added blinks (max with the
            model's), None to switch blinking off (the eyes stay open).
        expression_scale: multiplies every coefficient and the lip offsets (1: as predicted).
    """
    beta, g = beta.clone(), gate.to(beta)[None, :, None]
    beta[..., lip_index] = beta[..., lip_index] * g
    lip_offsets = lip_offsets * g[..., None]
    if blinks is None:
        beta[..., blink_index] = 0.0
    else:
        beta[..., blink_index] = torch.maximum(beta[..., blink_index], blinks.to(beta)[None, :, None])
    return (beta * expression_scale).clamp(0.0, 1.0), lip_offsets * expression_scale


def relative_expression(beta: torch.Tensor, lip_offsets: torch.Tensor, source_beta: torch.Tensor,
                        source_lips: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A tracked video's expression carried over to a source: its change since the video's
    first frame, times ``scale``, added to the source's own expression (blendshapes kept in [0, 1]).

    Args:
        beta: [T, K] and lip_offsets: [T, L, 3] of the video; source_beta: [K]; source_lips: [L, 3].
    Returns:
        (beta [T, K], lip offsets [T, L, 3]); frame 0 is the source's expression exactly.
    """
    return ((source_beta + scale * (beta - beta[:1])).clamp(0.0, 1.0),
            source_lips + scale * (lip_offsets - lip_offsets[:1]))


def carried_motion(face, source, beta: torch.Tensor, lip_offsets: torch.Tensor, pose: torch.Tensor,
                   scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tracked clip's motion carried over to a prepared source, each part relative to the
    clip's first frame (:func:`relative_expression`, :func:`copied_poses`).

    Args:
        face: the face model; source: a :class:`~vividtalk.face.prepare.SourceFace`.
        beta: [T, K], lip_offsets: [T, L, 3] and pose: [T, 7] (the clip's own pixels) of the clip.
        scale: multiplies the expression changes.
    Returns:
        (driving meshes [T, V, 3] in the source's crop pixels, poses [T, 7], beta [T, K]), on
        ``beta``'s device; frame 0 is the source's own mesh.
    """
    dev = beta.device
    as_t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    beta, lips = relative_expression(beta, lip_offsets.to(dev), as_t(source.beta), as_t(source.lip_offsets), scale)
    poses = copied_poses(pose.cpu().numpy(), as_t(source.pose)[None], len(beta))[0]
    vertices = face.to(dev).assemble(beta, identity=as_t(source.identity), lip_offsets=lips, pose=poses)
    return vertices, poses, beta
