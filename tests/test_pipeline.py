"""VividTalkPipeline and generate(): saving/loading, outputs, options, long audio, bad input.

The stages are the real classes, randomly initialised and tiny (conftest.TINY_STAGES); the
inputs are the scikit-image portrait and eSpeak-like test signals.
"""

import json

import numpy as np
import pytest
import torch

from vividtalk import motion
from vividtalk.audio.io import AudioError
from vividtalk.data.video import VideoError, probe_video
from vividtalk.face.tracking import FaceTooSmallError, NoFaceError
from vividtalk.pipeline import VividTalkPipeline, demo_weights_dir, generate

SR = 16000


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-rate amplitude-modulated noise + harmonics: float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420), 1))
    return (0.2 * envelope * (voice + 0.3 * rng.standard_normal(len(t)))).astype(np.float32)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return VividTalkPipeline.from_pretrained(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def talk(pipe, portrait):
    return pipe(speech_like(1.5), portrait, seed=3)


def test_output_fields_and_save_with_audio(talk, tmp_path):
    frames = int(np.ceil(1.5 * 25))
    assert talk.frames.shape == (frames, 256, 256, 3) and talk.frames.dtype == np.uint8
    assert talk.fps == 25 and talk.audio.shape == (frames * 640,)
    assert talk.vertices.shape == (frames, 468, 3) and talk.poses.shape == (frames, 7)
    assert talk.beta.shape == (frames, 29)
    assert talk.frames.std(0).max() > 0  # the frames change over time
    path = talk.save(tmp_path / "talk.mp4")
    info = probe_video(path)
    assert info["size"] == (256, 256) and abs(info["duration"] - 1.5) < 0.15
    from vividtalk.audio.io import load_audio

    assert abs(len(load_audio(str(path))) / SR - 1.5) < 0.1  # the audio track is there


def test_save_pretrained_round_trip_and_face_model_check(pipe, portrait, tiny_pipeline_dir, tmp_path, talk):
    saved = pipe.save_pretrained(tmp_path / "copy")
    again = VividTalkPipeline.from_pretrained(saved)
    out = again(speech_like(1.5), portrait, seed=3)
    np.testing.assert_array_equal(out.frames, talk.frames)
    np.testing.assert_allclose(out.poses, talk.poses)
    config = json.loads((saved / "config.json").read_text())
    assert set(config["stages"]) == {"audio2mesh", "pose_mapper", "mesh2video"}
    config["face_model_id"] = "face-000000000000"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained with face model face-000000000000"):
        VividTalkPipeline.from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="not a saved pipeline"):
        VividTalkPipeline.from_pretrained(tmp_path)


def test_externally_loaded_encoder_weights_stay_out_of_saved_pipelines(pipe, tmp_path, monkeypatch):
    """A submodule with ``external_weights`` (the Whisper encoder, rebuilt from its package) is
    not copied into model.safetensors, and loading does not miss it."""
    from safetensors.torch import load_file

    from vividtalk.audio import LogMelEncoder

    full = load_file(str(pipe.save_pretrained(tmp_path / "full") / "model.safetensors"))
    assert any(k.startswith("audio2mesh.audio_encoder.") for k in full)
    monkeypatch.setattr(LogMelEncoder, "external_weights", True, raising=False)
    lean = pipe.save_pretrained(tmp_path / "lean")
    kept = load_file(str(lean / "model.safetensors"))
    assert not any(".audio_encoder." in k for k in kept)  # neither stage 1's nor the pose mapper's
    assert set(kept) == {k for k in full if ".audio_encoder." not in k}
    VividTalkPipeline.from_pretrained(lean)  # the encoders build their own weights
    monkeypatch.setattr(LogMelEncoder, "external_weights", False)
    with pytest.raises(ValueError, match="missing"):
        VividTalkPipeline.from_pretrained(lean)


def test_the_packaged_demo_weights_load():
    pipe = VividTalkPipeline.from_pretrained()
    assert pipe.face.model_id == pipe.mesh2video.face.model_id
    assert (demo_weights_dir() / "speech.wav").is_file() and (demo_weights_dir() / "README.md").is_file()


@pytest.mark.slow
def test_the_readme_first_command_writes_the_demo_video(tmp_path, monkeypatch):
    """The README's first command ends in `vividtalk generate --output demo.mp4`: run that."""
    import shlex
    from pathlib import Path

    from vividtalk.audio.io import load_audio
    from vividtalk.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("\n", 1)[0]
    command = shlex.split(first.split("&&")[-1])
    assert command[:2] == ["vividtalk", "generate"]
    monkeypatch.chdir(tmp_path)
    assert main(command[1:] + ["--quiet"]) == 0
    speech = len(load_audio(str(demo_weights_dir() / "speech.wav"))) / SR
    info = probe_video(tmp_path / "demo.mp4")
    assert info["size"] == (256, 256) and abs(info["duration"] - speech) < 0.1


def test_seed_and_pose_options(pipe, portrait, talk):
    wav = speech_like(1.5)
    same = pipe.plan(wav, portrait, seed=3)
    torch.testing.assert_close(same.poses, torch.from_numpy(talk.poses))
    other = pipe.plan(wav, portrait, seed=4)
    assert not torch.allclose(other.poses, same.poses)
    still = pipe.plan(wav, portrait, pose="still")
    torch.testing.assert_close(still.poses, torch.from_numpy(still.source.pose).expand_as(still.poses))
    assert not torch.allclose(same.poses[-1], same.poses[0])  # audio-driven: the head moves
    torch.testing.assert_close(same.poses[0], torch.from_numpy(same.source.pose))  # from the source pose on


def test_a_generator_drives_what_seed_drives(pipe, portrait, talk):
    """``generator=torch.Generator().manual_seed(s)`` gives what ``seed=s`` gives (head motion,
    blinks, frames); another generator samples other head motion and other blink times."""
    wav = speech_like(1.5)
    seeded = pipe.plan(wav, portrait, seed=3)
    driven = pipe.plan(wav, portrait, generator=torch.Generator().manual_seed(3))
    for key in ("vertices", "poses", "beta"):
        torch.testing.assert_close(getattr(driven, key), getattr(seeded, key), rtol=0, atol=0)
    other = pipe.plan(wav, portrait, generator=torch.Generator().manual_seed(4))
    assert (other.poses - seeded.poses).abs().max() > 1e-3  # sampled head motion differs
    out = pipe(wav, portrait, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(out.frames, talk.frames)  # talk: seed=3
    np.testing.assert_array_equal(out.poses, talk.poses)
    long = speech_like(6.0)
    blink = [i for i, n in enumerate(pipe.face.expression_names) if n.startswith("eyeBlink")]
    by_seed = pipe.plan(long, portrait, pose="still", seed=1).beta[:, blink]
    by_generator = pipe.plan(long, portrait, pose="still", generator=torch.Generator().manual_seed(1)).beta[:, blink]
    by_other = pipe.plan(long, portrait, pose="still", generator=torch.Generator().manual_seed(2)).beta[:, blink]
    assert torch.equal(by_generator, by_seed) and by_seed.max() > 0.95
    assert not torch.equal(by_other, by_seed)  # other blink times


def test_seed_and_generator_together_are_refused(pipe, portrait):
    with pytest.raises(ValueError, match="either seed or generator, not both"):
        pipe.plan(speech_like(0.5), portrait, seed=1, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="either seed or generator, not both"):
        pipe(speech_like(0.5), portrait, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="must be a torch.Generator"):
        pipe.plan(speech_like(0.5), portrait, generator=np.random.default_rng(0))


def test_options_are_keyword_arguments_without_passthrough():
    """Every option of the generation entry points is a named keyword argument with a default."""
    import inspect

    options = {"pose", "reference_video", "expression_scale", "blink", "seed", "generator", "temperature",
               "motion_model", "style_video", "cfg_scale", "steps", "output_size", "progress"}
    for fn, extra in ((VividTalkPipeline.__call__, {"batch_size"}), (VividTalkPipeline.plan, set()),
                      (VividTalkPipeline.write, {"batch_size"}), (generate, {"batch_size", "personalization"})):
        params = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), fn
        keyword = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
        assert keyword == options | extra, (fn, keyword ^ (options | extra))
        assert all(params[n].default is not inspect.Parameter.empty for n in keyword)
        plan = inspect.signature(VividTalkPipeline.plan).parameters  # one default for each option
        assert {n: params[n].default for n in options} == {n: plan[n].default for n in options}, fn
        for name in keyword:
            assert f"{name}" in (fn.__doc__ or ""), (fn.__name__, name)


def test_pose_copied_from_a_reference_video(pipe, portrait, talking_frames, tmp_path):
    from vividtalk.audio2mesh.pose_repr import pose_to_features
    from vividtalk.data.video import write_video
    from vividtalk.face.prepare import reference_poses

    video = tmp_path / "ref.mp4"
    write_video(video, iter(talking_frames[:30]))
    plan = pipe.plan(speech_like(1.0), portrait, pose="video", reference_video=str(video))
    ref = torch.from_numpy(reference_poses(list(talking_frames[:30]), pipe.face))
    src = torch.from_numpy(plan.source.pose)
    got = pose_to_features(plan.poses[None], src[None])[0]  # motion relative to the source
    want = pose_to_features(ref[None], ref[None, 0])[0][:25]  # the video's motion
    assert (want[:, :3].abs().max() > 0.01)  # the man does move his head
    error = (got[:, :3] - want[:, :3]).abs()  # radians; the reference was re-encoded (H.264)
    assert error.max() < 0.035 and error.mean() < 0.01
    with pytest.raises(ValueError, match="reference_video"):
        pipe.plan(speech_like(1.0), portrait, pose="video")


def test_expression_scale_blink_and_silence(pipe, portrait):
    wav = speech_like(6.0)
    names = pipe.face.expression_names
    blink = [i for i, n in enumerate(names) if n.startswith("eyeBlink")]
    with_blinks = pipe.plan(wav, portrait, pose="still", seed=1)
    assert with_blinks.beta[:, blink].max() > 0.95  # at least one full blink in 6 s
    assert pipe.plan(wav, portrait, pose="still", blink=False).beta[:, blink].abs().max() == 0
    zero = pipe.plan(wav, portrait, pose="still", expression_scale=0.0)
    assert zero.beta.abs().max() == 0
    neutral = pipe.face.assemble(zero.beta, identity=torch.from_numpy(zero.source.identity), pose=zero.poses)
    torch.testing.assert_close(zero.vertices, neutral)
    # Silent audio: the lip blendshapes and offsets are gated to zero, the mouth stays closed.
    silent = pipe.plan(np.zeros(SR, np.float32), portrait, pose="still")
    lips = pipe.audio2mesh.network.lip_index
    assert silent.beta[:, lips].abs().max() == 0
    lip_vertices = pipe.face.lip_indices
    closed = pipe.face.assemble(silent.beta, identity=torch.from_numpy(silent.source.identity), pose=silent.poses)
    torch.testing.assert_close(silent.vertices[:, lip_vertices], closed[:, lip_vertices])


def test_speech_gate_and_blinks_on_known_signals():
    wav = torch.cat([torch.zeros(25 * 640), 0.1 * torch.randn(25 * 640), torch.zeros(25 * 640)])
    gate = motion.speech_gate(wav, 75, voice=False)  # the level gate alone (noise is no speech)
    assert gate[:20].max() == 0 and gate[30:45].min() == 1 and gate[55:].max() == 0
    blinks = motion.blink_track(25 * 60, seed=0)
    onsets = ((blinks[1:] >= 0.99) & (blinks[:-1] < 0.99)).sum()
    assert 12 <= onsets <= 30  # one every 2-5 s over a minute
    torch.testing.assert_close(blinks, motion.blink_track(25 * 60, seed=0))


def test_chunks_crossfade_and_chunked_features_match_whole_file():
    assert motion.chunk_starts(100, 40, 10) == [0, 30, 60]
    assert motion.chunk_starts(40, 40, 10) == [0]
    with pytest.raises(ValueError):
        motion.chunk_starts(10, 5, 5)
    done, new = torch.zeros(1, 10, 2), torch.ones(1, 8, 2)
    out = motion.crossfade(done, new, 4)  # new repeats the last 4 frames of done
    assert out.shape == (1, 14, 2)
    assert torch.all(out[0, 6:10, 0] == torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert torch.all(out[0, :6] == 0) and torch.all(out[0, 10:] == 1)
    from vividtalk.audio import LogMelEncoder

    torch.manual_seed(0)
    encoder = LogMelEncoder(out_dim=16, hidden_dim=16).eval()
    wav = torch.from_numpy(speech_like(4.0))
    with torch.no_grad():
        whole = encoder(wav[None])
        for start, stop in ((0, 30), (40, 70), (80, 100)):
            torch.testing.assert_close(motion.encode_frames(encoder, wav, start, stop), whole[:, start:stop],
                                       atol=1e-4, rtol=1e-4)


def test_long_audio_is_continuous_across_chunk_borders(pipe, portrait):
    """20 s (the tiny network's max_frames is 64, so 400-frame chunks become 64-frame ones):
    the largest frame-to-frame change at a chunk border is no larger than elsewhere."""
    plan = pipe.plan(speech_like(20.0), portrait, pose="audio")
    assert len(plan.vertices) == 500
    step = (plan.vertices[1:] - plan.vertices[:-1]).abs().amax((1, 2))  # [T - 1] px per frame
    borders = [s for s in motion.chunk_starts(500, 64, 25)[1:]] + [s + 25 for s in motion.chunk_starts(500, 64, 25)[1:]]
    border_steps = step[[b - 1 for b in borders if b - 1 < len(step)]]
    assert border_steps.max() <= 1.5 * step.quantile(0.99)


def test_full_size_output_is_pasted_into_the_image(pipe, portrait):
    out = pipe(speech_like(0.5), portrait, output_size="full", pose="still")
    assert out.frames.shape == (13, 512, 512, 3)
    corner = out.frames[:, :40, :40].astype(int)
    assert np.abs(corner - portrait[None, :40, :40]).max() <= 1  # outside the crop: the photo


def test_image_formats_give_the_same_source(pipe, portrait):
    reference = pipe.plan(speech_like(0.5), portrait, pose="still").source
    gray = portrait.mean(2).astype(np.uint8)
    rgba = np.concatenate([portrait, np.full(portrait.shape[:2] + (1,), 255, np.uint8)], axis=2)
    deep = portrait.astype(np.uint16) * 257
    for image in (rgba, deep):
        source = pipe.plan(speech_like(0.5), image, pose="still").source
        np.testing.assert_allclose(source.pose, reference.pose, atol=1e-3)
    source = pipe.plan(speech_like(0.5), gray, pose="still").source
    assert source.crop.shape == (256, 256, 3) and np.abs(source.pose[3:5] - reference.pose[3:5]).max() < 3.0


def test_huge_and_multi_face_images(pipe, portrait):
    import cv2

    huge = cv2.resize(portrait, (5120, 5120), interpolation=cv2.INTER_LINEAR)
    with pytest.warns(UserWarning, match="downscaled"):
        source = pipe.plan(speech_like(0.5), huge, pose="still").source
    assert max(source.image.shape[:2]) == 4096
    smaller = cv2.resize(portrait, (384, 384), interpolation=cv2.INTER_AREA)
    pair = np.concatenate([portrait, np.pad(smaller, ((64, 64), (0, 0), (0, 0)), constant_values=255)], axis=1)
    with pytest.warns(UserWarning, match="using the largest"):
        source = pipe.plan(speech_like(0.5), pair, pose="still").source
    # The big face on the left (its box is ~170 px, the other's ~128).
    assert source.box.x0 + source.box.size / 2 < 512 and source.box.size > 150


def test_bad_input_errors(pipe, portrait, tmp_path):
    wav = speech_like(1.0)
    with pytest.raises(NoFaceError, match="no face"):
        pipe.plan(wav, np.full((300, 300, 3), 128, np.uint8))
    import cv2

    tiny_face = cv2.resize(portrait, (80, 80), interpolation=cv2.INTER_AREA)
    with pytest.raises((FaceTooSmallError, NoFaceError)):
        pipe.plan(wav, np.pad(tiny_face, ((200, 200), (200, 200), (0, 0)), constant_values=200))
    with pytest.raises(AudioError, match="at least 0.2 s"):
        pipe.plan(wav[: SR // 10], portrait)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really")
    with pytest.raises(AudioError):
        pipe.plan(str(bad), portrait)
    text = tmp_path / "face.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="unsupported or corrupt"):
        pipe.plan(wav, str(text))
    with pytest.raises(FileNotFoundError):
        pipe.plan(wav, str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="pose must be"):
        pipe.plan(wav, portrait, pose="dance")


def test_write_streams_and_never_leaves_a_partial_file(pipe, portrait, tmp_path, monkeypatch):
    with pytest.raises(VideoError, match="output directory does not exist"):
        pipe.write(speech_like(0.5), portrait, tmp_path / "nowhere" / "out.mp4")
    out = pipe.write(speech_like(0.5), portrait, tmp_path / "out.mp4", pose="still")
    assert probe_video(out)["size"] == (256, 256)

    def broken(plan, batch_size=8, progress=False):
        yield np.zeros((256, 256, 3), np.uint8)
        raise RuntimeError("stage 2 failed")

    monkeypatch.setattr(pipe, "frames", broken)
    with pytest.raises(RuntimeError, match="stage 2 failed"):
        pipe.write(speech_like(0.5), portrait, tmp_path / "failed.mp4", pose="still")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_generate_and_the_command_line(tiny_pipeline_dir, portrait, tmp_path, capsys):
    import cv2

    from vividtalk.cli import main

    out = generate(speech_like(0.5), portrait, weights=str(tiny_pipeline_dir), pose="still")
    assert out.frames.shape == (13, 256, 256, 3)
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    from scipy.io import wavfile

    audio = tmp_path / "speech.wav"
    wavfile.write(audio, SR, (speech_like(1.0) * 32767).astype(np.int16))
    video = tmp_path / "talk.mp4"
    args = ["generate", "--audio", str(audio), "--image", str(image), "--output", str(video),
            "--weights", str(tiny_pipeline_dir), "--pose", "still", "--no-blink", "--quiet"]
    assert main(args) == 0 and probe_video(video)["size"] == (256, 256)
    assert "wrote" in capsys.readouterr().out
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
    assert main(args[:4] + [str(blank)] + args[5:6] + [str(tmp_path / "x.mp4")] + args[7:]) == 2
    assert "no face" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_save_pipeline_from_lightning_runs(tmp_path, tiny_stages):
    """Three runs as `vividtalk fit` leaves them (config.yaml beside checkpoints/) -> one pipeline."""
    import yaml

    from vividtalk.cli import main
    from vividtalk.pretrained import build_stage

    torch.manual_seed(1)
    paths = {}
    for stage, spec in tiny_stages.items():
        run = tmp_path / stage / "lightning_logs" / "version_0"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 0, "model": spec}))
        torch.save({"state_dict": build_stage(spec).state_dict()}, run / "checkpoints" / "last.ckpt")
        paths[stage] = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "pipe"
    assert main(["save-pipeline", "--audio2mesh", paths["audio2mesh"], "--pose-mapper", paths["pose_mapper"],
                 "--mesh2video", paths["mesh2video"], "--output", str(out), "--temperature", "0.7"]) == 0
    pipe = VividTalkPipeline.from_pretrained(out)
    assert pipe.pose_mapper.temperature == 0.7
    state = torch.load(paths["audio2mesh"], weights_only=True)["state_dict"]
    for key, value in pipe.audio2mesh.state_dict().items():
        torch.testing.assert_close(value, state[key])
    (tmp_path / "audio2mesh" / "lightning_logs" / "version_0" / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        VividTalkPipeline.from_checkpoints(paths["audio2mesh"], paths["pose_mapper"], paths["mesh2video"])


def test_pipelines_saved_before_the_mesh_flow_load_as_the_paper_literal_stage_2(tiny_stages, tmp_path):
    import copy
    import json

    from vividtalk.pretrained import build_stage

    stages = copy.deepcopy(tiny_stages)
    stages["mesh2video"]["init_args"]["motion_vae"]["init_args"]["mesh_flow"] = False
    torch.manual_seed(0)
    VividTalkPipeline(**{k: build_stage(v) for k, v in stages.items()}, config=stages).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == 2
    assert config["stages"]["mesh2video"]["init_args"]["motion_vae"]["init_args"]["mesh_flow"] is False
    # As written before the switch existed: version 1, no mesh_flow key.
    del config["stages"]["mesh2video"]["init_args"]["motion_vae"]["init_args"]["mesh_flow"]
    config["format_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not VividTalkPipeline.from_pretrained(tmp_path).mesh2video.motion_vae.uses_mesh_flow


def test_stage_timings_wait_for_the_gpu(monkeypatch):
    """plan()'s seconds per stage (reported by `vividtalk bench generate`): on CUDA every
    timestamp follows torch.cuda.synchronize, or a lap would time the launch of its kernels, not
    their run, and the next lap would pay for them; on the CPU nothing is synchronised."""
    from types import SimpleNamespace

    import vividtalk.pipeline as pipeline

    events, ticks = [], iter([1.0, 3.5, 4.0, 5.0, 6.0])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"sync {device}"))
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=lambda: events.append("time") or next(ticks)))
    clock = pipeline._Clock(torch.device("cuda", 0))
    clock.lap("expression")
    clock.lap("pose")
    assert events == ["sync cuda:0", "time"] * 3
    assert clock.seconds == {"expression": 2.5, "pose": 0.5}
    events.clear()
    pipeline._Clock("cpu").lap("source")
    assert events == ["time", "time"]
