"""Video-driven reenactment (`VividTalkPipeline.reenact`, `vividtalk reenact`): the photo follows
the tracked video relative to its first frame; self-reenactment starts at the source frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk.data.video import VideoError, iter_frames, write_video
from vividtalk.face import NoFaceError
from vividtalk.pipeline import VividTalkPipeline


@pytest.fixture(scope="module")
def untrained_pipeline(tiny_stages):
    """Tiny random stages, stage 2 as initialised (the mesh flow, nothing painted by default)."""
    from vividtalk.pretrained import build_stage

    torch.manual_seed(0)
    return VividTalkPipeline(**{name: build_stage(spec) for name, spec in tiny_stages.items()}, config=tiny_stages)


@pytest.fixture(scope="module")
def driving_video(talking_frames, tmp_path_factory):
    """40 carphone frames with a 220 Hz tone as their sound, and the same frames silent."""
    folder = tmp_path_factory.mktemp("reenact")
    frames = [np.ascontiguousarray(f) for f in talking_frames[:40]]
    t = np.arange(40 * 640) / 16000
    write_video(folder / "talk.mp4", iter(frames), fps=25, audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype("f4"))
    write_video(folder / "silent.mp4", iter(frames), fps=25)
    return folder


def test_self_reenactment_starts_at_the_source_frame(untrained_pipeline, driving_video):
    plan = untrained_pipeline.plan_reenactment(driving_video / "talk.mp4")
    torch.testing.assert_close(plan.vertices[0], torch.from_numpy(plan.source.vertices), atol=1e-3, rtol=0)
    first = next(untrained_pipeline.frames(plan, batch_size=1))
    assert np.abs(first.astype(int) - plan.source.crop.astype(int)).max() <= 1
    assert len(plan.vertices) == 40 and plan.audio is not None and len(plan.audio) == 40 * 640
    # The driven meshes move as the tracked face does (the carphone man talks and turns).
    assert (plan.vertices - plan.vertices[:1]).abs().amax() > 2.0


def test_another_photo_follows_the_videos_motion_relative_to_its_first_frame(untrained_pipeline, driving_video,
                                                                             portrait):
    from vividtalk.face.prepare import track_and_fit

    plan = untrained_pipeline.plan_reenactment(driving_video / "talk.mp4", portrait)
    torch.testing.assert_close(plan.vertices[0], torch.from_numpy(plan.source.vertices), atol=1e-3, rtol=0)
    _, fit = track_and_fit(list(iter_frames(driving_video / "talk.mp4", fps=25)), untrained_pipeline.face)
    # Rotations change by what the video's do; blendshapes by what the video's do (clamped to [0, 1]).
    torch.testing.assert_close(plan.poses[:, :3] - plan.poses[:1, :3], fit.pose[:, :3] - fit.pose[:1, :3],
                               atol=2e-3, rtol=0)
    expected = (torch.from_numpy(plan.source.beta) + fit.beta - fit.beta[:1]).clamp(0, 1)
    torch.testing.assert_close(plan.beta, expected, atol=1e-5, rtol=0)


def test_reenact_writes_the_video_with_its_sound(untrained_pipeline, driving_video, tmp_path):
    from vividtalk.audio.io import AudioError, load_audio

    out = untrained_pipeline.reenact(driving_video / "talk.mp4", output=tmp_path / "out.mp4")
    assert len(list(iter_frames(out))) == 40
    assert abs(len(load_audio(out)) - 40 * 640) < 2048
    silent = untrained_pipeline.reenact(driving_video / "silent.mp4", output=tmp_path / "silent_out.mp4")
    with pytest.raises(AudioError):
        load_audio(silent)


def test_reenact_bad_input(untrained_pipeline, driving_video, tmp_path):
    with pytest.raises(VideoError, match="not found"):
        untrained_pipeline.reenact(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="output directory does not exist"):
        untrained_pipeline.reenact(driving_video / "talk.mp4", output=tmp_path / "no" / "out.mp4")
    faceless = tmp_path / "faceless.mp4"
    write_video(faceless, iter([np.full((96, 96, 3), 128, np.uint8)] * 10), fps=25)
    with pytest.raises(NoFaceError):
        untrained_pipeline.reenact(faceless, output=tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob("x.mp4*"))


def test_reenact_command(tiny_pipeline_dir, driving_video, tmp_path):
    from vividtalk.cli import main

    out = tmp_path / "cli.mp4"
    assert main(["reenact", "--video", str(driving_video / "talk.mp4"), "--output", str(out), "--weights",
                 str(tiny_pipeline_dir), "--quiet", "--size", "full"]) == 0
    frames = list(iter_frames(out))
    assert len(frames) == 40 and frames[0].shape == (288, 352, 3)  # pasted back into the video frame
    assert main(["reenact", "--video", str(tmp_path / "missing.mp4"), "--output", str(out), "--weights",
                 str(tiny_pipeline_dir)]) != 0
