"""Phone alignment with pocketsphinx: against eSpeak NG's own phoneme events (the exact timing
of synthetic speech), on real recorded speech (Debian's pocketsphinx-testdata, when installed),
recognition without a transcript, and the 25 fps labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.synth.speech import synthesize
from vividtalk.audio.io import load_audio
from vividtalk.audio.phonemes import (
    BILABIALS,
    SILENCE,
    Phone,
    align_phones,
    frame_labels,
    normalise_transcript,
    recognise_phones,
)

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
TEXT = "my mother bought five purple boots before lunch"


@pytest.fixture(scope="module")
def espeak():
    return synthesize(TEXT, voice="en-us", rate=160, pitch=50)


def test_alignment_finds_the_bilabials_where_espeak_put_them(espeak):
    phones = align_phones(espeak.audio, TEXT)
    ours = [p for p in phones if p.name in BILABIALS]
    truth = [(n, s, e) for n, s, e in espeak.phonemes if n.lstrip("',") in ("m", "b", "p")]
    assert [p.name.lower() for p in ours] == [n.lstrip("',") for n, _, _ in truth]
    starts = np.array([p.start - s for p, (_, s, _) in zip(ours, truth)])
    assert np.median(np.abs(starts)) < 0.03 and np.abs(starts).max() < 0.1  # seconds: within 2.5 frames
    # contiguous, ordered, every word of the transcript in order
    assert all(a.end == pytest.approx(b.start) for a, b in zip(phones, phones[1:]))
    words = [p.word for p in phones if p.word]
    assert list(dict.fromkeys(words)) == TEXT.split()


def test_unknown_words_are_named():
    with pytest.raises(ValueError, match="zorblaxx"):
        align_phones(np.zeros(16000, np.float32), "hello zorblaxx")
    with pytest.raises(ValueError, match="no words"):
        align_phones(np.zeros(16000, np.float32), "  ...  ")


def test_recognition_without_a_transcript_hears_speech_and_silence(espeak):
    phones = recognise_phones(np.pad(espeak.audio, (8000, 8000)))
    names = [p.name for p in phones]
    assert names[0] == SILENCE and names[-1] == SILENCE
    assert sum(n != SILENCE for n in names) >= 15  # about 30 phones spoken
    assert BILABIALS & set(names)


def test_frame_labels_take_the_phone_under_each_frame_centre():
    phones = [Phone(SILENCE, 0.0, 0.05), Phone("M", 0.05, 0.13), Phone("AA", 0.13, 0.3)]
    # frame centres 0.02, 0.06, 0.10, 0.14, 0.18, 0.22, 0.26, 0.30 (outside)
    assert frame_labels(phones, 8) == [SILENCE, "M", "M", "AA", "AA", "AA", "AA", SILENCE]
    assert list(Phone("P", 0.081, 0.099).frames()) == []  # between two frame centres


def test_transcripts_are_normalised():
    assert normalise_transcript("<s> He was NOT an ill-disposed man. </s> (id-0880)") == [
        "he", "was", "not", "an", "ill", "disposed", "man"]


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="Debian pocketsphinx-testdata is not installed")
def test_real_recorded_speech_aligns_word_by_word():
    wav = load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav")
    phones = align_phones(wav, "he was not an ill disposed young man")
    words = [p.word for p in phones if p.word]
    assert list(dict.fromkeys(words)) == ["he", "was", "not", "an", "ill", "disposed", "young", "man"]
    man = [p for p in phones if p.word == "man"]
    assert [p.name for p in man] == ["M", "AE", "N"]
    assert 2.0 < man[0].start < man[-1].end < len(wav) / 16000
