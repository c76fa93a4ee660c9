"""What every benchmark shares: the machine facts of a report, the peak memory, and timing
that waits for queued CUDA work."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from typing import Callable

import torch


def environment() -> dict:
    """Machine facts every report carries."""
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1
                   ) -> tuple[float, object]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed
    ones, and its last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def recipe_cli(recipes: tuple[str, ...], *overrides: str, accelerator: str = "cpu"):
    """The (model, datamodule) that ``vividtalk fit --config R1 --config R2 ... OVERRIDES``
    builds from the stage recipes (jsonargparse instantiates nested classes, e.g. the
    augmentation), on one device, nothing run."""
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    from .. import stages

    args = [a for name in recipes for a in ("--config", str(stages.recipe_path(name)))]
    args += ["--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.strategy", "auto",
             "--trainer.logger", "false", *(["--trainer.precision", "32"] if accelerator == "cpu" else []),
             *overrides]
    cli = LightningCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                       subclass_mode_data=True, args=args, run=False, save_config_callback=None)
    return cli.model, cli.datamodule
