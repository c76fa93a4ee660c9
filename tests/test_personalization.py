"""Few-shot personalisation (`vividtalk.personalization`, `vividtalk personalize`): LoRA through peft on
stage 2's networks, the inverted source appearance, resumable adaptation, the saved directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vividtalk.data import Clip
from vividtalk.data.video import VideoError, write_video
from vividtalk.face import NoFaceError
from vividtalk.mesh2video.lora import add_lora, has_lora, lora_targets, merge_lora
from vividtalk.personalization.adapt import AdaptSettings, frames_batch, split_frames, train_adapter
from vividtalk.personalization.adapter import PersonAdapter
from vividtalk.personalization.store import PersonalizationError
from vividtalk.personalization.video import prepare_person_video
from vividtalk.pipeline import VividTalkPipeline


def tiny_stage2(tiny_stages, seed: int = 0):
    from vividtalk.pretrained import build_stage

    torch.manual_seed(seed)
    module = build_stage(tiny_stages["mesh2video"]).eval()
    nn.init.normal_(module.motion_vae.out.weight, std=1e-2)  # the frames move
    return module


@pytest.fixture(scope="module")
def person_video(talking_frames, tmp_path_factory):
    """60 carphone frames (2.4 s, the man talking) with a tone as their sound."""
    path = tmp_path_factory.mktemp("person") / "person.mp4"
    t = np.arange(60 * 640) / 16000
    write_video(path, iter([np.ascontiguousarray(f) for f in talking_frames[:60]]), fps=25,
                audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype("f4"))
    return path


@pytest.fixture(scope="module")
def person_clip(person_video, face_model, tmp_path_factory):
    return Clip(prepare_person_video(person_video, tmp_path_factory.mktemp("work"), face_model, progress=False))


def source_of(module, clip: Clip) -> dict:
    src = frames_batch(clip, [0], torch.device("cpu"), "source")
    with torch.no_grad():
        return module.prepare_source(src["source"], src["source_mask"], src["source_vertices"], src["source_lips"])


def drive(module, prepared, clip: Clip, frames=(5, 30, 50)) -> torch.Tensor:
    batch = frames_batch(clip, frames, torch.device("cpu"))
    with torch.no_grad():
        return module.animate(prepared, batch["driving_vertices"], batch["driving_lips"], sample=False)["image"]


def randomise_lora(network: nn.Module, std: float = 0.05) -> None:
    with torch.no_grad():
        for name, p in network.named_parameters():
            if ".lora_" in name:
                p.normal_(0.0, std)


def test_person_video_becomes_one_clip_with_one_crop(person_clip):
    assert len(person_clip) == 60 and person_clip.has_audio
    arrays = person_clip.arrays(("vertices", "lip_landmarks", "pose"))
    assert arrays["vertices"].shape == (60, 468, 3) and np.isfinite(arrays["vertices"]).all()
    # One box for the clip: the face stays inside the crop in every frame.
    xy = arrays["vertices"][..., :2]
    assert xy.min() > 0 and xy.max() < 256
    assert split_frames(60, 0.1) == (range(0, 54), range(54, 60))


def test_prepared_video_is_reused_and_bad_videos_are_refused(person_video, person_clip, face_model, tmp_path):
    again = prepare_person_video(person_video, person_clip.path.parent, face_model, progress=False)
    assert (again / "meta.json").stat().st_mtime_ns == (person_clip.path / "meta.json").stat().st_mtime_ns
    with pytest.raises(VideoError, match="not found"):
        prepare_person_video(tmp_path / "missing.mp4", tmp_path / "w1", face_model, progress=False)
    faceless = tmp_path / "wall.mp4"
    write_video(faceless, iter([np.full((96, 96, 3), 120, np.uint8)] * 60), fps=25)
    with pytest.raises(NoFaceError):
        prepare_person_video(faceless, tmp_path / "w2", face_model, progress=False)
    with pytest.raises(VideoError, match="at least 2 s"):
        prepare_person_video(person_video, tmp_path / "w3", face_model, max_seconds=1.0, progress=False)
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists() and not (tmp_path / "w3").exists()


def test_lora_at_init_leaves_the_frames_unchanged(tiny_stages, person_clip):
    module = tiny_stage2(tiny_stages)
    prepared = source_of(module, person_clip)
    base = drive(module, prepared, person_clip)
    convs = {n: len(lora_targets(getattr(module, n))) for n in ("motion_vae", "generator")}
    adapter = PersonAdapter(module, prepared, rank=2)
    assert len(adapter.targets["motion_vae"]) == convs["motion_vae"]  # every conv / linear layer
    assert all(not t.startswith("encoder") for t in adapter.targets["generator"])
    assert len(adapter.targets["generator"]) == convs["generator"] - len(lora_targets(module.generator.encoder))
    assert torch.equal(drive(module, prepared, person_clip), base)
    randomise_lora(module.motion_vae)  # the check can fail: adapters that are not zero change the frames
    assert (drive(module, prepared, person_clip) - base).abs().max() > 1e-3


def test_merged_adapters_render_the_unmerged_frames(tiny_stages, person_clip):
    module = tiny_stage2(tiny_stages)
    prepared = source_of(module, person_clip)
    base = drive(module, prepared, person_clip)
    for name in ("motion_vae", "generator"):
        add_lora(getattr(module, name), rank=3, alpha=6.0, exclude=("encoder",) if name == "generator" else ())
        randomise_lora(getattr(module, name))
    unmerged = drive(module, prepared, person_clip)
    assert (unmerged - base).abs().max() > 1e-3
    for name in ("motion_vae", "generator"):
        merge_lora(getattr(module, name))
        assert not has_lora(getattr(module, name))
    assert not any(".lora_" in k or "base_layer" in k for k in module.state_dict())
    torch.testing.assert_close(drive(module, prepared, person_clip), unmerged, atol=1e-4, rtol=0)  # float32 sums


def test_only_the_adapters_and_the_appearance_get_gradients(tiny_stages, person_clip):
    module = tiny_stage2(tiny_stages)
    adapter = PersonAdapter(module, source_of(module, person_clip), rank=2)
    randomise_lora(module.motion_vae)  # B != 0: gradients reach every A too
    randomise_lora(module.generator)
    batch = frames_batch(person_clip, [10, 20], torch.device("cpu"))
    adapter(batch["driving_vertices"], batch["driving_lips"])["image"].sub(batch["driving"]).abs().mean().backward()
    for static in (adapter.features, adapter.reference):
        assert static.grad is not None and static.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        if ".lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    trained = [p for p in adapter.lora_parameters() if p.grad.abs().sum() > 0]
    assert len(trained) == len(adapter.lora_parameters())


def test_adaptation_resumes_as_if_never_stopped(tiny_stages, person_clip, tmp_path, one_thread):
    settings = AdaptSettings(steps=4, batch_size=2, rank=2, checkpoint_every=2, lr=1e-2)
    whole = PersonAdapter(tiny_stage2(tiny_stages), source_of(tiny_stage2(tiny_stages), person_clip), rank=2)
    train_adapter(whole, person_clip, settings, tmp_path / "whole", progress=False)
    # Stopped after 2 steps (a run with steps=2 checkpoints there), then resumed by a new process.
    first = PersonAdapter(tiny_stage2(tiny_stages), source_of(tiny_stage2(tiny_stages), person_clip), rank=2)
    train_adapter(first, person_clip, AdaptSettings(**{**settings.__dict__, "steps": 2}), tmp_path / "cut",
                  progress=False)
    resumed = PersonAdapter(tiny_stage2(tiny_stages), source_of(tiny_stage2(tiny_stages), person_clip), rank=2)
    run = train_adapter(resumed, person_clip, settings, tmp_path / "cut", progress=False)
    assert run["steps"] == 2  # only the missing steps ran
    for key, value in whole.state().items():  # the same draws and updates (one thread: the same sums)
        torch.testing.assert_close(resumed.state()[key], value, atol=1e-6, rtol=0)
    # ... and the last two steps did change the adapter, by far more than that tolerance.
    assert (whole.state()["appearance.features"] - first.state()["appearance.features"]).abs().max() > 1e-3


@pytest.fixture(scope="module")
def personalised(tiny_pipeline_dir, person_video, tmp_path_factory):
    """(the tiny pipeline personalised in memory, its directory, the report): 3 steps."""
    pipe = VividTalkPipeline.from_pretrained(tiny_pipeline_dir)
    out = tmp_path_factory.mktemp("personalised") / "me"
    report = pipe.personalize(person_video, out, steps=3, batch_size=2, identity=False, progress=False)
    return pipe, out, report


def test_personalize_saves_a_small_directory_that_loads_onto_its_base(tiny_pipeline_dir, personalised):
    pipe, out, report = personalised
    assert report["frames"] == {"train": 54, "heldout": 6, "scored": 6}
    assert set(report["before"]) >= {"psnr", "ssim", "psnr_mouth", "cpbd"} and report["steps_run"] == 3
    assert not (out / ".work").exists()
    assert sum(f.stat().st_size for f in out.iterdir()) < 5e6
    config = json.loads((out / "personalization.json").read_text())
    assert config["lora"]["rank"] == 4 and config["report"]["after"]["psnr"] == report["after"]["psnr"]
    wav = (0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 200)).astype("f4")
    frames = pipe(wav, None, pose="still", blink=False).frames
    # A new process: the base loaded again, the directory applied; merged: the same frames.
    loaded = VividTalkPipeline.from_pretrained(tiny_pipeline_dir).load_personalization(out)
    again = loaded(wav, None, pose="still", blink=False).frames
    assert np.abs(again.astype(int) - frames.astype(int)).max() == 0
    merged = VividTalkPipeline.from_pretrained(tiny_pipeline_dir).load_personalization(out, merge=True)
    assert np.abs(merged(wav, None, pose="still", blink=False).frames.astype(int) - frames.astype(int)).max() <= 1
    # The inverted appearance matters: the base renders the same person's first frame otherwise.
    base = VividTalkPipeline.from_pretrained(tiny_pipeline_dir)
    plain = base(wav, loaded.personalization.source.crop, pose="still", blink=False).frames
    assert plain.shape == frames.shape and np.abs(plain.astype(int) - frames.astype(int)).max() > 0
    with pytest.raises(ValueError, match="already personalised"):
        loaded.load_personalization(out)
    with pytest.raises(ValueError, match="is personalised"):
        loaded.save_pretrained(out.parent / "copy")
    with pytest.raises(ValueError, match="an image is needed"):
        base(wav, None)


def test_a_personalisation_is_refused_by_another_base(tiny_stages, personalised):
    from vividtalk.pretrained import build_stage

    torch.manual_seed(1)
    other = VividTalkPipeline(**{n: build_stage(s) for n, s in tiny_stages.items()}, config=tiny_stages)
    with pytest.raises(PersonalizationError, match="another base pipeline"):
        other.load_personalization(personalised[1])
    assert not has_lora(other.mesh2video.generator)  # refused before anything changed
    with pytest.raises(PersonalizationError, match="is not a personalisation"):
        other.load_personalization(personalised[1].parent)


def test_cli_personalize_then_generate(tiny_pipeline_dir, person_video, personalised, tmp_path, capsys):
    from vividtalk.cli import main

    assert main(["personalize", "--video", str(person_video), "--output", str(tmp_path / "me"), "--weights",
                 str(tiny_pipeline_dir), "--steps", "1", "--batch-size", "1", "--no-identity", "--quiet"]) == 0
    assert "psnr" in capsys.readouterr().out and (tmp_path / "me" / "adapter.safetensors").is_file()
    out = tmp_path / "talk.mp4"
    assert main(["generate", "--weights", str(tiny_pipeline_dir), "--personalization", str(personalised[1]),
                 "--audio", str(person_video), "--output", str(out), "--pose", "still", "--quiet"]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()
    assert main(["personalize", "--video", str(tmp_path / "none.mp4"), "--output", str(tmp_path / "x"),
                 "--weights", str(tiny_pipeline_dir), "--quiet"]) == 2  # one clear line, no traceback
    assert "person video not found" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_personalised_stream_is_the_personalised_offline_call(personalised):
    pipe = personalised[0]
    wav = (0.3 * np.sin(np.arange(19200) / 16000 * 2 * np.pi * 200)).astype("f4")  # 1.2 s: 30 frames
    offline = pipe(wav, None, pose="still", seed=2).frames
    streamed = np.concatenate([b.frames for b in pipe.stream(None, [wav[:8000], wav[8000:]], pose="still", seed=2,
                                                             block=32, first_block=32)])
    np.testing.assert_array_equal(streamed, offline)  # one block: exactly the offline call, appearance included


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_adaptation_on_a_gpu_runs_in_mixed_precision(tiny_stages, person_clip, tmp_path):
    module = tiny_stage2(tiny_stages).cuda()
    src = frames_batch(person_clip, [0], torch.device("cuda"), "source")
    with torch.no_grad():
        prepared = module.prepare_source(src["source"], src["source_mask"], src["source_vertices"], src["source_lips"])
    adapter = PersonAdapter(module, prepared, rank=2)
    run = train_adapter(adapter, person_clip, AdaptSettings(steps=3, batch_size=2), tmp_path, progress=False)
    assert np.isfinite(run["loss"]) and adapter.features.dtype == torch.float32
