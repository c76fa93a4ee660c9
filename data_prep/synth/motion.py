"""Per-frame face and head motion driven by synthetic speech (ground truth of a synthetic clip).

Given an :class:`~data_prep.synth.speech.Utterance`, :func:`synth_motion` builds the three
things a mesh sequence needs (docs/architecture.md, "Data contracts"): blendshape coefficients ``beta`` (the
coarticulated visemes of :mod:`.visemes` plus blinks, brow raises at stressed syllables,
occasional smiles, small asymmetries), fine lip vertex offsets ``O_lip``, and a head motion
relative to the photo's pose. Speech activity (from the phoneme timings) makes the head and
lips move more while speaking than in pauses. All randomness comes from the ``rng`` passed
in, so a seed reproduces a clip exactly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

from vividtalk.audio.align import SAMPLE_RATE

from .speech import SILENCE, VOICES, Utterance, pad_silence, random_sentence, synthesize
from .visemes import stress_of, viseme_curves

# One-sided blendshapes that must never be active together (the second yields to the first
# for blink/wide; the others are built exclusive and resolved by their net value).
ANTAGONISTS = (
    ("eyeBlinkLeft", "eyeWideLeft"), ("eyeBlinkRight", "eyeWideRight"),
    ("browDownLeft", "browOuterUpLeft"), ("browDownRight", "browOuterUpRight"),
    ("browDownLeft", "browInnerUp"), ("browDownRight", "browInnerUp"),
    ("mouthSmileLeft", "mouthFrownLeft"), ("mouthSmileRight", "mouthFrownRight"),
    ("mouthLeft", "mouthRight"), ("jawLeft", "jawRight"),
)


@dataclasses.dataclass
class Motion:
    """Motion of one synthetic clip, T = ceil(N / (16000 / fps)) frames.

    Attributes:
        beta: float32 [T, K] blendshape coefficients in [0, 1] (the face model's names).
        lip_offsets: float32 [T, L, 3] lip vertex offsets O_lip, face heights (canonical axes).
        head: float32 [T, 6] head motion relative to the photo's pose: (d_pitch, d_yaw, d_roll)
            radians (pitch > 0 tips the chin down), (d_tx, d_ty) face heights, d_log_scale.
        speech_activity: float32 [T] in [0, 1], smoothed fraction of each frame with speech.
        fps: frame rate.
    """

    beta: np.ndarray
    lip_offsets: np.ndarray
    head: np.ndarray
    speech_activity: np.ndarray
    fps: float = 25.0


def num_frames(num_samples: int, fps: float = 25.0) -> int:
    """T = ceil(N / samples-per-frame) (640 samples at 16 kHz and 25 fps)."""
    return math.ceil(num_samples * fps / SAMPLE_RATE)


def smooth_noise(rng: np.random.Generator, num: int, channels: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (in expectation).

    Args:
        sigma: filter std in frames (> 0); the noise's correlation time.
    Returns:
        float64 [num, channels].
    """
    white = rng.standard_normal((num, channels))
    # A Gaussian filter of std s scales unit white noise to std (2 sqrt(pi) s)^-1/2; dividing
    # by the expected value rather than the sample std keeps short clips' amplitude honest.
    return gaussian_filter1d(white, sigma, axis=0, mode="reflect") * math.sqrt(2 * math.sqrt(math.pi) * sigma)


def bump(times: np.ndarray, centre: float, rise: float, fall: float) -> np.ndarray:
    """Asymmetric bell: Gaussian of std ``rise`` before ``centre``, ``fall`` after; peak 1.

    Args:
        times: float [T] seconds. Returns float64 [T].
    """
    tau = times - centre
    return np.exp(-0.5 * (tau / np.where(tau < 0, rise, fall)) ** 2)


def speech_activity(phonemes: list[tuple[str, float, float]], num: int, fps: float = 25.0,
                    sigma_s: float = 0.1) -> np.ndarray:
    """Fraction of each frame covered by non-silent phonemes, smoothed: float32 [num] in [0, 1]."""
    edges = np.arange(num + 1) / fps
    cover = np.zeros(num)
    for symbol, start, end in phonemes:
        if symbol != SILENCE:
            cover += np.clip(np.minimum(end, edges[1:]) - np.maximum(start, edges[:-1]), 0.0, None) * fps
    smooth = gaussian_filter1d(cover, sigma_s * fps, mode="nearest")
    return np.clip(smooth, 0.0, 1.0).astype(np.float32)


def stressed_times(phonemes: list[tuple[str, float, float]]) -> np.ndarray:
    """Centres (s) of the primary-stressed vowels: float64 [n], in order."""
    return np.array([(s + e) / 2 for p, s, e in phonemes if stress_of(p) == 2], dtype=np.float64)


def blink_profile(times: np.ndarray, onset: float, duration: float, amplitude: float) -> np.ndarray:
    """One blink: a fast raised-cosine closing, a closed hold, a slower opening.

    The hold lasts 45 ms, longer than a 25 fps frame, so some frame always sees full closure.

    Args:
        times: float [T] seconds; duration: whole blink, s (~0.15-0.25).
    Returns:
        float64 [T] in [0, amplitude].
    """
    hold = 0.045
    close = 0.35 * (duration - hold)
    opening = duration - hold - close
    tau = times - onset
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(tau / close, 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((tau - close - hold) / opening, 0.0, 1.0))
    return amplitude * np.where(tau < close + hold, rise, fall)


def blink_curves(times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blinks every 2-6 s (first within 0.3-2.5 s), both eyes, sometimes one a bit late.

    Returns:
        (left, right): float64 [T] each, eyeBlink coefficients in [0, 1].
    """
    left, right = np.zeros_like(times), np.zeros_like(times)
    onset, end = rng.uniform(0.3, 2.5), (times[-1] if len(times) else 0.0)
    while onset < end:
        duration, amplitude = rng.uniform(0.15, 0.25), rng.uniform(0.9, 1.0)
        lag = rng.uniform(0.01, 0.03) if rng.random() < 0.25 else 0.0  # the lagging eye
        lag_left = rng.random() < 0.5
        left = np.maximum(left, blink_profile(times, onset + lag * lag_left, duration, amplitude))
        right = np.maximum(right, blink_profile(times, onset + lag * (not lag_left), duration, amplitude))
        onset += rng.uniform(2.0, 6.0)
    return left, right


def brow_signal(
    times: np.ndarray, stressed: np.ndarray, activity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Signed brow motion: > 0 raise, < 0 lower. float64 [T].

    Raises at a random subset of stressed syllables (onset just before the vowel, slower
    decay), on a slow baseline that wanders a little more while speaking.
    """
    fps = 1.0 / (times[1] - times[0]) if len(times) > 1 else 25.0
    signal = 0.06 * smooth_noise(rng, len(times), 1, 0.8 * fps)[:, 0] * (0.5 + 0.5 * activity)
    raises = np.zeros_like(times)
    rate = rng.uniform(0.2, 0.5)
    for centre in stressed:
        if rng.random() < rate:
            peak = bump(times, centre - 0.03, rng.uniform(0.07, 0.12), rng.uniform(0.2, 0.35))
            raises = np.maximum(raises, rng.uniform(0.25, 0.6) * peak)
    return signal + raises


def smile_curve(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few small smiles (about one per 5 s, 1-2.5 s long, peak 0.1-0.3): float64 [T]."""
    out = np.zeros_like(times)
    duration = times[-1] if len(times) else 0.0
    for _ in range(rng.poisson(duration / 5.0)):
        centre, width = rng.uniform(0.0, duration), rng.uniform(1.0, 2.5)
        window = np.clip(1.0 - np.abs(times - centre) / (width / 2), 0.0, 1.0)
        out = np.maximum(out, rng.uniform(0.1, 0.3) * (0.5 - 0.5 * np.cos(np.pi * window)))
    return out


def resolve_antagonists(beta: np.ndarray, names: list[str]) -> np.ndarray:
    """Make antagonist pairs exclusive. beta: float [T, K] in [0, 1] -> same, new array.

    A blink switches the eye-wide off (fully once the blink passes 0.05, gradually before);
    other pairs keep their net value: both lose the smaller of the two.
    """
    out = beta.copy()
    idx = {n: k for k, n in enumerate(names)}
    for a, b in ANTAGONISTS:
        if a not in idx or b not in idx:
            continue
        ia, ib = idx[a], idx[b]
        if a.startswith("eyeBlink"):
            out[:, ib] *= np.clip(1.0 - out[:, ia] / 0.05, 0.0, 1.0)
        else:
            common = np.minimum(out[:, ia], out[:, ib])
            out[:, ia] -= common
            out[:, ib] -= common
    return out


def add_expressions(beta: np.ndarray, names: list[str], times: np.ndarray, stressed: np.ndarray,
                    activity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add blinks, brows, smiles and small asymmetries to the viseme curves.

    Args:
        beta: float32 [T, K] viseme curves; names: the K blendshape names.
        times: float64 [T] frame centres, s; stressed: float64 [n] stressed-vowel centres, s.
        activity: float32 [T] speech activity in [0, 1].
    Returns:
        float32 [T, K] in [0, 1], antagonists resolved.
    """
    out = beta.astype(np.float64)
    idx = {n: k for k, n in enumerate(names)}
    fps = 1.0 / (times[1] - times[0]) if len(times) > 1 else 25.0

    def add(name: str, curve: np.ndarray) -> None:
        if name in idx:  # another face model may lack some shapes
            out[:, idx[name]] += curve

    left, right = blink_curves(times, rng)
    add("eyeBlinkLeft", left)
    add("eyeBlinkRight", right)
    brow = brow_signal(times, stressed, activity, rng)
    up, down = np.maximum(brow, 0.0), np.maximum(-brow, 0.0)  # exclusive by construction
    asym = rng.uniform(-0.15, 0.15)  # this speaker's left/right imbalance
    inner, outer, wide = rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.3)
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        add(f"browOuterUp{side}", outer * (1 + sign * asym) * up)
        add(f"browDown{side}", (1 + sign * asym) * down)
        add(f"eyeWide{side}", wide * (1 + sign * asym) * up)
    add("browInnerUp", inner * up)
    smile = smile_curve(times, rng)
    add("mouthSmileLeft", (1 + asym) * smile)
    add("mouthSmileRight", (1 - asym) * smile)
    add("cheekPuff", 0.03 * np.maximum(smooth_noise(rng, len(times), 1, 0.5 * fps)[:, 0], 0.0) * activity)
    # Slow sideways drift of lips and jaw, split into its one-sided left/right shapes.
    lateral = smooth_noise(rng, len(times), 2, 1.0 * fps) * np.array([0.03, 0.015])  # mouth, jaw
    lateral = lateral * (0.5 + 0.5 * activity[:, None])
    for k, shape in enumerate(("mouth", "jaw")):
        add(f"{shape}Left", np.maximum(lateral[:, k], 0.0))
        add(f"{shape}Right", np.maximum(-lateral[:, k], 0.0))
    return resolve_antagonists(np.clip(out, 0.0, 1.0), names).astype(np.float32)


def lip_modes(num_lip_vertices: int, rng: np.random.Generator, lip_positions: np.ndarray | None = None,
              num_modes: int = 4) -> np.ndarray:
    """Smooth random displacement fields over the lip vertices.

    Each mode is a random mix of low angular frequencies (0-2) around the mouth centre, times
    (1, normalised radius) so inner and outer lip contours can differ; without positions the
    vertex index stands in for the angle (only smooth if the indices run along the lips).

    Args:
        lip_positions: float [L, 3] lip vertices of the mean face (canonical units) or None.
    Returns:
        float64 [num_modes, L, 3], each mode's largest vertex displacement 1.
    """
    if lip_positions is not None:
        rel = np.asarray(lip_positions, np.float64)[:, :2]
        rel = rel - rel.mean(0)
        theta = np.arctan2(rel[:, 1], rel[:, 0])
        radius = np.linalg.norm(rel, axis=1) / max(np.linalg.norm(rel, axis=1).max(), 1e-9)
    else:
        theta = 2 * np.pi * np.arange(num_lip_vertices) / max(num_lip_vertices, 1)
        radius = np.ones(num_lip_vertices)
    angular = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta),
                        np.cos(2 * theta), np.sin(2 * theta)], 1)  # [L, 5]
    features = np.concatenate([angular, angular * radius[:, None]], 1)  # [L, 10]
    decay = np.array([1.0, 0.8, 0.8, 0.5, 0.5] * 2)  # favour the smoothest patterns
    weights = rng.standard_normal((num_modes, features.shape[1], 3)) * decay[None, :, None]
    modes = np.einsum("lf,mfc->mlc", features, weights)
    return modes / np.linalg.norm(modes, axis=2).max(axis=1)[:, None, None]


def lip_offsets(activity: np.ndarray, num_lip_vertices: int, rng: np.random.Generator, fps: float = 25.0,
                lip_positions: np.ndarray | None = None, lip_basis: np.ndarray | None = None) -> np.ndarray:
    """Fine lip detail O_lip: smooth modes with smooth time courses, larger while speaking.

    Args:
        activity: float32 [T] speech activity in [0, 1].
        lip_positions: float [L, 3] mean-face lip vertices, or None (see :func:`lip_modes`).
        lip_basis: float [K, L, 3] the expression basis at the lip vertices, or None; when
            given the offsets are made orthogonal to it, so that they stay what the
            blendshapes cannot explain (as O_lip is defined when fitting real meshes).
    Returns:
        float32 [T, L, 3] face heights; the largest vertex offset of the clip is drawn in
        [0.002, 0.005].
    """
    modes = lip_modes(num_lip_vertices, rng, lip_positions)  # [M, L, 3]
    if lip_basis is not None:
        flat = np.asarray(lip_basis, np.float64).reshape(len(lip_basis), -1).T  # [3L, K]
        q, _ = np.linalg.qr(flat)
        m = modes.reshape(len(modes), -1)
        modes = (m - (m @ q) @ q.T).reshape(modes.shape)
    coeff = smooth_noise(rng, len(activity), len(modes), 0.1 * fps) * (0.2 + 0.8 * activity[:, None])
    offsets = np.einsum("tm,mlc->tlc", coeff, modes)
    peak = np.linalg.norm(offsets, axis=2).max() if offsets.size else 0.0
    amplitude = rng.uniform(0.002, 0.005)
    return (offsets * (amplitude / max(peak, 1e-12))).astype(np.float32)


# Head motion std while speaking: pitch, yaw, roll (rad), tx, ty (face heights), log-scale.
HEAD_STD = (math.radians(1.8), math.radians(2.5), math.radians(1.0), 0.008, 0.005, 0.006)


def head_motion(
    times: np.ndarray, stressed: np.ndarray, activity: np.ndarray, rng: np.random.Generator,
    mobility: np.ndarray | None = None,
) -> np.ndarray:
    """Smooth head motion relative to the photo's pose, livelier while speaking.

    A sway (correlation ~0.25 s) scaled by a slow speech envelope, a slower drift, and small
    nods (pitch, chin down and back) at some stressed syllables.

    Args:
        mobility: [6] a speaker's own factors on the per-axis motion (None: drawn for this clip).
    Returns:
        float32 [T, 6]: (d_pitch, d_yaw, d_roll) rad, (d_tx, d_ty) face heights, d_log_scale.
    """
    fps = 1.0 / (times[1] - times[0]) if len(times) > 1 else 25.0
    num = len(times)
    factors = rng.uniform(0.6, 1.4, 6)  # this speaker's mobility per axis
    style = np.array(HEAD_STD) * (factors if mobility is None else np.asarray(mobility))
    envelope = 0.25 + 0.75 * gaussian_filter1d(activity.astype(np.float64), 0.3 * fps, mode="nearest")
    sway = smooth_noise(rng, num, 6, 0.25 * fps) * envelope[:, None]
    drift = smooth_noise(rng, num, 6, 1.0 * fps) * (0.3 + 0.4 * envelope[:, None])
    head = style * (0.8 * sway + 0.4 * drift)
    nod_rate = rng.uniform(0.2, 0.5)
    for centre in stressed:
        if rng.random() < nod_rate:
            head[:, 0] += math.radians(rng.uniform(0.5, 1.5)) * bump(times, centre, 0.12, 0.2)
    return head.astype(np.float32)


def synth_motion(utterance: Utterance, expression_names: list[str], num_lip_vertices: int,
                 rng: np.random.Generator, fps: float = 25.0, lip_positions: np.ndarray | None = None,
                 lip_basis: np.ndarray | None = None, style: dict | None = None) -> Motion:
    """All per-frame motion of a synthetic clip, driven by the utterance's phoneme timings.

    Args:
        utterance: speech with phonemes (non-empty audio, 16 kHz).
        expression_names: the face model's K blendshape names (``FaceModel.expression_names``).
        num_lip_vertices: L (``FaceModel.num_lip_vertices``).
        rng: every random choice; the same state gives the same motion.
        fps: frame rate; frame f is centred at (f + 0.5) / fps s.
        lip_positions: float [L, 3] ``mean[lip_indices]``, optional, shapes the lip modes.
        lip_basis: float [K, L, 3] ``exp_basis[:, lip_indices]``, optional, keeps O_lip
            orthogonal to the blendshapes.
        style: the speaker's style (:func:`person_style`: articulation and head mobility); None:
            drawn for this clip alone.
    Returns:
        Motion with T = ceil(N * fps / 16000) frames.
    """
    num = num_frames(len(utterance.audio), fps)
    if num == 0:
        raise ValueError("the utterance has no audio")
    names = list(expression_names)
    times = (np.arange(num) + 0.5) / fps
    activity = speech_activity(utterance.phonemes, num, fps)
    stressed = stressed_times(utterance.phonemes)
    beta = viseme_curves(utterance.phonemes, num, names, rng, fps, style=None if style is None else style["mouth"])
    beta = add_expressions(beta, names, times, stressed, activity, rng)
    lips = lip_offsets(activity, num_lip_vertices, rng, fps, lip_positions, lip_basis)
    head = head_motion(times, stressed, activity, rng, None if style is None else style["head"])
    return Motion(beta, lips, head, activity, fps)


def person_style(rng: np.random.Generator) -> dict:
    """One speaker's style: ``mouth`` (:func:`~.visemes.speaking_style`) and ``head`` [6]
    mobility factors of :func:`head_motion`, in the ranges drawn per clip otherwise."""
    from .visemes import speaking_style

    return {"mouth": speaking_style(rng), "head": [float(x) for x in rng.uniform(0.6, 1.4, 6)]}


def make_utterance(rng: np.random.Generator, pad: bool = True) -> Utterance:
    """A random sentence in a random voice (VOICES), rate 130-200 wpm, pitch 30-70.

    Args:
        pad: add 0.2-0.5 s of silence before and after, so the clip starts and ends with a
            closed mouth.
    """
    voice = VOICES[int(rng.integers(len(VOICES)))]
    rate, pitch = int(rng.integers(130, 201)), int(rng.integers(30, 71))
    utterance = synthesize(random_sentence(rng), voice, rate, pitch)
    if pad:
        utterance = pad_silence(utterance, rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5))
    return utterance
