"""vividtalk-prep real-speech: recordings with transcripts, aligned, and (optionally) turned into
stage-1 training clips through the viseme model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import wavfile

from data_prep.__main__ import main as prep
from data_prep.real_speech import TESTDATA, transcripts, write_training_clips
from data_prep.synth.speech import pad_silence, synthesize
from data_prep.synth.visemes import from_arpabet
from vividtalk.audio.phonemes import align_phones
from vividtalk.data import Clip, list_clips


def test_sphinx_transcription_lines_are_parsed(tmp_path):
    (tmp_path / "t").write_text("<s> ten of clubs  </s> (001)\n<s> he was not </s> (a-0880)\nnoise\n")
    assert transcripts(tmp_path / "t") == {"001": "ten of clubs", "a-0880": "he was not"}


def test_arpabet_maps_onto_the_viseme_model():
    out = from_arpabet([("SIL", 0.0, 0.1), ("M", 0.1, 0.2), ("AH", 0.2, 0.25), ("AH", 0.25, 0.4), ("P", 0.4, 0.5)])
    assert [s for s, _, _ in out] == ["_", "m", "@", "V", "p"]  # a short AH is the schwa


def test_an_aligned_recording_becomes_a_training_clip_that_closes_on_its_bilabials(tmp_path, face_model):
    text = "my mother bought a map"
    u = pad_silence(synthesize(text, voice="en-us"), 0.3, 0.3)
    rec = tmp_path / "rec"
    rec.mkdir()
    wavfile.write(rec / "set-one.wav", 16000, (u.audio * 32767).astype(np.int16))
    (rec / "set-one.txt").write_text(text)
    phones = align_phones(u.audio, text)
    (rec / "set-one.phones.json").write_text(json.dumps([[p.name, p.start, p.end, p.word] for p in phones]))
    corpus = tmp_path / "corpus"
    assert write_training_clips(rec, corpus) == ["real-set-one"]
    clip = Clip(list_clips(corpus)[0])
    assert clip.meta["voice"] == "real:set" and len(clip) == -(-len(u.audio) // 640)
    np.testing.assert_allclose(clip.audio()[: len(u.audio)], u.audio, atol=1e-4)
    beta = clip.arrays()["beta"]
    jaw = beta[:, face_model.expression_names.index("jawOpen")]
    for p in phones:
        if p.name in ("M", "B", "P"):
            mid = int((p.start + p.end) / 2 * 25)
            assert jaw[mid] < 0.1, p
    vowels = [int((p.start + p.end) / 2 * 25) for p in phones if p.name in ("AA", "AE")]
    assert vowels and jaw[vowels].min() > 0.2
    assert (corpus / "manifest.json").is_file()


@pytest.mark.skipif(not TESTDATA.is_dir(), reason="Debian pocketsphinx-testdata is not installed")
def test_collect_the_librivox_recordings(tmp_path):
    assert prep(["real-speech", str(tmp_path), "--sets", "librivox"]) == 0
    names = sorted(p.stem for p in tmp_path.glob("*.wav"))
    assert len(names) == 5 and all(n.startswith("librivox-") for n in names)
    phones = json.loads((tmp_path / f"{names[1]}.phones.json").read_text())
    assert [p[3] for p in phones if p[3]][:2] == ["he", "he"] and phones[-1][0] == "SIL"
