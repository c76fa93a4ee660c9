"""Phone alignment of recorded speech with pocketsphinx's US-English acoustic model.

The PyPI ``pocketsphinx`` wheel ships CMU's continuous US-English acoustic model, the CMU
pronouncing dictionary and a phone language model. :func:`align_phones` aligns a recording
with its transcript (forced alignment: pocketsphinx's two passes, a word search constrained to
the text, then a state alignment of its best path); :func:`recognise_phones` recognises phones
without a transcript (allphone search over the phone language model, less accurate). Both give
ARPAbet phones (``"P"``, ``"AA"``, ..., ``"SIL"`` for silence and noise) with times in seconds;
:func:`frame_labels` turns them into one label per 25 fps video frame.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from .align import FPS, SAMPLE_RATE
from .io import AudioError

SILENCE = "SIL"
BILABIALS = frozenset({"P", "B", "M"})
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY"})
CLOSE_VOWELS = frozenset({"IY", "UW", "IH", "UH"})
_FRAME_S = 0.01  # pocketsphinx's feature frames: 10 ms

ESPEAK_SILENCE = "_"
ESPEAK_STRESS_MARKS = "',%=!"


def strip_stress(symbol: str) -> str:
    """An eSpeak NG mnemonic without its stress marks: "'A:" -> "A:"."""
    return symbol.lstrip(ESPEAK_STRESS_MARKS)


ARPABET_TO_ESPEAK = {
    "P": "p", "B": "b", "M": "m", "F": "f", "V": "v", "T": "t", "D": "d", "S": "s", "Z": "z", "N": "n",
    "L": "l", "TH": "T", "DH": "D", "K": "k", "G": "g", "NG": "N", "SH": "S", "ZH": "Z", "CH": "tS",
    "JH": "dZ", "R": "r", "ER": "3:", "W": "w", "Y": "j", "HH": "h", "AA": "A:", "AE": "a", "AH": "V",
    "AO": "O:", "AW": "aU", "AY": "aI", "EH": "E", "EY": "eI", "IH": "I", "IY": "i:", "OW": "oU",
    "OY": "OI", "UH": "U", "UW": "u:", SILENCE: ESPEAK_SILENCE,
}
"""ARPAbet (pocketsphinx, CMUdict; stress digits dropped) -> the eSpeak NG mnemonic of the same sound."""
_ESPEAK_TO_ARPABET = {**{v: k for k, v in ARPABET_TO_ESPEAK.items()},
                      "@": "AH", "i": "IY", "u": "UW", "0": "AA", "O": "AO"}  # reduced and British variants


def espeak_to_arpabet(phonemes: list[tuple[str, float, float]]) -> list[Phone]:
    """eSpeak NG phoneme events (mnemonic with stress marks, start_s, end_s), as the synthetic
    corpus stores them, as ARPAbet :class:`Phone` s (unmapped sounds keep their mnemonic)."""
    out = []
    for symbol, start, end in phonemes:
        core = strip_stress(symbol)
        out.append(Phone(_ESPEAK_TO_ARPABET.get(core, core), float(start), float(end), None))
    return out


@dataclasses.dataclass(frozen=True)
class Phone:
    """One aligned phone: ARPAbet ``name`` (no stress digits; ``"SIL"`` for silence and
    noise), ``start`` and ``end`` in seconds, and the word it belongs to (None without one)."""

    name: str
    start: float
    end: float
    word: str | None = None

    def frames(self, fps: int = FPS) -> range:
        """Video frames whose centre lies inside the phone (may be empty for a short phone)."""
        first = int(np.ceil(self.start * fps - 0.5))
        last = int(np.ceil(self.end * fps - 0.5))
        return range(max(first, 0), max(last, 0))


def _decoder(**options):
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - pocketsphinx is a dependency
        raise ImportError("phone alignment needs pocketsphinx: pip install 'pocketsphinx>=5'") from exc
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **options)


def _pcm16(wav) -> bytes:
    """16-bit PCM with a seeded dither of about 3 LSB: digital silence (exact zeros, as
    synthesised or padded audio has) breaks pocketsphinx's log-energy features and its alignment."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or len(wav) < SAMPLE_RATE // 10:
        raise AudioError(f"expected mono 16 kHz audio of at least 0.1 s as a 1-D array, got shape {wav.shape}")
    dither = 1e-4 * np.random.default_rng(0).standard_normal(len(wav))
    return (np.clip(wav + dither, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()


def _decode(decoder, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def normalise_transcript(text: str) -> list[str]:
    """Lower-case words as the dictionary spells them (punctuation and ``<s>`` markers dropped)."""
    text = re.sub(r"</?s>|\([^)]*\)$", " ", text.lower())
    return re.findall(r"[a-z0-9']+", text)


def _phone_name(name: str) -> str:
    name = re.sub(r"\d$", "", name.upper())
    return SILENCE if name in ("SIL", "") or name.startswith("+") else name


def align_phones(wav, transcript: str) -> list[Phone]:
    """Force-align a recording with its transcript.

    Args:
        wav: float32 [N] mono at 16 kHz.
        transcript: the words spoken (case and punctuation are ignored).
    Returns:
        Phones in order, contiguous, silences included, each with its word.
    Raises:
        ValueError: a word is not in pocketsphinx's dictionary (named), or alignment failed.
    """
    words = normalise_transcript(transcript)
    if not words:
        raise ValueError("the transcript has no words")
    decoder, pcm = _decoder(bestpath=False), _pcm16(wav)
    unknown = sorted({w for w in words if decoder.lookup_word(w) is None})
    if unknown:
        raise ValueError(f"words not in the CMU pronouncing dictionary: {', '.join(unknown)}; "
                         "spell them as a similar-sounding known word or drop them")
    decoder.set_align_text(" ".join(words))
    _decode(decoder, pcm)  # pass 1: the word path through the text
    try:
        decoder.set_alignment()  # fails when pass 1 found no path through the whole text
        _decode(decoder, pcm)  # pass 2: phone and state boundaries on that path
        alignment = decoder.get_alignment()
    except RuntimeError:
        alignment = None
    if alignment is None:
        raise ValueError("pocketsphinx could not align the recording with the transcript (does the "
                         "transcript match the speech? very noisy or robotic speech can fail)")
    phones = []
    for word in alignment:
        label = None if word.name.startswith("<") else re.sub(r"\(\d+\)$", "", word.name)
        for phone in word:
            start = phone.start * _FRAME_S
            phones.append(Phone(_phone_name(phone.name), start, start + phone.duration * _FRAME_S, label))
    return phones


def recognise_phones(wav) -> list[Phone]:
    """Recognise phones without a transcript (allphone search; expect a phone error rate of
    tens of percent: use :func:`align_phones` when the words are known)."""
    from pocketsphinx import get_model_path

    phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
    decoder = _decoder(allphone=phone_lm, lm=None, bestpath=False, lw=2.0, beam=1e-20, pbeam=1e-20)
    _decode(decoder, _pcm16(wav))
    return [Phone(_phone_name(s.word), s.start_frame * _FRAME_S, (s.end_frame + 1) * _FRAME_S)
            for s in decoder.seg()]


def frame_labels(phones: list[Phone], num_frames: int, fps: int = FPS) -> list[str]:
    """One phone name per video frame (the phone under the frame centre; ``"SIL"`` outside)."""
    labels = [SILENCE] * num_frames
    for phone in phones:
        for f in phone.frames(fps):
            if f < num_frames:
                labels[f] = phone.name
    return labels
