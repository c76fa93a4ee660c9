"""The data and training benchmarks build what the recipes train with, and measure it."""

import numpy as np
import pytest

from vividtalk.benchmarks.loader import bench_loader, fixture_corpus
from vividtalk.benchmarks.train import bench_train
from vividtalk.data import Clip, FrameStore, FrameStoreError, list_clips


def test_fixture_corpus_is_a_face_not_noise(tmp_path):
    root = fixture_corpus(tmp_path / "c", clips=2, frames=30)
    clip = Clip(list_clips(root)[0])
    frames = clip.frames()
    assert frames.shape == (30, 256, 256, 3) and clip.has_audio
    # Smooth photo content: neighbouring pixels agree (noise would differ by ~85 levels).
    assert np.abs(np.diff(frames[0].astype(int), axis=1)).mean() < 15
    assert set(np.unique(clip.mask(0))) == {0, 1, 2}


def test_frame_store_refuses_a_damaged_file(tmp_path):
    root = fixture_corpus(tmp_path / "c", clips=1, frames=5)
    path = list_clips(root)[0] / "frames.pack"
    data = path.read_bytes()
    (tmp_path / "cut.pack").write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameStoreError, match="not a frame store|truncated"):
        FrameStore(tmp_path / "cut.pack")
    with pytest.raises(FrameStoreError, match="not found"):
        FrameStore(tmp_path / "missing.pack")
    with pytest.raises(IndexError):
        FrameStore(path).frame(5)


def test_loader_bench_reads_the_recipes_data():
    report = bench_loader(repeats=20)
    assert report["pairs_per_clip"] == 16 and report["stage1_window_frames"] == 100  # the recipes' values
    for key in ("stage2_pairs_per_second_per_worker", "stage2_pairs_per_second_no_augment",
                "format1_pairs_per_second", "stage1_windows_per_second_waveform",
                "stage1_windows_per_second_features"):
        assert report[key] > 0, key
    # The frame store's JPEG frames stay as close to the source as the H.264 video they replace.
    assert report["jpeg_vs_h264_mean_abs_difference"] < 4.0
    assert report["torch_threads"] == 1  # one loader worker's share


def test_train_bench_trains_the_recipes():
    report = bench_train(repeats=1)
    assert report["mesh2video_batch_size"] == 8 and report["audio2mesh_batch_size"] == 16
    assert report["mesh2video_images_per_second"] > 0 and report["audio2mesh_windows_per_second"] > 0
    assert report["audio2mesh_parameters"] > report["mesh2video_parameters"] > 100_000
