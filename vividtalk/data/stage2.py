"""Stage-2 data (mesh -> video): (source frame, driving frame) pairs from the same clip,
with what the renderer needs (meshes, lip landmarks, masks).

Decoding a clip's video is the expensive step, so the dataset is iterable: each DDP rank
and each DataLoader worker takes its own shard of the clips, decodes one clip at a time and
yields ``pairs_per_clip`` random pairs from it, mixed through a small shuffle buffer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .augment import PairAugment
from .clip import Clip
from .manifest import SPLITS, split_clips


def shard_of(num_items: int, rank: int, world: int, worker: int, workers: int) -> list[int]:
    """Item indices of one (rank, worker): round-robin over ranks, then over workers."""
    return list(range(num_items))[rank::world][worker::workers]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class FramePairs(IterableDataset):
    """Random (source, driving) frame pairs from each clip.

    Args:
        clips: clip directories.
        pairs_per_clip: pairs drawn from a clip each epoch.
        seed: base seed. Each pass draws fresh pairs from torch's random state (the
            DataLoader worker seed, or the global generator without workers), so passes
            differ from epoch to epoch and are reproducible under ``seed_everything``.
        shuffle_buffer: pairs held back and released in random order (mixes clips).
        rank, world: DDP shard (default: from torch.distributed, else 0 of 1).
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
        shuffle_buffer: int = 32,
        rank: int | None = None,
        world: int | None = None,
        augment: PairAugment | None = None,
        identity_pairs: float = 0.0,
    ) -> None:
        self.clips = [Path(p) for p in clips]
        self.augment, self.identity_pairs = augment, identity_pairs
        self.pairs_per_clip, self.seed, self.shuffle_buffer = pairs_per_clip, seed, shuffle_buffer
        self.rank, self.world = rank, world

    def my_clips(self) -> list[int]:
        """Indices of the clips this rank and worker read."""
        rank, world = (self.rank, self.world) if self.rank is not None else _rank_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return shard_of(len(self.clips), rank, world, worker, workers)

    def __len__(self) -> int:
        """Pairs per rank (an estimate when clips do not divide evenly)."""
        _, world = (self.rank, self.world) if self.rank is not None else _rank_world()
        return -(-len(self.clips) // world) * self.pairs_per_clip

    def __iter__(self):
        mine = self.my_clips()
        info = get_worker_info()
        draw = info.seed if info else int(torch.randint(2**62, ()).item())
        rng = np.random.default_rng([self.seed, draw % 2**63, *mine[:1]])
        rng.shuffle(mine)
        buffer = []
        for i in mine:
            for item in self._pairs(i, rng):
                buffer.append(item)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(int(rng.integers(len(buffer))))
        rng.shuffle(buffer)
        yield from buffer

    def _pairs(self, i: int, rng: np.random.Generator):
        clip = Clip(self.clips[i])
        frames, arrays = clip.frames(), clip.arrays()
        for _ in range(self.pairs_per_clip):
            s, d = (int(k) for k in rng.integers(len(frames), size=2))
            if rng.random() < self.identity_pairs:
                d = s
            item = {
                **frame_fields("source", s, frames, arrays),
                **frame_fields("driving", d, frames, arrays),
                "clip": i,
                "source_index": s,
                "driving_index": d,
            }
            yield self.augment(item, rng) if self.augment is not None else item


def frame_fields(prefix: str, f: int, frames: np.ndarray, arrays: dict) -> dict:
    """The item fields of frame ``f`` under ``prefix`` (``source`` / ``driving``, see FramePairs)."""
    image = torch.from_numpy(np.ascontiguousarray(frames[f])).permute(2, 0, 1).float() / 255.0
    return {
        prefix: image,
        f"{prefix}_vertices": torch.from_numpy(arrays["vertices"][f].astype(np.float32)),
        f"{prefix}_lips": torch.from_numpy(arrays["lip_landmarks"][f].astype(np.float32)),
        f"{prefix}_mask": torch.from_numpy(arrays["masks"][f].astype(np.int64)),
    }


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

    def _loader(self, split: str, shuffle_buffer: int) -> DataLoader:
        clips = split_clips(self.root, split)
        if split == "train":
            clips += [c for extra in self.extra_train for s in SPLITS for c in split_clips(extra, s)]
        train = split == "train"
        dataset = FramePairs(clips, self.pairs_per_clip, self.seed, shuffle_buffer,
                             augment=self.augment if train else None,
                             identity_pairs=self.identity_pairs if train else 0.0)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle_buffer=32)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle_buffer=1)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle_buffer=1)
