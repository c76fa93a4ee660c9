"""Stage-2 data (mesh -> video): (source frame, driving frame) pairs from the same clip,
with what the renderer needs (meshes, lip landmarks, masks).

A map-style dataset: item ``k`` is pair ``k % pairs_per_clip`` of clip ``k // pairs_per_clip``,
and reading it touches only its two frames (the clip's frame store and array rows),
so nothing is cached and any item can go to any worker. Under DDP, Lightning's
``DistributedSampler`` shards the items: every rank gets ``ceil(len / world)`` of them, the
last ones padded by repeating items from the start of the (shuffled) order, so every rank runs
the same number of batches whatever the number or the lengths of the clips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import PairAugment
from .clip import Clip
from .manifest import SPLITS, split_clips


class FramePairs(Dataset):
    """``pairs_per_clip`` random (source, driving) frame pairs from each clip.

    Args:
        clips: clip directories.
        pairs_per_clip: pairs drawn from a clip each epoch.
        seed: base seed of the draws.
        fixed_pairs: True (validation and test): pair ``k`` is drawn from ``(seed, k)`` alone,
            the same in every epoch, process and worker, so metrics follow the model, not the
            draw. False (training): drawn from torch's random state (the DataLoader worker's
            seed, or the global generator without workers), so epochs see fresh pairs,
            reproducibly under ``seed_everything``.
        augment: a :class:`~vividtalk.data.augment.PairAugment` applied to every pair (None: none).
        identity_pairs: share of pairs whose driving frame is the source frame itself: they
            teach the renderer that a driving mesh equal to the source's changes nothing.

    Item (dict): ``source`` / ``driving`` float32 [3, S, S] in [0, 1];
    ``source_vertices`` / ``driving_vertices`` [V, 3] crop pixels; ``source_lips`` /
    ``driving_lips`` [N, 2]; ``source_mask`` / ``driving_mask`` int64 [S, S] labels
    (0 background, 1 hair/torso, 2 face); ``clip`` (int), ``source_index``, ``driving_index``.
    """

    def __init__(
        self,
        clips: list[Path],
        pairs_per_clip: int = 8,
        seed: int = 0,
        fixed_pairs: bool = False,
        augment: PairAugment | None = None,
        identity_pairs: float = 0.0,
    ) -> None:
        self.clips = [Clip(p) for p in clips]
        self.lengths = [len(c) for c in self.clips]
        self.pairs_per_clip, self.seed, self.fixed_pairs = pairs_per_clip, seed, fixed_pairs
        self.augment, self.identity_pairs = augment, identity_pairs

    def __len__(self) -> int:
        return len(self.clips) * self.pairs_per_clip

    def rng(self, k: int) -> np.random.Generator:
        """The random source of item ``k`` (see ``fixed_pairs``)."""
        if self.fixed_pairs:
            return np.random.default_rng([self.seed, k])
        return np.random.default_rng([self.seed, k, int(torch.randint(2**62, ()).item())])

    def __getitem__(self, k: int) -> dict:
        if not 0 <= k < len(self):
            raise IndexError(f"item {k} of {len(self)}")
        i, rng = k // self.pairs_per_clip, self.rng(k)
        s, d = (int(f) for f in rng.integers(self.lengths[i], size=2))
        if rng.random() < self.identity_pairs:
            d = s
        clip = self.clips[i]
        item = {**frame_fields("source", clip, s), **frame_fields("driving", clip, d),
                "clip": i, "source_index": s, "driving_index": d}
        return self.augment(item, rng) if self.augment is not None else item


def frame_fields(prefix: str, clip: Clip, f: int) -> dict:
    """The item fields of frame ``f`` of ``clip`` under ``prefix`` (``source`` / ``driving``,
    see FramePairs); reads that frame only."""
    image = torch.from_numpy(clip.frame(f)).permute(2, 0, 1).float() / 255.0
    return {
        prefix: image,
        f"{prefix}_vertices": torch.from_numpy(clip.rows("vertices", f, f + 1)[0].astype(np.float32)),
        f"{prefix}_lips": torch.from_numpy(clip.rows("lip_landmarks", f, f + 1)[0].astype(np.float32)),
        f"{prefix}_mask": torch.from_numpy(clip.mask(f).astype(np.int64)),
    }


def frame_batch(clip: Clip, frames, prefix: str = "driving") -> dict[str, torch.Tensor]:
    """:func:`frame_fields` of ``frames`` of ``clip`` stacked into a batch (each field [B, ...])."""
    items = [frame_fields(prefix, clip, int(f)) for f in frames]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


class FramePairDataModule(pl.LightningDataModule):
    """Stage-2 DataModule over a prepared corpus (``manifest.json`` splits by identity).

    Args:
        root: corpus directory; pairs_per_clip: pairs per clip and epoch;
        batch_size, num_workers: DataLoader settings; seed: pair sampling seed.
        extra_train: further corpora whose clips (all their splits) join the training split,
            e.g. a few prepared real videos beside a synthetic corpus.
        augment, identity_pairs: see :class:`FramePairs`; training split only.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        pairs_per_clip: int = 8,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        extra_train: list[str] | None = None,
        augment: PairAugment | None = None,
        identity_pairs: float = 0.0,
    ) -> None:
        super().__init__()
        self.augment, self.identity_pairs = augment, identity_pairs
        self.root, self.pairs_per_clip, self.seed = Path(root), pairs_per_clip, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.extra_train = [Path(p) for p in extra_train or []]

    def _loader(self, split: str) -> DataLoader:
        clips = split_clips(self.root, split)
        train = split == "train"
        if train:
            clips += [c for extra in self.extra_train for s in SPLITS for c in split_clips(extra, s)]
        dataset = FramePairs(clips, self.pairs_per_clip, self.seed, fixed_pairs=not train,
                             augment=self.augment if train else None,
                             identity_pairs=self.identity_pairs if train else 0.0)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
