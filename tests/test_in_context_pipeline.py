"""MimicTalk's in-context motion model in the pipeline: motion_model, style_video, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vividtalk.audio2mesh.flow_transformer import FlowMatchingTransformer
from vividtalk.data.video import VideoError, write_video
from vividtalk.pipeline import VividTalkPipeline
from vividtalk.pretrained import build_stage

IN_CONTEXT = {"class_path": "vividtalk.audio2mesh.in_context_module.InContextMotionModule", "init_args": {
    "network": {"class_path": "vividtalk.audio2mesh.flow_transformer.FlowMatchingTransformer", "init_args": {
        "motion_dim": 51, "audio_dim": 16, "d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32,
        "dropout": 0.0, "max_frames": 128}},
    "audio_encoder": {"class_path": "vividtalk.audio.LogMelEncoder", "init_args": {"out_dim": 16, "hidden_dim": 16}},
    "steps": 2, "cfg_scale": 1.0}}


@pytest.fixture(scope="module")
def pipe(tiny_stages):
    torch.manual_seed(0)
    modules = {name: build_stage(spec) for name, spec in tiny_stages.items()}
    in_context = build_stage(IN_CONTEXT)
    for p in in_context.network.out.parameters():  # away from the zero field it starts as
        nn.init.normal_(p, std=0.2)
    return VividTalkPipeline(**modules, config={**tiny_stages, "in_context": IN_CONTEXT}, in_context=in_context)


@pytest.fixture(scope="module")
def style_video(talking_frames, tmp_path_factory):
    """40 carphone frames (a man talking) with a vowel-like tone as their sound."""
    path = tmp_path_factory.mktemp("style") / "style.mp4"
    t = np.arange(40 * 640) / 16000
    sound = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("f4")
    write_video(path, iter([np.ascontiguousarray(f) for f in talking_frames[:40]]), fps=25, audio=sound)
    return path


def _wav(seconds=1.2):
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 150 * t) * (t % 0.4 < 0.25)).astype("f4")


def test_in_context_plan_and_the_style_prompt(pipe, portrait, style_video):
    options = dict(pose="audio", blink=False, seed=0, motion_model="in_context")
    plain = pipe.plan(_wav(), portrait, **options)
    again = pipe.plan(_wav(), portrait, **options)
    styled = pipe.plan(_wav(), portrait, style_video=style_video, **options)
    assert plain.vertices.shape == styled.vertices.shape == (30, pipe.face.num_vertices, 3)
    assert torch.equal(plain.vertices, again.vertices)  # seeded
    assert (styled.vertices - plain.vertices).abs().mean() > 1e-5  # the prompt changes the motion
    assert torch.allclose(plain.poses[0], torch.from_numpy(plain.source.pose).to(plain.poses), atol=1e-4)
    vividtalk = pipe.plan(_wav(), portrait, pose="audio", blink=False, seed=0)
    assert (vividtalk.vertices - plain.vertices).abs().mean() > 1e-5  # another motion model


def test_in_context_options_are_checked(pipe, tiny_stages, portrait, style_video, tmp_path):
    with pytest.raises(ValueError, match="motion_model"):
        pipe.plan(_wav(), portrait, motion_model="nope")
    with pytest.raises(ValueError, match="motion_model='in_context'"):
        pipe.plan(_wav(), portrait, style_video=style_video)
    with pytest.raises(VideoError, match="not found"):
        pipe.plan(_wav(), portrait, motion_model="in_context", style_video=tmp_path / "missing.mp4")
    silent = tmp_path / "silent.mp4"
    write_video(silent, iter([np.full((64, 64, 3), 120, np.uint8)] * 30), fps=25)
    with pytest.raises(VideoError, match="sound"):
        pipe.plan(_wav(), portrait, motion_model="in_context", style_video=silent)
    without = VividTalkPipeline(pipe.audio2mesh, pipe.pose_mapper, pipe.mesh2video, config=tiny_stages)
    with pytest.raises(ValueError, match="no in-context motion model"):
        without.plan(_wav(), portrait, motion_model="in_context")


def test_saved_with_its_in_context_model_and_default(pipe, portrait, tmp_path):
    chosen = VividTalkPipeline(pipe.audio2mesh, pipe.pose_mapper, pipe.mesh2video, config=pipe.config,
                               in_context=pipe.in_context, motion_model="in_context")
    chosen.save_pretrained(tmp_path / "p")
    loaded = VividTalkPipeline.from_pretrained(tmp_path / "p")
    assert loaded.motion_model == "in_context" and isinstance(loaded.in_context.network, FlowMatchingTransformer)
    a = chosen.plan(_wav(), portrait, blink=False, seed=1)
    b = loaded.plan(_wav(), portrait, blink=False, seed=1)
    assert torch.allclose(a.vertices, b.vertices, atol=1e-5)


def test_a_personalisation_is_the_default_style_prompt(tiny_stages, talking_frames, tmp_path):
    torch.manual_seed(0)
    modules = {name: build_stage(spec) for name, spec in tiny_stages.items()}
    in_context = build_stage(IN_CONTEXT)
    for p in in_context.network.out.parameters():
        nn.init.normal_(p, std=0.2)
    person = VividTalkPipeline(**modules, config={**tiny_stages, "in_context": IN_CONTEXT}, in_context=in_context)
    video = tmp_path / "person.mp4"
    t = np.arange(60 * 640) / 16000
    write_video(video, iter([np.ascontiguousarray(f) for f in talking_frames[:60]]), fps=25,
                audio=(0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("f4"))
    person.personalize(video, tmp_path / "me", steps=1, batch_size=1, identity=False, progress=False)
    style = person.personalization.style
    assert style["beta"].shape[0] == 60 and style["audio"].shape == (60 * 640,)
    options = dict(pose="audio", blink=False, seed=0, motion_model="in_context")
    styled = person.plan(_wav(), None, **options)
    person.personalization.style = None  # what the same pipeline does without the person's prompt
    plain = person.plan(_wav(), None, **options)
    assert (styled.vertices - plain.vertices).abs().mean() > 1e-5
