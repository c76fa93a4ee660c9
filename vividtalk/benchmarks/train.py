"""``vividtalk bench train``: training throughput of each stage, forward and backward.

Each stage is built from its recipe exactly as ``vividtalk fit`` builds it (the Lightning CLI
over the YAML files: networks, losses, optimisers, the DataModule) and trained for a few steps
by a Lightning Trainer on one device over a fixture corpus (:func:`.loader.fixture_corpus`)
or a given one. The time of a step runs from ``on_train_batch_start`` to
``on_train_batch_end`` (CUDA synchronised), so data loading is not in it (``bench loader``
measures that): stage 2's step is the generator update and, once ``adversarial_start`` is
reached (0 in the full recipe), the discriminator's; stage 1's is the expression network's
update on waveform windows (the log-mel overlay: no cached features needed). Mixed precision
on a GPU, as the recipes train; 32-bit on a CPU.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from .common import environment, peak_rss_mb, recipe_cli, synchronize
from .loader import fixture_corpus

# stage -> (its recipes, base first; what one training item is)
STAGES = {"mesh2video": (("mesh2video.yaml",), "images"),
          "audio2mesh": (("audio2mesh.yaml", "audio2mesh_logmel.yaml"), "windows")}


class StepTimer(pl.Callback):
    """Wall-clock seconds of every training step (batch start to batch end)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._start = device, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._start)


def time_stage(stage: str, corpus: Path, device: torch.device, steps: int, warmup: int, batch_size: int) -> dict:
    """Median step time and items/s of one stage's recipe over ``corpus``."""
    recipes, unit = STAGES[stage]
    overrides = ["--data.init_args.root", str(corpus), "--data.init_args.num_workers", "0"]
    if batch_size:
        overrides += ["--data.init_args.batch_size", str(batch_size)]
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    model, data = recipe_cli(recipes, *overrides, accelerator=accelerator)
    timer = StepTimer(device)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=warmup + steps,
                         precision="16-mixed" if device.type == "cuda" else "32", logger=False,
                         enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=data)
    seconds = statistics.median(timer.seconds[warmup:])
    batch = data.batch_size
    return {f"{stage}_batch_size": batch, f"{stage}_ms_per_step": 1000 * seconds,
            f"{stage}_{unit}_per_second": batch / seconds,
            f"{stage}_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def bench_train(device: str = "cpu", repeats: int = 5, batch_size: int = 0, corpus: str = "") -> dict:
    """Training steps of both stages (``repeats`` timed after 2 warm-up steps each), at the
    recipes' batch sizes unless ``batch_size`` is given, over ``corpus`` (default: a fixture)."""
    dev = torch.device(device)
    report = {"benchmark": "train", "device": str(dev), "corpus": corpus or "fixture (default portrait)"}
    with tempfile.TemporaryDirectory() as tmp:
        # 400 frames a clip: enough 100-frame windows for stage 1's batches of 16.
        root = Path(corpus) if corpus else fixture_corpus(Path(tmp) / "corpus", clips=4, frames=400)
        for stage in STAGES:
            torch.manual_seed(0)
            report.update(time_stage(stage, root, dev, repeats, 2, batch_size))
    return {**report, "repeats": repeats, "peak_rss_mb": peak_rss_mb(), **environment()}
