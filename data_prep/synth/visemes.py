"""Phonemes -> visemes -> coarticulated blendshape curves.

Each eSpeak NG phoneme mnemonic maps to one viseme class (two for diphthongs). A viseme is a
target pose of the mouth blendshapes plus how strongly it imposes each one (its dominance).
The curves follow the Cohen-Massaro dominance model: every segment pulls each blendshape
towards its target with a weight that is bell-shaped around the segment (flat over its
core, smooth flanks, a wider flank before it than after it: anticipation vs carry-over),
and the value at time t is the dominance-weighted mean of the targets. Critical articulations
(lip closure for p b m, lip-teeth contact for f v, rounding) get a high dominance on the
blendshapes they need, with steep flanks, so they reach their target whatever the context
without swamping their neighbours, while the others borrow the shape of their neighbours.
The blend is computed on a fine time grid, low-passed, and sampled at the frame centres.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter1d

from vividtalk.audio.phonemes import ARPABET_TO_ESPEAK, strip_stress

from .speech import SILENCE


@dataclasses.dataclass(frozen=True)
class Viseme:
    """A mouth target and how it dominates.

    Attributes:
        target: blendshape name -> coefficient in [0, 1]; "mouthSmile" / "mouthStretch"
            stand for both sides; absent blendshapes have target 0.
        dominance: dominance of every mouth blendshape (relative weight, > 0).
        critical: blendshape name -> dominance overriding ``dominance`` for that blendshape.
        width: scale of the anticipation / carry-over time constants (1 = default).
        release: extra scale of the carry-over alone (< 1: an abrupt release, as the lips
            part at the burst of p/b).
        core: fraction of the segment over which the dominance is flat (1 for closures,
            which hold over the whole acoustic closure).
        sharpness: exponent p of the flanks exp(-0.5 (u / sigma)^p); p > 2 makes a flank
            that holds, then drops fast, so a dominant closure does not swamp its neighbours.
        vowel: whether stress changes its amplitude.
    """

    target: dict
    dominance: float = 1.0
    critical: dict = dataclasses.field(default_factory=dict)
    width: float = 1.0
    release: float = 1.0
    core: float = 0.7
    sharpness: float = 2.0
    vowel: bool = False


# The mouth blendshapes the visemes drive; all others are left at 0 here (motion.py adds them).
MOUTH_SHAPES = (
    "jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthRollUpper", "mouthRollLower",
    "mouthPress", "mouthUpperUp", "mouthLowerDown", "cheekPuff",
)
# Blendshapes that part the lips: a closure must hold all of them at 0.
_LIP_OPENERS = ("jawOpen", "mouthFunnel", "mouthUpperUp", "mouthLowerDown")

VISEMES = {
    # Rest: strong over the pause, but a short, steep flank so that a short pause between
    # words barely touches its neighbours, and speech onsets open the mouth only just before.
    "silence": Viseme({}, dominance=2.0, width=0.6, sharpness=4.0),
    "bilabial": Viseme({"jawOpen": 0.0, "mouthPress": 0.6, "mouthRollLower": 0.12,
                        "mouthRollUpper": 0.08, "cheekPuff": 0.06},
                       critical={**{k: 25.0 for k in _LIP_OPENERS}, "mouthPress": 25.0,
                                 "mouthRollLower": 8.0, "mouthRollUpper": 8.0},
                       width=0.25, release=0.8, core=1.0, sharpness=4.0),
    "labiodental": Viseme({"jawOpen": 0.05, "mouthRollLower": 0.5, "mouthUpperUp": 0.2},
                          critical={"jawOpen": 8.0, "mouthRollLower": 12.0, "mouthLowerDown": 8.0,
                                    "mouthFunnel": 6.0, "mouthUpperUp": 4.0},
                          width=0.3, release=0.8, core=0.9, sharpness=4.0),
    # Alveolars and velars raise the jaw (the tongue needs it near the palate): less open than
    # the vowels around them (articulography: 3-6 mm of jaw opening against 8-15 for open vowels).
    "alveolar": Viseme({"jawOpen": 0.07, "mouthLowerDown": 0.05, "mouthUpperUp": 0.05,
                        "mouthStretch": 0.08}, dominance=0.5, critical={"jawOpen": 1.5}),
    "velar": Viseme({"jawOpen": 0.14, "mouthLowerDown": 0.05}, dominance=0.4, critical={"jawOpen": 0.8}),
    "postalveolar": Viseme({"jawOpen": 0.1, "mouthFunnel": 0.35, "mouthPucker": 0.2,
                            "mouthUpperUp": 0.15, "mouthLowerDown": 0.15},
                           dominance=0.8, critical={"mouthFunnel": 2.0, "mouthPucker": 1.5}),
    "r": Viseme({"jawOpen": 0.12, "mouthPucker": 0.3, "mouthFunnel": 0.15}, dominance=0.6),
    "rounded": Viseme({"jawOpen": 0.05, "mouthPucker": 0.65, "mouthFunnel": 0.2},
                      critical={"mouthPucker": 2.0, "mouthFunnel": 1.5, "jawOpen": 1.5}, width=1.3, vowel=True),
    "open_rounded": Viseme({"jawOpen": 0.38, "mouthFunnel": 0.5, "mouthPucker": 0.2,
                            "mouthLowerDown": 0.1}, critical={"mouthFunnel": 1.5},
                           width=1.2, vowel=True),
    "open": Viseme({"jawOpen": 0.6, "mouthLowerDown": 0.3, "mouthUpperUp": 0.1, "mouthStretch": 0.05},
                   critical={"jawOpen": 1.5, "mouthPress": 1.5}, vowel=True),
    "mid": Viseme({"jawOpen": 0.32, "mouthLowerDown": 0.18, "mouthStretch": 0.12, "mouthUpperUp": 0.05},
                  critical={"jawOpen": 1.05, "mouthPress": 1.05}, vowel=True),
    # Schwa is mid-open and a vowel nucleus: dominant enough not to be swallowed by consonants.
    "schwa": Viseme({"jawOpen": 0.3, "mouthLowerDown": 0.14}, dominance=0.8, vowel=True),
    "spread": Viseme({"jawOpen": 0.05, "mouthStretch": 0.35, "mouthSmile": 0.2, "mouthUpperUp": 0.04},
                     critical={"mouthStretchLeft": 1.5, "mouthStretchRight": 1.5, "jawOpen": 1.5}, vowel=True),
    "weak": Viseme({"jawOpen": 0.15}, dominance=0.15),  # h, glottal stop: shaped by neighbours
}

# eSpeak NG English mnemonics (stress marks stripped) -> viseme classes; two for diphthongs.
_PHONEME_CLASSES = {
    **dict.fromkeys(["p", "b", "m"], ("bilabial",)),
    **dict.fromkeys(["f", "v"], ("labiodental",)),
    **dict.fromkeys(["t", "d", "s", "z", "n", "l", "T", "D", "t#", "d#", "n-", "l-", "t2", "d2"],
                    ("alveolar",)),
    **dict.fromkeys(["k", "g", "N", "x"], ("velar",)),
    **dict.fromkeys(["S", "Z", "tS", "dZ"], ("postalveolar",)),
    **dict.fromkeys(["r", "r-", "3:", "3"], ("r",)),
    **dict.fromkeys(["w", "u:", "U", "u"], ("rounded",)),
    **dict.fromkeys(["0", "O", "O:", "O@", "o@", "o", "0#"], ("open_rounded",)),
    **dict.fromkeys(["a", "a#", "A:", "aa", "V", "A"], ("open",)),
    **dict.fromkeys(["e", "E"], ("mid",)),
    **dict.fromkeys(["@", "@-", "@2", "@5", "@L", "I#", "I2"], ("schwa",)),
    **dict.fromkeys(["i", "i:", "I", "j", ";"], ("spread",)),  # ";": the glide after i before a vowel
    **dict.fromkeys(["h", "?"], ("weak",)),
    "aI": ("open", "spread"), "aI@": ("open", "spread"), "aI3": ("open", "spread"),
    "aU": ("open", "rounded"), "aU@": ("open", "rounded"), "eI": ("mid", "spread"),
    "oU": ("open_rounded", "rounded"), "OI": ("open_rounded", "spread"), "A@": ("open", "r"),
    "i@": ("spread", "schwa"), "i@3": ("spread", "r"), "I@": ("spread", "schwa"),
    "U@": ("rounded", "schwa"), "e@": ("mid", "schwa"),
}
# Aligned recordings (ARPAbet) drive the same viseme model through vividtalk's table of the same
# sounds. AH is schwa when short (CMUdict's AH0).
_SCHWA_S = 0.07  # an AH shorter than this is the reduced vowel


def from_arpabet(phones: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(ARPAbet phone, start_s, end_s) -> (eSpeak mnemonic, start_s, end_s) for the viseme model."""
    out = []
    for name, start, end in phones:
        symbol = ARPABET_TO_ESPEAK.get(name.rstrip("012"), SILENCE)
        out.append(("@" if symbol == "V" and end - start < _SCHWA_S else symbol, start, end))
    return out


_GRID_HZ = 200.0  # fine time grid of the blend, before low-pass and frame sampling
_VOWEL_STARTS = "aeiouAEIOUV03@"


def stress_of(symbol: str) -> int:
    """2 for primary stress ("'"), 1 for secondary (","), 0 otherwise."""
    return 2 if symbol.startswith("'") else 1 if symbol.startswith(",") else 0


def viseme_classes(symbol: str) -> tuple[str, ...]:
    """Viseme class names of one phoneme mnemonic (two for diphthongs)."""
    core = strip_stress(symbol)
    if not core or core.startswith(SILENCE):
        return ("silence",)
    for length in range(len(core), 0, -1):  # longest known prefix: "aI@3" -> "aI@"
        if core[:length] in _PHONEME_CLASSES:
            return _PHONEME_CLASSES[core[:length]]
    return ("mid",) if core[0] in _VOWEL_STARTS else ("weak",)


def expand_segments(phonemes: list[tuple[str, float, float]]) -> list[tuple[str, float, float, int]]:
    """Split phonemes into viseme segments (diphthongs into 55% + 45% of their span).

    Returns:
        (viseme class, start_s, end_s, stress 0/1/2) in order.
    """
    out = []
    for symbol, start, end in phonemes:
        classes, stress = viseme_classes(symbol), stress_of(symbol)
        if len(classes) == 1:
            out.append((classes[0], start, end, stress))
        else:
            mid = start + 0.55 * (end - start)
            out += [(classes[0], start, mid, stress), (classes[1], mid, end, stress)]
    return out


def shape_names(key: str) -> tuple[str, ...]:
    """Blendshapes a target key stands for: "mouthSmile" -> both sides, others themselves."""
    return (key + "Left", key + "Right") if key in ("mouthSmile", "mouthStretch") else (key,)


def _style_group(name: str) -> str:
    """Which per-utterance style gain scales a blendshape's targets."""
    if name == "jawOpen":
        return "jaw"
    if name in ("mouthFunnel", "mouthPucker"):
        return "round"
    return "spread" if name.startswith(("mouthSmile", "mouthStretch")) else "other"


def _targets_and_dominance(segments, names: list[str], gains: dict, rng: np.random.Generator):
    """Per-segment targets and dominance strengths.

    Args:
        segments: S viseme segments (see :func:`expand_segments`).
        gains: per-utterance style gains ("strength", "jaw", "round", "spread", "other").
    Returns:
        target: float64 [S, K] in [0, 1]; alpha: float64 [S, K] >= 0 (0 off the mouth).
    """
    index = {n: k for k, n in enumerate(names)}
    target = np.zeros((len(segments), len(names)))
    alpha = np.zeros((len(segments), len(names)))
    for s, (cls, _, _, stress) in enumerate(segments):
        vis = VISEMES[cls]
        amp = gains["strength"] * rng.uniform(0.85, 1.15)  # per-segment articulation jitter
        if vis.vowel:
            amp *= (0.8, 1.0, 1.12)[stress]  # unstressed vowels are reduced
        for name in MOUTH_SHAPES:
            if name in index:
                alpha[s, index[name]] = vis.critical.get(name, vis.dominance)
        for key, value in vis.target.items():
            for name in shape_names(key):
                if name in index:
                    target[s, index[name]] = value * amp * gains[_style_group(name)]
    return np.clip(target, 0.0, 1.0), alpha


def dominance(segments, times: np.ndarray, anticipation: float, carryover: float) -> np.ndarray:
    """Bell-shaped dominance of each segment over time (before the per-blendshape strength).

    Flat (1) over the central part of the segment (the viseme's core), then flanks
    exp(-0.5 (u / sigma)^p), u the distance from the core, sigma ``anticipation`` before it
    and ``carryover`` after it (scaled by the viseme's width and release), p its sharpness
    (p = 2: Gaussian flanks); continuously differentiable.

    Args:
        segments: (class, start_s, end_s, stress) list, S entries.
        times: float64 [T] seconds.
    Returns:
        float64 [S, T] in (0, 1].
    """
    cls = [s[0] for s in segments]
    start = np.array([s[1] for s in segments])[:, None]
    end = np.array([s[2] for s in segments])[:, None]
    core = np.array([VISEMES[c].core for c in cls])[:, None]
    centre, half = (start + end) / 2, 0.5 * core * (end - start)
    width = np.array([VISEMES[c].width for c in cls])[:, None]
    release = np.array([VISEMES[c].release for c in cls])[:, None]
    power = np.array([VISEMES[c].sharpness for c in cls])[:, None]
    tau = times[None, :] - centre  # [S, T]
    u = np.maximum(np.abs(tau) - half, 0.0)
    sigma = np.where(tau < 0, anticipation, carryover * release) * width
    return np.exp(-0.5 * (u / sigma) ** power)


def blend(segments, grid: np.ndarray, target: np.ndarray, alpha: np.ndarray, timing: float,
          smooth_s: float) -> np.ndarray:
    """Dominance-weighted mean of the segment targets on a regular time grid.

    Args:
        segments: S viseme segments (see :func:`expand_segments`).
        grid: float64 [G] seconds, spacing 1 / _GRID_HZ.
        target, alpha: float64 [S, K] targets and dominance strengths.
        timing: scale of the anticipation / carry-over time constants.
        smooth_s: std of the low-pass on the blend, s (0: none); the dominance functions
            get a low-pass of 2/3 of it first.
    Returns:
        float64 [G, K].
    """
    d = dominance(segments, grid, 0.075 * timing, 0.055 * timing)  # [S, G]
    rest = 1e-3  # weak pull to the neutral face where no segment is near (keeps it defined)
    value = np.einsum("sg,sk->gk", d, alpha * target)  # [G, K] dominance-weighted targets
    weight = np.einsum("sg,sk->gk", d, alpha) + rest  # [G, K] total dominance
    if smooth_s <= 0:
        return value / weight
    # Low-pass the dominance functions first: the result is still a weighted mean of targets,
    # so a dominant closure stays closed instead of being blurred by its open neighbours...
    sigma = smooth_s * _GRID_HZ
    value = gaussian_filter1d(value, 2 / 3 * sigma, axis=0, mode="nearest")
    weight = gaussian_filter1d(weight, 2 / 3 * sigma, axis=0, mode="nearest")
    # ...then the blend itself, which takes the edge off the remaining fast switches.
    return gaussian_filter1d(value / weight, sigma, axis=0, mode="nearest")


def speaking_style(rng: np.random.Generator) -> dict:
    """A speaker's articulation style: gains of the mouth targets ("strength", "jaw", "round",
    "spread") and the time scale of coarticulation ("timing"), drawn in the ranges that
    :func:`viseme_curves` draws per utterance."""
    return {"strength": float(rng.uniform(0.8, 1.15)), "jaw": float(rng.uniform(0.8, 1.25)),
            "round": float(rng.uniform(0.7, 1.3)), "spread": float(rng.uniform(0.7, 1.3)),
            "timing": float(rng.uniform(0.8, 1.25))}


def viseme_curves(phonemes: list[tuple[str, float, float]], num_frames: int, expression_names: list[str],
                  rng: np.random.Generator, fps: float = 25.0, smooth_s: float = 0.015,
                  style: dict | None = None) -> np.ndarray:
    """Coarticulated mouth blendshape curves of an utterance, sampled at frame centres.

    The dominance blend is evaluated on a fine grid (``_GRID_HZ``), low-passed (articulator
    inertia, and anti-aliasing before the 25 fps sampling: the raw blend has 10-20 Hz
    content in fast speech), then sampled at the frame centres.

    Args:
        phonemes: (eSpeak mnemonic, start_s, end_s), as in ``speech.Utterance.phonemes``.
        num_frames: T; frame f is evaluated at t_f = (f + 0.5) / fps seconds.
        expression_names: K blendshape names (the face model's); unknown ones stay 0.
        rng: draws the per-utterance articulation style (strengths, timing) and jitter.
        smooth_s: std of the temporal low-pass, seconds (0 disables it; see :func:`blend`).
        style: a speaker's :func:`speaking_style`, kept up to a +-5 % jitter per utterance
            (None: a style drawn for this utterance alone).
    Returns:
        beta: float32 [T, K] in [0, 1]; only the mouth blendshapes are non-zero.
    """
    names = list(expression_names)
    segments = [s for s in expand_segments(phonemes) if s[2] > s[1]]
    if not segments or num_frames == 0:
        return np.zeros((num_frames, len(names)), np.float32)
    # Per-utterance speaking style: how wide the jaw opens, how much lips round or spread,
    # how far articulations spread in time.
    gains = {"strength": rng.uniform(0.8, 1.15), "jaw": rng.uniform(0.8, 1.25),
             "round": rng.uniform(0.7, 1.3), "spread": rng.uniform(0.7, 1.3), "other": 1.0}
    timing = rng.uniform(0.8, 1.25)
    if style is not None:  # the speaker's own, drawn after the above so other draws stay put
        jitter = rng.uniform(0.95, 1.05, 5)
        gains.update({k: style[k] * j for k, j in zip(("strength", "jaw", "round", "spread"), jitter)})
        timing = style["timing"] * jitter[4]
    target, alpha = _targets_and_dominance(segments, names, gains, rng)  # [S, K] each
    frame_times = (np.arange(num_frames) + 0.5) / fps
    margin = 4 * smooth_s  # the filters' reach: evaluate a little beyond the frames
    grid = np.arange(-margin, frame_times[-1] + margin + 1.0 / _GRID_HZ, 1.0 / _GRID_HZ)  # [G]
    curves = blend(segments, grid, target, alpha, timing, smooth_s)  # [G, K]
    beta = np.stack([np.interp(frame_times, grid, c) for c in curves.T], 1)  # [T, K]
    return np.clip(beta, 0.0, 1.0).astype(np.float32)
