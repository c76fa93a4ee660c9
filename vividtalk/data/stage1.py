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

    def _rows(self, clip: Clip, start: int, end: int) -> dict[str, torch.Tensor]:
        """Frames start:end of a clip: the targets and the audio signal, float32 tensors."""
        item = {key: clip.rows(key, start, end) for key in ("beta", "lip_offsets", "pose")}
        item["features" if self.features else "audio"] = self._signal(clip, start, end)
        return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in item.items()}

    def __getitem__(self, k: int) -> dict:
        i, start = self.index[k]
        clip = self.clips[i]
        item = self._rows(clip, start, start + self.window)
        item["identity"] = torch.from_numpy(np.array(clip.rows("identity"), dtype=np.float32))
        return {**item, "clip": i, "start": start}


class PromptedWindows(AudioMeshWindows):
    """Windows, each with a style prompt: ``prompt`` frames of *another* clip of the same
    identity, as the in-context motion model is prompted at inference (another sentence of
    the same person). Windows of identities with no such clip are left out.

    Args:
        clips, window, stride, features: as :class:`AudioMeshWindows`.
        prompt: frames of a prompt.
        random: draw the prompt's clip and start at random (training); otherwise the
            identity's next clip from its first frame (validation: the same every epoch).

    Item: :class:`AudioMeshWindows`' keys, and ``prompt_beta`` [prompt, K],
    ``prompt_lip_offsets`` [prompt, L, 3], ``prompt_pose`` [prompt, 7] and ``prompt_features``
    [prompt, D] (or ``prompt_audio`` [prompt * 640]).

    Raises:
        ValueError: no identity has two clips long enough.
    """

    def __init__(self, clips: list[Path], window: int = 50, stride: int = 25, features: str | None = None,
                 prompt: int = 50, random: bool = True):
        super().__init__(clips, window, stride, features)
        self.prompt, self.random = prompt, random
        people: dict[str, list[int]] = {}
        for i, clip in enumerate(self.clips):
            if len(clip) >= prompt:
                people.setdefault(clip.identity, []).append(i)
        self.partners = {i: [j for j in people.get(c.identity, []) if j != i] for i, c in enumerate(self.clips)}
        self.index = [(i, s) for i, s in self.index if self.partners[i]]
        if not self.index and clips:
            raise ValueError(f"no identity has two clips of at least {prompt} frames: style prompts come from "
                             "another clip of the same person (make the corpus with --clips-per-identity 2 or more)")

    def __getitem__(self, k: int) -> dict:
        item = super().__getitem__(k)
        partners = self.partners[item["clip"]]
        if self.random:
            j = partners[int(torch.randint(len(partners), ()))]
            start = int(torch.randint(len(self.clips[j]) - self.prompt + 1, ()))
        else:
            j = next((p for p in partners if p > item["clip"]), partners[0])
            start = 0
        prompt = self._rows(self.clips[j], start, start + self.prompt)
        return {**item, **{f"prompt_{key}": v for key, v in prompt.items()}}


class AudioMeshDataModule(pl.LightningDataModule):
    """Stage-1 DataModule over a prepared corpus (``manifest.json`` splits by identity).

    Args:
        root: corpus directory.
        window: frames per training window; stride: frames between windows.
        features: cached feature name, or None for waveforms.
        batch_size, num_workers: DataLoader settings.
        prompt: frames of a style prompt from another clip of the same identity with every
            window (:class:`PromptedWindows`; 0: none).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        window: int = 50,
        stride: int = 25,
        features: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        prompt: int = 0,
    ) -> None:
        super().__init__()
        self.root, self.window, self.stride, self.features = Path(root), window, stride, features
        self.prompt = prompt
        self.batch_size, self.num_workers = batch_size, num_workers
        self.datasets: dict[str, AudioMeshWindows] = {}

    def dataset(self, split: str) -> AudioMeshWindows:
        if split not in self.datasets:
            stride = self.stride if split == "train" else self.window
            clips = split_clips(self.root, split)
            self.datasets[split] = (
                PromptedWindows(clips, self.window, stride, self.features, self.prompt, random=split == "train")
                if self.prompt else AudioMeshWindows(clips, self.window, stride, self.features))
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
