"""Lip-sync measures on phone alignments: on constructed mouth tracks whose answer is known,
and `vividtalk eval-speech` end to end on a tiny pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import wavfile

from vividtalk.audio.phonemes import Phone
from vividtalk.cli import main
from vividtalk.eval.speech_sync import closure_scores, open_vowel_share, pooled, speech_sync_scores

NEUTRAL = 0.01


def _phones(names: list[str], frames: int = 3) -> list[Phone]:
    """Phones of ``frames`` video frames each, back to back from 0 s."""
    return [Phone(n, i * frames / 25, (i + 1) * frames / 25) for i, n in enumerate(names)]


SPEECH = ["SIL"] + ["AA", "M", "IY", "T", "AE", "B", "UW", "S", "AO", "P", "IH", "K"] * 3 + ["SIL"]


def _track(phones: list[Phone], opening: dict) -> np.ndarray:
    gap = np.full(int(round(phones[-1].end * 25)), NEUTRAL)
    for p in phones:
        gap[list(p.frames())] = NEUTRAL + opening.get(p.name, 0.02)
    return gap


def test_a_mouth_closing_on_the_bilabials_scores_full_recall_above_chance():
    phones = _phones(SPEECH)
    gap = _track(phones, {"M": 0.0, "B": 0.0, "P": 0.0, "SIL": 0.0})
    scores = closure_scores(gap, NEUTRAL, phones)
    assert scores["bilabials"] == 9 and scores["closure_recall"] == 1.0
    # a closure of 3 frames every 12; a window of 3 + 2 * 2 frames at a random start meets one
    # for 7 + 3 - 1 of the 12 starts: 0.75 (a little more at the ends, beside the silences)
    assert scores["closure_chance"] == pytest.approx(0.75, abs=0.06)


def test_a_mouth_that_never_opens_scores_chance_equal_to_recall():
    phones = _phones(SPEECH)
    scores = closure_scores(np.full(len(SPEECH) * 3, NEUTRAL), NEUTRAL, phones)
    assert scores["closure_recall"] == scores["closure_chance"] == 1.0


def test_closures_off_the_bilabials_are_missed():
    phones = _phones(SPEECH, frames=6)
    gap = _track(phones, {"T": 0.0, "SIL": 0.0})  # closes on /t/ only, 3 phones (18 frames) away
    assert closure_scores(gap, NEUTRAL, phones)["closure_recall"] == 0.0


def test_open_vowel_share_orders_the_vowels():
    phones = _phones(SPEECH)
    wide = {"AA": 0.05, "AE": 0.04, "AO": 0.045, "IY": 0.01, "UW": 0.012, "IH": 0.015}
    assert open_vowel_share(_track(phones, wide), phones) == {"vowel_pairs": 81, "open_vowel_share": 1.0}
    narrow = {k: 0.06 - v for k, v in wide.items()}
    assert open_vowel_share(_track(phones, narrow), phones)["open_vowel_share"] == 0.0
    flat = open_vowel_share(np.full(len(SPEECH) * 3, 0.02), phones)
    assert flat["open_vowel_share"] == 0.5  # ties count half


def test_scores_are_pooled_by_their_counts():
    rows = [{"bilabials": 1, "closure_recall": 1.0, "closure_chance": 0.5, "vowel_pairs": 3, "open_vowel_share": 1.0,
             "mouth_energy_corr": 0.2},
            {"bilabials": 3, "closure_recall": 0.0, "closure_chance": 0.1, "vowel_pairs": 1, "open_vowel_share": 0.0,
             "mouth_energy_corr": float("nan")}]
    out = pooled(rows)
    assert out["closure_recall"] == 0.25 and out["closure_chance"] == pytest.approx(0.2)
    assert out["open_vowel_share"] == 0.75 and out["mouth_energy_corr"] == 0.2 and out["bilabials"] == 4


def test_mouth_energy_correlation_follows_loudness():
    phones = _phones(SPEECH)
    gap = _track(phones, {"M": 0.0, "B": 0.0, "P": 0.0, "SIL": 0.0})
    t = np.arange(len(gap) * 640) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 150 * t) * np.repeat(gap > NEUTRAL, 640)  # loud when open
    assert speech_sync_scores(gap, NEUTRAL, phones, wav)["mouth_energy_corr"] > 0.9


def test_eval_speech_cli_on_a_tiny_pipeline(tiny_pipeline_dir, tmp_path, capsys):
    from data_prep.synth.speech import pad_silence, synthesize

    recordings = tmp_path / "rec"
    recordings.mkdir()
    text = "my mother bought five purple boots"
    u = pad_silence(synthesize(text, voice="en-us"), 0.3, 0.3)
    wavfile.write(recordings / "one.wav", 16000, (u.audio * 32767).astype(np.int16))
    (recordings / "one.txt").write_text(text)
    (recordings / "no_transcript.wav").write_bytes((recordings / "one.wav").read_bytes())
    report = tmp_path / "speech.json"
    assert main(["eval-speech", "--recordings", str(recordings), "--weights", str(tiny_pipeline_dir),
                 "--output", str(report), "--quiet"]) == 0
    out = json.loads(report.read_text())
    assert [r["recording"] for r in out["items"]] == ["one"]  # the wav without a transcript is left out
    row = out["items"][0]
    assert row["bilabials"] == 6 and 0.0 <= row["closure_recall"] <= 1.0 and 0.0 <= row["closure_chance"] <= 1.0
    assert row["vowel_pairs"] > 0 and row["neutral_gap"] > 0
    assert out["summary"]["utterances"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval-speech", "--recordings", str(empty), "--output", str(tmp_path / "x.json")]) == 2
    assert "NAME.txt" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_a_synthetic_split_is_a_validation_set_with_the_phonemes_it_was_spoken_with(tiny_synth_corpus,
                                                                                    tiny_pipeline_dir, tmp_path):
    """eSpeak's events of each clip, in ARPAbet: bilabials where the clip's phonemes had p b m
    (a reference count from the stored meta), silences where it paused; the CLI scores them."""
    from vividtalk.data.clip import Clip
    from vividtalk.data.manifest import split_clips
    from vividtalk.speech_eval import corpus_recordings

    recordings = corpus_recordings(tiny_synth_corpus, "val")
    clips = [Clip(p) for p in split_clips(tiny_synth_corpus, "val")]
    assert [r.name for r in recordings] == [c.clip_id for c in clips]
    for rec, clip in zip(recordings, clips):
        stored = clip.meta["phonemes"]
        assert len(rec.phones) == len(stored) and len(rec.wav) == len(clip.audio())
        labials = sum(p[0].lstrip("',%=!") in ("p", "b", "m") for p in stored)
        assert sum(p.name in ("P", "B", "M") for p in rec.phones) == labials > 0
        assert [p.name == "SIL" for p in rec.phones] == [p[0] == "_" for p in stored]
        assert all(p.start == s[1] and p.end == s[2] for p, s in zip(rec.phones, stored))
    report = tmp_path / "val.json"
    assert main(["eval-speech", "--corpus", str(tiny_synth_corpus), "--weights", str(tiny_pipeline_dir),
                 "--output", str(report), "--quiet"]) == 0
    assert [r["recording"] for r in json.loads(report.read_text())["items"]] == [r.name for r in recordings]
    assert main(["eval-speech", "--output", str(tmp_path / "x.json")]) == 2  # neither --recordings nor --corpus


def test_tracked_video_follows_the_meshes():
    """The measure on the rendered, tracked video sees the mouth motion stage 1 gave the meshes
    (demo weights, the demo sentence, still head): the two gap tracks move together."""
    from vividtalk.audio.io import load_audio
    from vividtalk.face.visualize import default_portrait
    from vividtalk.pipeline import VividTalkPipeline, demo_weights_dir
    from vividtalk.speech_eval import mouth_gap_track, tracked_gap_track

    pipe = VividTalkPipeline.from_pretrained()
    wav = load_audio(demo_weights_dir() / "speech.wav")[: 16000 * 3]
    meshes, neutral = mouth_gap_track(pipe, wav, default_portrait())
    video, video_neutral = tracked_gap_track(pipe, wav, default_portrait())
    assert meshes.shape == video.shape
    assert np.corrcoef(meshes, video)[0, 1] > 0.6
    assert 0.5 < video_neutral / neutral < 2.0  # the same identity, measured from its video
