"""Speech synthesis with per-phoneme timings: eSpeak NG through ``espeakng_loader``.

The library and its voice data ship inside the ``espeakng-loader`` wheel (no system install).
We drive the eSpeak NG C API with ctypes in synchronous mode: ``espeak_Synth`` returns after
calling our callback with chunks of 16-bit audio at 22050 Hz and lists of events; with
``espeakINITIALIZE_PHONEME_EVENTS`` the events include one per phoneme, whose ``sample``
field is its start in samples since the start of the utterance and whose ``id`` union packs
the phoneme mnemonic (eSpeak's ASCII names, e.g. ``p``, ``'A:``, ``aI``, ``_:``; a leading
``'``/``,`` marks primary/secondary stress).

Determinism: eSpeak's waveform generator keeps state in C statics that no API resets (the
pitch-flutter phase in ``AdvanceParameters``, the glottal phase, ...), so the same call gives
slightly different audio and timings depending on what was spoken before. We therefore load
a private copy of the library (copied once per process, so no other user of the .so shares
its statics), and for each utterance dlopen it, initialise, speak, terminate and dlclose it:
fresh statics every time, at about 1 ms of overhead. The library is not thread-safe, so
everything runs under a module lock.
"""

from __future__ import annotations

import _ctypes
import ctypes
import dataclasses
import os
import shutil
import tempfile
import threading

import numpy as np
from scipy.signal import resample_poly

from vividtalk.audio.align import SAMPLE_RATE
from vividtalk.audio.phonemes import ESPEAK_SILENCE

ESPEAK_RATE = 22050  # Hz, eSpeak NG's native output rate

# espeak_AUDIO_OUTPUT / initialise options / espeak_EVENT_TYPE / espeak_PARAMETER (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA (UTF-8) instead of mnemonics
_EE_OK = 0

# eSpeak's pause mnemonics ("_", "_:", "_!", ...) all become this one silence symbol.
SILENCE = ESPEAK_SILENCE

# English voices with variants that exist in the shipped data (voices/!v): male and female.
VOICES = [
    "en+m1", "en+f2", "en+m3", "en+f4",
    "en-us+m2", "en-us+f1", "en-us+m5", "en-us+f3",
    "en-gb-x-rp+m4", "en-gb-x-rp+f5",
    "en-gb-scotland+m6", "en-gb-scotland+f2",
    "en-029+m7", "en-029+f4",
    "en-us-nyc+m8", "en-us-nyc+f1",
    "en-gb-x-gbclan+m2", "en-gb-x-gbcwmd+f3",
    "en-us+Andy", "en+Annie", "en-us+steph", "en+michel",
]


@dataclasses.dataclass
class Utterance:
    """Synthetic speech and its phoneme alignment.

    Attributes:
        audio: float32 [N], mono, 16 kHz, in [-1, 1].
        phonemes: (symbol, start_s, end_s) in order, contiguous, covering [0, N / 16000] s;
            symbols are eSpeak mnemonics (stress marks kept), ``"_"`` is silence.
        text, voice, rate (words per minute), pitch (0-100): the synthesis inputs.
    """

    audio: np.ndarray
    phonemes: list[tuple[str, float, float]]
    text: str
    voice: str
    rate: int
    pitch: int

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / SAMPLE_RATE


class _IdUnion(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples at 22050 Hz since the start of the text
        ("user_data", ctypes.c_void_p),
        ("id", _IdUnion),
    ]


# t_espeak_callback: int (short *wav, int num_samples, espeak_EVENT *events)
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)
_LOCK = threading.Lock()
_PRIVATE_DIR: tempfile.TemporaryDirectory | None = None  # holds the private copy until exit


def _private_library() -> tuple[str, str]:
    """(path of this process's private copy of libespeak-ng, voice data path); call locked."""
    global _PRIVATE_DIR
    import espeakng_loader

    if _PRIVATE_DIR is None:
        _PRIVATE_DIR = tempfile.TemporaryDirectory(prefix="vividtalk-espeak-")
        shutil.copy(espeakng_loader.get_library_path(), _PRIVATE_DIR.name)
    name = os.path.basename(espeakng_loader.get_library_path())
    return os.path.join(_PRIVATE_DIR.name, name), espeakng_loader.get_data_path()


class _Collector:
    """Receives eSpeak's callbacks: int16 audio chunks and (mnemonic, start sample) events."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[str, int]] = []

    def __call__(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0")[0].decode("ascii", "replace")
                self.events.append((name, event.sample))
            i += 1
        return 0  # 0 = continue synthesis


def _open(lib_path: str, data_path: str) -> ctypes.CDLL:
    """dlopen the library and initialise it (synchronous output, phoneme events)."""
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    options = _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), options)
    if rate != ESPEAK_RATE:
        _unload(lib)
        raise RuntimeError(f"espeak_Initialize failed or gave an unexpected rate: {rate}")
    # The noise of unvoiced sounds comes from eSpeak's own generator, seeded from the clock at
    # initialisation: reseed it (after espeak_Initialize) so that output is reproducible.
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(1)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    """dlclose (ctypes never unloads by itself); ``lib`` must not be called afterwards."""
    (_ctypes.dlclose if hasattr(_ctypes, "dlclose") else _ctypes.FreeLibrary)(lib._handle)


def _close(lib: ctypes.CDLL) -> None:
    """Terminate and unload, so the next _open starts from the library's initial statics."""
    lib.espeak_Terminate()
    _unload(lib)


def _select_voice(lib: ctypes.CDLL, data_path: str, voice: str) -> None:
    """Raise ValueError unless ``voice`` ("lang" or "lang+variant") exists."""
    base, _, variant = voice.partition("+")
    # eSpeak silently ignores an unknown variant, so look for its file ourselves.
    if variant and not os.path.isfile(os.path.join(data_path, "voices", "!v", variant)):
        raise ValueError(f"unknown eSpeak NG voice variant {variant!r} in {voice!r}")
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise ValueError(f"unknown eSpeak NG voice {base!r} (e.g. one of {VOICES[:4]})")


def _speak(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """int16 [M] audio at 22050 Hz and (mnemonic, start sample) phoneme events."""
    with _LOCK:
        lib_path, data_path = _private_library()
        lib = _open(lib_path, data_path)
        collector = _Collector()
        callback = _CALLBACK(collector)  # referenced until the library is unloaded
        try:
            lib.espeak_SetSynthCallback(callback)
            _select_voice(lib, data_path, voice)
            lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            data = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with error {err}")
        finally:
            _close(lib)
    audio = np.concatenate(collector.chunks) if collector.chunks else np.zeros(0, np.int16)
    return audio, collector.events


def phonemize(text: str, voice: str = "en-us") -> list[list[tuple[str, str]]]:
    """eSpeak NG's phonemes of ``text`` without speaking it, clause by clause.

    Returns:
        One list per clause of (mnemonic, IPA) pairs, one pair per phoneme (stress marks kept on
        both), with ``(" ", " ")`` between words. The two transcriptions come from two calls
        with a phoneme separator, so they pair up one to one.
    """
    def clauses(mode: int) -> list[list[str]]:
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr, out = ctypes.c_char_p(ctypes.addressof(buf)), []
        while ptr.value:  # one clause per call; eSpeak advances the pointer
            result = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode | (ord("|") << 8))
            words = (result or b"").decode("utf-8").split()
            out.append([p for i, w in enumerate(words) for p in ([" "] if i else []) + w.split("|")])
        return out

    with _LOCK:
        lib_path, data_path = _private_library()
        lib = _open(lib_path, data_path)
        try:
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
            _select_voice(lib, data_path, voice)
            ascii_, ipa = clauses(0), clauses(_PHONEMES_IPA)
        finally:
            _close(lib)
    if [len(c) for c in ascii_] != [len(c) for c in ipa]:
        raise RuntimeError(f"eSpeak's ASCII and IPA phonemes of {text!r} do not pair up")
    return [[(a, i) for a, i in zip(ca, ci) if a] for ca, ci in zip(ascii_, ipa)]


def phoneme_segments(
    events: list[tuple[str, int]], num_samples: int, sample_rate: int
) -> list[tuple[str, float, float]]:
    """Turn phoneme start events into contiguous segments covering [0, num_samples / sample_rate].

    Args:
        events: (mnemonic, start sample) in order.
        num_samples: length of the audio the events index, in samples.
    Returns:
        (symbol, start_s, end_s) list; zero-length phonemes dropped, silences merged into "_".
    """
    duration = num_samples / sample_rate
    starts = [(SILENCE if name.startswith("_") else name, min(s / sample_rate, duration))
              for name, s in events]
    starts.insert(0, (SILENCE, 0.0))  # audio before the first phoneme is silence
    ends = [t for _, t in starts[1:]] + [duration]
    segments: list[tuple[str, float, float]] = []
    for (name, start), end in zip(starts, ends):
        if end <= start:
            continue
        if segments and name == SILENCE and segments[-1][0] == SILENCE:
            segments[-1] = (SILENCE, segments[-1][1], end)
            continue
        segments.append((name, start, end))
    if segments:  # the first kept segment starts at 0 even if earlier ones were dropped
        segments[0] = (segments[0][0], 0.0, segments[0][2])
    return segments


def synthesize(text: str, voice: str = "en", rate: int = 160, pitch: int = 50) -> Utterance:
    """Speak ``text`` with eSpeak NG. Deterministic for the same inputs.

    Args:
        voice: eSpeak voice, optionally with a variant: "en", "en-us+m2", "en+f3", ...
        rate: speaking rate, words per minute (eSpeak accepts about 80-450).
        pitch: base pitch, 0-100 (50 is the voice's default).
    Returns:
        Utterance with float32 [N] audio at 16 kHz and its phoneme segments.
    Raises:
        ValueError: the voice or variant does not exist.
    """
    raw, events = _speak(text, voice, rate, pitch)
    # 22050 -> 16000 Hz is the exact ratio 320 / 441; resample_poly gives ceil(M * 320 / 441).
    audio = resample_poly(raw.astype(np.float64) / 32768.0, 320, 441).astype(np.float32)
    phonemes = phoneme_segments(events, len(raw), ESPEAK_RATE)
    if phonemes:  # re-end at the resampled length (differs from the 22050 Hz one by < 1 sample)
        phonemes[-1] = (phonemes[-1][0], phonemes[-1][1], len(audio) / SAMPLE_RATE)
    return Utterance(audio, phonemes, text, voice, int(rate), int(pitch))


def pad_silence(utterance: Utterance, start_s: float, end_s: float) -> Utterance:
    """Add silence before and after the speech, shifting the phoneme times.

    Args:
        start_s, end_s: seconds of silence (zeros) to prepend / append; rounded to samples.
    """
    n0, n1 = round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
    audio = np.concatenate([np.zeros(n0, np.float32), utterance.audio, np.zeros(n1, np.float32)])
    shift = n0 / SAMPLE_RATE
    phonemes = [(SILENCE, 0.0, shift)] + [(p, s + shift, e + shift) for p, s, e in utterance.phonemes]
    phonemes.append((SILENCE, phonemes[-1][2], len(audio) / SAMPLE_RATE))
    # Merge the added silences with the utterance's own and drop empty segments.
    events = [(p, round(s * SAMPLE_RATE)) for p, s, _ in phonemes]
    return dataclasses.replace(utterance, audio=audio,
                               phonemes=phoneme_segments(events, len(audio), SAMPLE_RATE))


# A small grammar whose words cover bilabials (p b m), labiodentals (f v), rounded (o u w),
# open (a), spread (i), dental/alveolar, velar and postalveolar sounds.
_SUBJECTS = ["the man", "my mother", "a big dog", "the young boy", "our teacher", "Bob",
             "the pilot", "Mary", "a farmer", "the old woman", "his father", "Vivian"]
_VERBS = ["bought", "moved", "found", "pulled", "wanted", "saw", "brought", "opened",
          "washed", "painted", "cooked", "watched", "loved", "fixed", "shared", "chose"]
_ADJECTIVES = ["blue", "heavy", "small", "warm", "cheap", "beautiful", "purple", "round",
               "five", "huge", "very good", "funny", "quiet", "shiny"]
_NOUNS = ["boots", "apples", "maps", "boxes", "books", "photos", "balloons", "pumpkins",
          "shoes", "windows", "cars", "violins", "puppies", "moons", "jars", "papers"]
_ENDINGS = ["in the morning", "on the boat", "at the park", "before lunch", "for mom",
            "by the river", "with papa", "at noon", "every Monday", "over the bridge",
            "from the shop", "near the zoo", "under the table", "after the movie", "today",
            "again", "quickly", "with a smile"]


def random_sentence(rng: np.random.Generator, min_words: int = 6, max_words: int = 14) -> str:
    """A random English sentence of about min_words..max_words words from a built-in grammar.

    Subject verb [number] [adjective] noun, then endings (1-3 words) while they fit. The core
    has 4-7 words, so min_words < 4 or max_words < 7 are not always honoured.
    """
    def pick(options: list[str]) -> list[str]:
        return options[int(rng.integers(len(options)))].split()

    target = int(rng.integers(min_words, max_words + 1))
    words = pick(_SUBJECTS) + pick(_VERBS)
    if rng.random() < 0.4:
        words += pick(["two", "nine", "many", "some", "four"])
    if rng.random() < 0.8:
        words += pick(_ADJECTIVES)
    words += pick(_NOUNS)
    while len(words) < target:
        text, room = " ".join(words), max(target - len(words), 1)
        fitting = [e for e in _ENDINGS if e not in text and len(e.split()) <= room]  # unused, fitting
        if not fitting:
            break
        words += pick(fitting)
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:] + "."
