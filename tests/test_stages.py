"""The stage recipes as package data, their overlay merge, and the benchmarks' networks built
from them: the same architectures as the Lightning CLI builds from the same files."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

from vividtalk import stages
from vividtalk.benchmarks.audio2mesh import recipe_networks
from vividtalk.benchmarks.mesh2video import recipe_module


def test_merge_overlays_values_and_replaces_a_changed_class():
    base = {"net": {"class_path": "a.A", "init_args": {"x": 1, "y": 2}}, "lr": 1.0}
    assert stages.merge(base, {"net": {"init_args": {"y": 3}}}) == {
        "net": {"class_path": "a.A", "init_args": {"x": 1, "y": 3}}, "lr": 1.0}
    swapped = stages.merge(base, {"net": {"class_path": "b.B", "init_args": {"z": 0}}})
    assert swapped["net"] == {"class_path": "b.B", "init_args": {"z": 0}}  # A's x, y do not reach B
    assert base["net"]["init_args"] == {"x": 1, "y": 2}  # inputs untouched


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="cpu/audio2mesh.yaml"):
        stages.recipe_path("audio2mesh_tiny.yaml")


def shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def cli_model(*files: str) -> pl.LightningModule:
    """The model the Lightning CLI instantiates from these recipes (the reference merge)."""
    args = [a for f in files for a in ("--config", str(stages.recipe_path(f)))]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
             "--trainer.logger", "false", "--data.init_args.root", "unused"]
    return LightningCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=args, run=False).model


@pytest.mark.parametrize("size,files", [("default", ("mesh2video.yaml",)),
                                        ("large", ("mesh2video.yaml", "mesh2video_large.yaml"))])
def test_stage2_benchmark_builds_the_recipe(size, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference, built = cli_model(*files), recipe_module(size)
    for net in ("motion_vae", "generator"):
        assert shapes(getattr(built, net)) == shapes(getattr(reference, net)), (size, net)


def test_stage1_benchmark_builds_the_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = recipe_networks("demo", "logmel")
    expression = cli_model("audio2mesh.yaml", "audio2mesh_logmel.yaml", "cpu/audio2mesh.yaml",
                           "cpu/audio2mesh_logmel.yaml")
    pose = cli_model("pose_mapper.yaml", "cpu/pose_mapper.yaml")
    pairs = {"network": expression.network, "style_encoder": expression.style_encoder,
             "audio_encoder": expression.audio_encoder, "mapper": pose.mapper, "vqvae": pose.vqvae,
             "pose_encoder": pose.audio_encoder}
    for name, reference in pairs.items():
        assert shapes(built[name]) == shapes(reference), name
    paper = recipe_networks("paper", "logmel")
    assert sum(p.numel() for p in paper["network"].parameters()) > 2 * sum(
        p.numel() for p in built["network"].parameters())  # the overlay really shrinks the demo size
