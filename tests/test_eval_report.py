"""`vividtalk eval` on a synthetic clip with true lip sync: known answers for a synchronised,
a delayed and an identical-reference case; missing weights are listed as skipped."""

import json

import numpy as np
import pytest

from vividtalk.eval.report import evaluate_video, evaluate_videos, format_table


@pytest.fixture(scope="module")
def clip_files(tiny_synth_corpus, tmp_path_factory):
    """(video, audio, audio delayed by 8 frames, first-frame image) of a synthetic clip."""
    import cv2
    from scipy.io import wavfile

    from vividtalk.data import Clip, list_clips, write_video

    clip = Clip(sorted(list_clips(tiny_synth_corpus))[0])
    out = tmp_path_factory.mktemp("eval")
    wav = clip.audio()
    delayed = out / "delayed.wav"
    wavfile.write(delayed, 16000, np.concatenate([np.zeros(8 * 640, np.float32), wav]))
    image = out / "source.png"
    frames = clip.frames()
    cv2.imwrite(str(image), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    write_video(out / "clip.mp4", frames, fps=25)  # the clip's frames as a video file (no audio)
    return out / "clip.mp4", clip.path / "audio.wav", delayed, image


def test_a_synchronised_clip_against_itself(clip_files):
    video, audio, _, image = clip_files
    result = evaluate_video(video, reference=str(video), audio=str(audio), image=str(image))
    m, skipped = result["metrics"], result["skipped"]
    assert abs(m["mouth_energy_offset"]) <= 1 and m["mouth_energy_corr"] > 0.3
    assert m["psnr_face"] > 60 and m["ssim_face"] > 0.999  # identical videos
    assert m["lve"] == pytest.approx(0.0, abs=1e-6) and m["fdd"] == pytest.approx(0.0, abs=1e-6)
    assert m["identity_distance_to_reference"] < 1e-6 and m["identity_distance_to_source"] < 0.6
    assert m["head_motion_std_deg"] > 0 and 0 <= m["beat_alignment"] <= 1 and 0 < m["cpbd"] < 1
    for key in ("lse_d", "lse_c", "fid", "arcface_similarity"):
        assert key in skipped and "weights" in skipped[key] and key not in m


def test_delayed_audio_is_found_and_missing_inputs_are_skipped(clip_files):
    video, _, delayed, _ = clip_files
    m = evaluate_video(video, audio=str(delayed))["metrics"]
    assert 7 <= m["mouth_energy_offset"] <= 9  # the energy at t + 8 matches the mouth at t
    report = evaluate_videos([str(video)])  # the clip's mp4 has no audio track
    skipped = report["videos"][0]["skipped"]
    assert "no audio" in skipped["mouth_energy_corr"] and "no --reference" in skipped["psnr_face"]
    assert "mouth_energy_corr" not in report["mean"] and report["mean"]["frames"] > 0
    assert "skipped lse_d" in format_table(report)


def test_the_eval_command_writes_a_report(clip_files, tmp_path, capsys):
    from vividtalk.cli import main

    video, audio, _, _ = clip_files
    out = tmp_path / "report.json"
    assert main(["eval", str(video), "--audio", str(audio), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["videos"][0]["metrics"]["mouth_energy_corr"] > 0.3
    assert "mouth_energy_corr" in capsys.readouterr().out
    assert main(["eval", str(video), "--output", str(tmp_path / "missing" / "r.json")]) == 2


@pytest.mark.slow
def test_trained_weights_sync_better_than_random(tiny_pipeline_dir, portrait, tmp_path):
    """Random vs trained: the demo weights' mouth follows the speech energy, random weights' does not."""
    from vividtalk.audio.io import load_audio
    from vividtalk.pipeline import VividTalkPipeline, demo_weights_dir

    wav = load_audio(str(demo_weights_dir() / "speech.wav"))
    scores = {}
    for name, weights in (("trained", None), ("random", tiny_pipeline_dir)):
        video = VividTalkPipeline.from_pretrained(weights).write(wav, portrait, tmp_path / f"{name}.mp4", pose="still")
        scores[name] = evaluate_video(video, audio=str(demo_weights_dir() / "speech.wav"))["metrics"]
    assert scores["trained"]["mouth_energy_corr"] > 0.3
    assert scores["trained"]["mouth_energy_corr"] > scores["random"]["mouth_energy_corr"] + 0.2
