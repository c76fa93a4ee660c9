"""Conditional flow matching with motion infilling, classifier-free guidance and ODE sampling
(MimicTalk's ICS-A2M; the network is :class:`~.flow_transformer.FlowMatchingTransformer`).

Training (audio-guided motion infilling): random segments of a clip's motion x_1 are the
*target*; the rest is clean context. With x_0 ~ N(0, I) and t ~ U(0, 1), the optimal-transport
path x_t = (1 - (1 - sigma_min) t) x_0 + t x_1 has the velocity u_t = x_1 - (1 - sigma_min) x_0,
and L_CFM = E ||u_t - v_t(x_t, a, s)||^2 is taken on the target frames. With probability
``drop_prompt`` a clip has no context at all: the unconditional model classifier-free guidance
needs.

Sampling: the style prompt (a reference clip's audio and motion) and, in chunked sampling, the
end of the previous chunk are the known context; the new audio's frames start from noise and
follow dx/dt = v from t = 0 to 1 (Euler or midpoint, N steps). Guidance on the prompt:
v = v(x, a, s) + w (v(x, a, s) - v(x, a, 0)), the unconditional pass seeing no prompt frames.
A sampling ``temperature`` scales the starting noise (x_0 ~ N(0, temperature^2 I)): below 1 the
samples move toward the flow's most likely motion, trading seed-to-seed diversity for accuracy
(0: one deterministic path).
"""

from __future__ import annotations

from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, T, D], t [B]) -> v


def ot_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float = 0.0):
    """The conditional OT path: x_t and its velocity u_t (x0, x1 [B, T, D]; t [B])."""
    tt = t[:, None, None]
    return (1 - (1 - sigma_min) * tt) * x0 + tt * x1, x1 - (1 - sigma_min) * x0


def infill_mask(batch: int, frames: int, generator: torch.Generator | None = None, min_target: float = 0.3,
                max_target: float = 0.9, max_segments: int = 2, drop_prompt: float = 0.1,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Which frames are generated (True) and which are clean context (False), per clip.

    Each clip gets 1..``max_segments`` contiguous target segments covering about ``min_target``
    to ``max_target`` of its frames (at least one target and one context frame); a share
    ``drop_prompt`` of the clips is all target (no context: the unconditional model).

    Returns:
        bool [B, T].
    """
    if frames < 2:
        raise ValueError("infilling needs at least 2 frames")
    target = torch.zeros(batch, frames, dtype=torch.bool)
    u = torch.rand(batch, 3, generator=generator)
    for b in range(batch):
        if u[b, 0] < drop_prompt:
            target[b] = True
            continue
        segments = 1 + int(u[b, 1] * max_segments) if max_segments > 1 else 1
        length = max(1, min(frames - 1, round((min_target + (max_target - min_target) * float(u[b, 2])) * frames)))
        sizes = _split(length, min(segments, length), generator)
        gaps = _split(frames - length, len(sizes) + 1, generator, allow_zero=True)
        pos = gaps[0]
        for size, gap in zip(sizes, gaps[1:]):
            target[b, pos:pos + size] = True
            pos += size + gap
    return target.to(device)


def _split(total: int, parts: int, generator, allow_zero: bool = False) -> list[int]:
    """``total`` as ``parts`` random non-negative (positive unless allow_zero) integers."""
    low = 0 if allow_zero else 1
    spare = total - low * parts
    cuts = torch.sort(torch.randint(0, spare + 1, (parts - 1,), generator=generator)).values.tolist()
    edges = [0] + cuts + [spare]
    return [low + edges[i + 1] - edges[i] for i in range(parts)]


def cfm_loss(network, x1: torch.Tensor, audio: torch.Tensor, target: torch.Tensor,
             generator: torch.Generator | None = None, sigma_min: float = 0.0) -> dict[str, torch.Tensor]:
    """L_CFM on the target frames of one batch.

    Args:
        network: v_t(x_t, t, audio, context, known) (:class:`FlowMatchingTransformer`).
        x1: float [B, T, D] clean (normalised) motion; audio: [B, T, A]; target: bool [B, T].
    Returns:
        ``loss`` (mean squared velocity error per target channel), ``x1_hat`` [B, T, D] the
        one-step estimate x_t + (1 - t) v of the clean motion (for a sync loss), ``t`` [B].
    """
    b = x1.shape[0]
    t = torch.rand(b, generator=generator).to(x1)
    x0 = torch.randn(x1.shape, generator=generator).to(x1)
    x_t, u = ot_path(x0, x1, t, sigma_min)
    v = network(x_t, t, audio, x1, ~target)
    weight = target.to(x1.dtype)[..., None]  # [B, T, 1]
    loss = ((v - u) ** 2 * weight).sum() / (weight.sum() * x1.shape[-1]).clamp_min(1.0)
    return {"loss": loss, "x1_hat": x_t + (1 - t)[:, None, None] * v, "t": t}


def guided_velocity(network, audio: torch.Tensor, context: torch.Tensor, known: torch.Tensor,
                    prompt: torch.Tensor, cfg_scale: float) -> Velocity:
    """The velocity field to integrate: v(x, a, s) + w (v(x, a, s) - v(x, a, 0)).

    Args:
        audio: [B, T, A]; context: [B, T, D]; known: bool [B, T] every known frame;
        prompt: bool [B, T] the known frames that are the style prompt (dropped in the
            unconditional pass; other known frames, such as the previous chunk, stay).
        cfg_scale: w (0: no guidance, one network pass per step).
    """
    if cfg_scale == 0 or not bool(prompt.any()):
        return lambda x, t: network(x, t, audio, context, known)
    free = known & ~prompt

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([audio, audio]),
                       torch.cat([context, context]), torch.cat([known, free]))  # one batched pass
        cond, uncond = both.chunk(2)
        return cond + cfg_scale * (cond - uncond)

    return velocity


def solve_ode(velocity: Velocity, x0: torch.Tensor, steps: int, method: str = "midpoint") -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 in ``steps`` equal steps.

    Args:
        x0: [B, ...]; method: "euler" (first order, one evaluation a step) or "midpoint"
            (second order, two).
    """
    if steps < 1 or method not in ("euler", "midpoint"):
        raise ValueError(f"need steps >= 1 and method 'euler' or 'midpoint', got {steps}, {method!r}")
    x, dt = x0, 1.0 / steps
    for i in range(steps):
        t = torch.full((x0.shape[0],), i * dt, dtype=x0.dtype, device=x0.device)
        v = velocity(x, t)
        if method == "midpoint":
            v = velocity(x + 0.5 * dt * v, t + 0.5 * dt)
        x = x + dt * v
    return x


@torch.no_grad()
def sample(network, audio: torch.Tensor, context: torch.Tensor, known: torch.Tensor, prompt: torch.Tensor,
           steps: int = 10, method: str = "midpoint", cfg_scale: float = 0.0,
           generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Motion for every frame: the known frames' context, the others generated.

    Args: as :func:`guided_velocity`; steps, method: as :func:`solve_ode`; temperature: the
        starting noise's std (>= 0).
    Returns:
        float [B, T, D].
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    x0 = temperature * torch.randn(context.shape, generator=generator).to(context)
    x1 = solve_ode(guided_velocity(network, audio, context, known, prompt, cfg_scale), x0, steps, method)
    return torch.where(known[..., None], context, x1)


@torch.no_grad()
def sample_chunked(network, audio: torch.Tensor, prompt_audio: torch.Tensor | None = None,
                   prompt_motion: torch.Tensor | None = None, chunk: int = 200, overlap: int = 25,
                   steps: int = 10, method: str = "midpoint", cfg_scale: float = 0.0,
                   generator: torch.Generator | None = None,
                   anchor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   temperature: float = 1.0) -> torch.Tensor:
    """Motion for audio of any length, ``chunk`` new frames at a time.

    Each chunk is one infilling problem: [style prompt | the last ``overlap`` generated frames |
    the chunk's frames], the first two known, so a chunk continues its predecessor and memory is
    bounded by the window, whatever the audio's length.

    Args:
        audio: [B, N, A] the driving audio's features.
        prompt_audio, prompt_motion: [B, P, A] and [B, P, D] the style prompt, or None.
        anchor: for motion with channels measured from a window's first frame (the head pose):
            known motion [B, n, D] -> the offset [B, 1, D] that makes its first frame the
            reference. Without a prompt, each later chunk's window starts at the previous
            chunk's tail, so the tail is re-anchored by it and the offset added back after.
        temperature: as for :func:`sample`.
    Returns:
        float [B, N, D].
    """
    b, n, _ = audio.shape
    d = network.motion_dim
    if (prompt_audio is None) != (prompt_motion is None):
        raise ValueError("give both prompt_audio and prompt_motion, or neither")
    p = 0 if prompt_audio is None else prompt_audio.shape[1]
    if p + overlap + chunk > network.max_frames or chunk < 1:
        raise ValueError(f"prompt ({p}) + overlap ({overlap}) + chunk ({chunk}) frames exceed the network's "
                         f"max_frames={network.max_frames}: shorten the prompt or the chunk")
    out = audio.new_zeros(b, n, d)
    for start in range(0, n, chunk):
        stop, tail = min(start + chunk, n), min(overlap, start)
        parts_a = ([prompt_audio] if p else []) + [audio[:, start - tail:stop]]
        known_tail = out[:, start - tail:start]
        offset = anchor(known_tail) if anchor is not None and not p and tail else audio.new_zeros(b, 1, d)
        parts_m = ([prompt_motion] if p else []) + [known_tail - offset, audio.new_zeros(b, stop - start, d)]
        known = torch.zeros(b, p + tail + stop - start, dtype=torch.bool, device=audio.device)
        known[:, :p + tail] = True
        prompt = torch.zeros_like(known)
        prompt[:, :p] = True
        x = sample(network, torch.cat(parts_a, 1), torch.cat(parts_m, 1), known, prompt, steps, method,
                   cfg_scale, generator, temperature)
        out[:, start:stop] = x[:, p + tail:] + offset
    return out
