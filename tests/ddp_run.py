"""A DDP training run of a recording stand-in model over a real corpus and DataModule, as its
own program (Lightning's ``ddp`` strategy launches the other ranks by running this file again,
and a multi-node run is this file started once per node). Each rank writes
``OUT/rank{R}.json``: per epoch, the training samples it saw, its batch count and the
validation metric.

    python tests/ddp_run.py --stage 2 --corpus C --out O [--devices 2] [--num-nodes 1] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from vividtalk.data.stage1 import AudioMeshDataModule
from vividtalk.data.stage2 import FramePairDataModule


class Recorder(pl.LightningModule):
    """Trains nothing (lr 0) but all-reduces gradients every step like a real model, so a rank
    with more batches than the others would wait for ever; logs a validation metric that
    depends only on the data."""

    def __init__(self, out: str, stage: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.out, self.stage = Path(out), stage
        self.epochs: list[dict] = []

    def _ids(self, batch) -> list[list[int]]:
        second = batch["start"] if self.stage == 1 else batch["source_index"] * 10_000 + batch["driving_index"]
        return torch.stack([batch["clip"], second], 1).tolist()

    def on_train_epoch_start(self) -> None:
        self.epochs.append({"samples": [], "batches": 0})

    def training_step(self, batch, batch_idx):
        self.epochs[-1]["samples"] += self._ids(batch)
        self.epochs[-1]["batches"] += 1
        return self.layer(torch.ones(1, 1)).sum() * 0.0

    def validation_step(self, batch, batch_idx):
        signal = batch["audio"] if self.stage == 1 else batch["driving"] - batch["source"]
        self.log("val/signal", signal.abs().mean(), sync_dist=True, batch_size=len(signal))

    def on_validation_epoch_end(self) -> None:
        if self.epochs and not self.trainer.sanity_checking:
            self.epochs[-1]["val"] = float(self.trainer.callback_metrics["val/signal"])

    def on_train_end(self) -> None:
        record = {"rank": self.global_rank, "world": self.trainer.world_size, "epochs": self.epochs}
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(record))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.stage == 1:
        data = AudioMeshDataModule(args.corpus, window=20, stride=10, batch_size=3, num_workers=args.workers)
    else:
        data = FramePairDataModule(args.corpus, pairs_per_clip=3, batch_size=2, num_workers=args.workers)
    pl.seed_everything(0, workers=True)
    trainer = pl.Trainer(accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy="ddp",
                         max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Recorder(args.out, args.stage), datamodule=data)


if __name__ == "__main__":
    main()
