"""``vividtalk bench loader``: how fast the training data arrives, per DataLoader worker.

Stage 2: (source, driving) pairs per second as the recipe's DataModule (``stages/mesh2video.yaml``,
augmentation included) yields them, frame decoding included, in one process with one thread
(what one worker does); with ``workers``, also the rate of a DataLoader with that many
workers. Beside it, what the choice of the frame store saves: one frame's JPEG decode, and the
rate of the format-1 path (decode the clip's whole H.264 video, then draw ``pairs_per_clip``
pairs from it). Stage 1: windows per second of the waveform recipe (log-mel overlay) and of
the cached-feature recipe. Without ``corpus`` a fixture corpus of the default portrait is
written to a temporary directory (:func:`fixture_corpus`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import Clip, ClipData, build_manifest, split_clips, write_clip, write_features, write_video
from ..data.video import read_frames
from ..face.model import FaceModel, mean_face_in_crop
from .common import environment, recipe_cli

FEATURES = "whisper-tiny.en-w10"  # the name the stage-1 recipe reads
FEATURE_DIM = 384


def fixture_corpus(root: str | Path, clips: int = 4, frames: int = 150, size: int = 256, seed: int = 0) -> Path:
    """Write ``clips`` training clips of ``frames`` frames: the default portrait shifted a few
    pixels per frame (JPEG cost depends on the content: a real face, not noise), masks, the
    mean face's mesh jittered, noise audio and cached features; all in the train split."""
    import cv2

    from ..face.visualize import default_portrait

    rng = np.random.default_rng(seed)
    face = FaceModel.default()
    portrait = cv2.resize(default_portrait()[:300, 100:400], (size, size), interpolation=cv2.INTER_AREA)
    verts = mean_face_in_crop(face, size)[0].numpy()  # [V, 3]
    lips = face.lip_contour().numpy()
    yy, xx = np.mgrid[:size, :size]
    mask = np.where(((xx - size / 2) / (size * 0.3)) ** 2 + ((yy - size * 0.55) / (size * 0.38)) ** 2 < 1, 2,
                    np.where(yy < size * 0.35, 1, 0)).astype(np.uint8)
    for c in range(clips):
        shifts = rng.integers(-4, 5, size=(frames, 2))
        video = np.stack([np.roll(portrait, tuple(s), axis=(0, 1)) for s in shifts])
        vertices = (verts[None] + rng.normal(0, 0.5, (frames, *verts.shape))).astype(np.float32)
        arrays = {"vertices": vertices, "pose": np.tile([1, 0, 0, 0, 0, 0, 0], (frames, 1)),
                  "beta": rng.random((frames, len(face.expression_names))) * 0.1,
                  "lip_offsets": np.zeros((frames, len(face.lip_indices), 3)), "identity": np.zeros_like(verts),
                  "lip_landmarks": vertices[:, lips, :2], "masks": np.repeat(mask[None], frames, 0)}
        audio = (rng.standard_normal(frames * 640) * 0.05).astype(np.float32)
        meta = {"source": "bench fixture", "identity": f"bench{c}", "face_model_id": face.model_id}
        path = write_clip(root, f"bench-{c:03d}", ClipData(video, audio, arrays, meta))
        write_features(path, FEATURES, rng.standard_normal((frames, FEATURE_DIM)).astype(np.float32))
    build_manifest(root, val_fraction=0.0, test_fraction=0.0)
    return Path(root)


def recipe_datamodule(corpus: str | Path, *recipes: str):
    """The DataModule the Lightning CLI builds from ``recipes`` (base first) over ``corpus``,
    loading in the calling process."""
    return recipe_cli(recipes, "--data.init_args.root", str(corpus), "--data.init_args.num_workers", "0")[1]


def _rate(items, count: int, warmup: int = 4) -> float:
    """Items per second over ``count`` items of an iterator after ``warmup`` untimed ones."""
    iterator = iter(items)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


def _cycle(dataset):
    """Every item of a map-style dataset, in a shuffled order, for ever."""
    rng = np.random.default_rng(0)
    while True:
        for k in rng.permutation(len(dataset)):
            yield dataset[int(k)]


def _stage2(corpus: Path, pairs: int, workers: int) -> dict:
    data = recipe_datamodule(corpus, "mesh2video.yaml")
    dataset = data.train_dataloader().dataset  # augmentation and identity pairs as the recipe
    plain = type(dataset)([c.path for c in dataset.clips], dataset.pairs_per_clip)
    clip = dataset.clips[0]
    start = time.perf_counter()
    for t in range(len(clip)):
        clip.frame(t)
    jpeg_ms = 1000 * (time.perf_counter() - start) / len(clip)
    report = {"stage2_pairs_per_second_per_worker": _rate(_cycle(dataset), pairs),
              "stage2_pairs_per_second_no_augment": _rate(_cycle(plain), pairs),
              "ms_per_frame_decode": jpeg_ms, "pairs_per_clip": dataset.pairs_per_clip,
              **_format1_rate(clip, dataset.pairs_per_clip)}
    if workers:
        loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=workers, persistent_workers=True)
        report[f"stage2_pairs_per_second_{workers}_workers"] = 8 * _rate(_forever(loader), max(1, pairs // 8), 2)
    return report


def _forever(loader):
    while True:
        yield from loader


def _format1_rate(clip: Clip, pairs_per_clip: int) -> dict:
    """The old path: decode the whole H.264 clip to draw ``pairs_per_clip`` pairs from it."""
    jpeg = clip.frames()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "frames.mp4"
        write_video(video, jpeg, fps=25, preset="veryfast")
        start = time.perf_counter()
        frames = read_frames(video)
        seconds = time.perf_counter() - start
    # The old rate falls with the clip's length (an HDTF clip is minutes long): per-frame cost given.
    return {"format1_ms_per_clip_decode": 1000 * seconds, "format1_clip_frames": len(frames),
            "format1_ms_per_frame_decode": 1000 * seconds / len(frames),
            "format1_pairs_per_second": pairs_per_clip / seconds,
            "jpeg_vs_h264_mean_abs_difference": float(np.abs(jpeg.astype(np.float32) - frames).mean())}


def _stage1(corpus: Path, windows: int) -> dict:
    report = {}
    for name, recipes in (("waveform", ("audio2mesh.yaml", "audio2mesh_logmel.yaml")),
                          ("features", ("audio2mesh.yaml",))):
        data = recipe_datamodule(corpus, *recipes)
        dataset = data.dataset("train")
        report[f"stage1_windows_per_second_{name}"] = _rate(_cycle(dataset), windows)
        report["stage1_window_frames"] = dataset.window
    return report


def bench_loader(corpus: str = "", repeats: int = 300, workers: int = 0) -> dict:
    """Stage-2 pairs/s and stage-1 windows/s of one loader worker (``repeats`` items each),
    over ``corpus`` (a prepared corpus directory; default: a fixture corpus)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(corpus) if corpus else fixture_corpus(Path(tmp) / "corpus")
            frames = sum(len(Clip(p)) for p in split_clips(root, "train"))
            report = {"benchmark": "loader", "corpus": corpus or "fixture (default portrait)",
                      "train_frames": frames, **_stage2(root, repeats, workers), **_stage1(root, repeats)}
    finally:
        torch.set_num_threads(threads)
    return {**report, "repeats": repeats, **environment(), "torch_threads": 1}
