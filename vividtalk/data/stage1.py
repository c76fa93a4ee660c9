"""Stage-1 data (audio -> mesh): windows of audio aligned with per-frame mesh targets.

Each item is ``window`` consecutive frames of one clip: the waveform of exactly those frames
(640 samples a frame at 16 kHz / 25 fps) or cached audio features, and the targets: beta,
lip offsets, pose, and the clip's identity shape. A map-style dataset, so Lightning's
distributed sampler gives every DDP rank its own shard of the same size (padded by repeating
windows). An item reads only its window (a sample range of the wav, rows of the arrays): nothing is cached, so a worker's memory does not grow with the corpus.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..audio.align import SAMPLES_PER_FRAME
from .clip import Clip
from .manifest import split_clips


class AudioMeshWindows(Dataset):
    """Windows of ``window`` frames every ``stride`` frames over clips with audio.

    Args:
        clips: clip directories (clips without audio are skipped).
        window: frames per item; clips shorter than this give no item.
        stride: frames between window starts.
        features: None for waveforms, or the name of cached features (``Clip.features``).

    Item (dict of tensors): ``audio`` float32 [window * 640] or ``features`` [window, D];
    ``beta`` [window, K]; ``lip_offsets`` [window, L, 3]; ``pose`` [window, 7];
    ``identity`` [V, 3]; ``clip`` (int index into ``self.clips``); ``start`` (int frame).
    """

    def __init__(self, clips: list[Path], window: int = 50, stride: int = 25, features: str | None = None):
        self.clips = [Clip(p) for p in clips]
        self.clips = [c for c in self.clips if c.has_audio]
        self.window, self.features = window, features
        self.index = [
            (i, s) for i, c in enumerate(self.clips) for s in range(0, len(c) - window + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def _signal(self, clip: Clip, start: int, end: int) -> np.ndarray:
        """Features [end - start, D], or the waveform of frames start:end, zero-padded where
        the audio ends before the last frame does."""
        if self.features:
            return clip.features(self.features, start, end)
        wav = clip.audio(start * SAMPLES_PER_FRAME, end * SAMPLES_PER_FRAME)
        return np.pad(wav, (0, (end - start) * SAMPLES_PER_FRAME - len(wav)))

    def __getitem__(self, k: int) -> dict:
        i, start = self.index[k]
        clip, end = self.clips[i], start + self.window
        item = {key: clip.rows(key, start, end) for key in ("beta", "lip_offsets", "pose")}
        item["identity"] = clip.rows("identity")
        item["features" if self.features else "audio"] = self._signal(clip, start, end)
        item = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in item.items()}
        return {**item, "clip": i, "start": start}


class AudioMeshDataModule(pl.LightningDataModule):
    """Stage-1 DataModule over a prepared corpus (``manifest.json`` splits by identity).

    Args:
        root: corpus directory.
        window: frames per training window; stride: frames between windows.
        features: cached feature name, or None for waveforms.
        batch_size, num_workers: DataLoader settings.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        window: int = 50,
        stride: int = 25,
        features: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.root, self.window, self.stride, self.features = Path(root), window, stride, features
        self.batch_size, self.num_workers = batch_size, num_workers
        self.datasets: dict[str, AudioMeshWindows] = {}

    def dataset(self, split: str) -> AudioMeshWindows:
        if split not in self.datasets:
            stride = self.stride if split == "train" else self.window
            self.datasets[split] = AudioMeshWindows(
                split_clips(self.root, split), self.window, stride, self.features
            )
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order (``vividtalk predict``)."""
        return self._loader("test", shuffle=False)
