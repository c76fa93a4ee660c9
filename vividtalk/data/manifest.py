"""Corpus manifests: which clips exist and their train/val/test split, by identity.

``manifest.json`` at the corpus root::

    {"format_version": 1, "seed": 0, "splits": {"train": [...], "val": [...], "test": [...]},
     "clips": {"<clip_id>": {"identity": ..., "split": ..., "num_frames": ..., "has_audio": ...}}}

Splits are assigned per identity (never per clip), so no identity is in two splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .clip import ClipError, list_clips, read_meta

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


def assign_splits(identities: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """identity -> split. Identities are ordered by a seeded hash; the first go to test, the
    next to val (each at least one when there are three or more identities), the rest train."""
    unique = sorted(set(identities), key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())
    n = len(unique)
    n_test = max(1, round(test_fraction * n)) if n >= 3 and test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if n >= 3 and val_fraction > 0 else 0
    split = {}
    for k, identity in enumerate(unique):
        split[identity] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


def build_manifest(
    root: str | os.PathLike, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict:
    """Scan the corpus, assign splits by identity and write ``manifest.json`` atomically."""
    root = Path(root)
    metas = [read_meta(p) for p in list_clips(root)]
    split = assign_splits([str(m["identity"]) for m in metas], val_fraction, test_fraction, seed)
    clips = {
        m["clip_id"]: {
            "identity": str(m["identity"]),
            "split": split[str(m["identity"])],
            "num_frames": m["num_frames"],
            "has_audio": m["has_audio"],
        }
        for m in metas
    }
    manifest = {
        "format_version": 1,
        "seed": seed,
        "splits": {s: sorted(c for c, v in clips.items() if v["split"] == s) for s in SPLITS},
        "clips": clips,
    }
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ClipError(f"no {MANIFEST} in {root}: run the preparation (it writes one) or build_manifest()")
    return json.loads(path.read_text())


def split_clips(root: str | os.PathLike, split: str) -> list[Path]:
    """Clip directories of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    return [Path(root) / c for c in read_manifest(root)["splits"][split]]
