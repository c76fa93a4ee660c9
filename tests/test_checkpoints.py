"""Checkpoints: step checkpoints in every recipe and resuming from the middle of an epoch,
command-line overrides that win over a checkpoint's stored hyperparameters, and loaders that
refuse a checkpoint that would run code when unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml

from vividtalk.audio2mesh.pose_modules import PoseMapperModule, PoseVQVAEModule
from vividtalk.cli import cli_main

STAGES = Path(__file__).resolve().parents[1] / "stages"
RECIPES = sorted(STAGES.glob("*.yaml")) + sorted((STAGES / "cpu").glob("*.yaml"))


def test_every_recipe_writes_step_checkpoints():
    """A full recipe (one naming its model's class) keeps a step checkpoint beside last.ckpt;
    an overlay leaves the callbacks alone (a list in an overlay would replace the recipe's)."""
    full = 0
    for path in RECIPES:
        recipe = yaml.safe_load(path.read_text())
        trainer = recipe.get("trainer", {})
        if "class_path" not in recipe.get("model", {}):
            assert "callbacks" not in trainer, f"{path.name}: an overlay replaces the recipe's callbacks"
            continue
        full += 1
        steps = [c["init_args"] for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")
                 and c["init_args"].get("every_n_train_steps")]
        assert len(steps) == 1 and steps[0]["every_n_train_steps"] > 0, path.name
    assert full == 6  # audio2mesh, mesh2video, pose_mapper, pose_vqvae, in_context, sync_expert


def vqvae_args(tmp_path: Path, corpus: Path, *extra: str) -> list[str]:
    """``fit`` of the pose VQ-VAE (the fastest recipe) on the tiny corpus with its CPU overlay and
    a third file: the recipe's own callbacks with a step checkpoint every 2 steps."""
    callbacks = yaml.safe_load((STAGES / "pose_vqvae.yaml").read_text())["trainer"]["callbacks"]
    for spec in callbacks:
        if "every_n_train_steps" in spec["init_args"]:
            spec["init_args"]["every_n_train_steps"] = 2
    every_2 = tmp_path / "every_2_steps.yaml"
    every_2.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return [
        "fit", "--config", str(STAGES / "pose_vqvae.yaml"), "--config", str(STAGES / "cpu" / "pose_vqvae.yaml"),
        "--config", str(every_2), "--data.root", str(corpus), "--data.init_args.window", "32",
        "--data.init_args.batch_size", "2", "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false", *extra,
    ]


def test_max_steps_mid_epoch_resumes_with_the_command_line_winning(tiny_synth_corpus, tmp_path, monkeypatch):
    steps: list[int] = []
    training_step = PoseVQVAEModule.training_step

    def recorded(self, batch, batch_idx):
        steps.append(self.global_step)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(PoseVQVAEModule, "training_step", recorded)
    cli = cli_main(vqvae_args(tmp_path, tiny_synth_corpus, "--trainer.max_steps", "3",
                              "--model.init_args.normalization_batches", "2"))
    assert cli.trainer.global_step == 3 and cli.trainer.num_training_batches > 3  # stopped mid-epoch
    assert cli.config.fit.weights_only is True  # the trainer reads --ckpt_path as tensors only too
    folder = Path(cli.trainer.checkpoint_callback.dirpath)
    step2 = folder / "step=0000002.ckpt"
    assert sorted(p.name for p in folder.glob("step*.ckpt")) == [step2.name]  # the latest kept
    saved = torch.load(step2, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 and saved["epoch"] == 0
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 3

    # Resume from the step checkpoint with a changed model argument: the run continues at step
    # 2 and the command line wins over the hyperparameters stored in the checkpoint.
    steps.clear()
    resumed = cli_main(vqvae_args(tmp_path, tiny_synth_corpus, "--trainer.max_steps", "4",
                                  "--model.init_args.normalization_batches", "5",
                                  "--model.init_args.optimizer.init_args.lr", "0.5", "--ckpt_path", str(step2)))
    assert steps == [2, 3] and resumed.trainer.global_step == 4
    assert resumed.model.normalization_batches == 5 and resumed.model.hparams.normalization_batches == 5
    # The optimiser's state, its learning rate included, is restored as saved (stages/README.md).
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)

    # What the arguments leave unset still comes from the checkpoint (the recipes do not set it).
    steps.clear()
    again = cli_main(vqvae_args(tmp_path, tiny_synth_corpus, "--trainer.max_steps", "3", "--ckpt_path", str(step2)))
    assert steps == [2] and again.model.normalization_batches == 2


class _WritesMarker:
    """Unpickled, it creates the file ``marker``: a stand-in for a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture()
def booby_trapped(tmp_path, tiny_stages) -> tuple[Path, Path]:
    """(a Lightning-style checkpoint whose hyperparameters run code when unpickled, the marker
    file that code would create), in a run folder with the config.yaml of a tiny pose mapper."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": tiny_stages["pose_mapper"]}))
    marker = tmp_path / "code_ran"
    path = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"x": _WritesMarker(marker)}}, path)
    return path, marker


def test_the_booby_trapped_checkpoint_runs_code_when_fully_unpickled(booby_trapped):
    """The control: what the loaders below refuse really runs code with weights_only=False."""
    path, marker = booby_trapped
    torch.load(path, weights_only=False)
    assert marker.exists()


def _load(loader: str, path: Path, tiny_stages: dict) -> None:
    """Give ``path`` to one of the loaders of user-supplied checkpoints and weights files."""
    from vividtalk.eval.arcface import ArcFaceIdentity
    from vividtalk.eval.syncnet import SyncNet
    from vividtalk.mesh2video.vgg import VGG19Features
    from vividtalk.pretrained import build_stage, stage_from_checkpoint
    from vividtalk.stages.lightning_cli import checkpoint_model_spec

    if loader == "stage_from_checkpoint":  # save-pipeline, VividTalkPipeline.from_checkpoints
        stage_from_checkpoint(path, "pose_mapper")
    elif loader == "vqvae_checkpoint":  # the pose mapper's frozen VQ-VAE
        built = build_stage(tiny_stages["pose_mapper"])
        PoseMapperModule(built.mapper, built.style_encoder, built.vqvae, vqvae_checkpoint=str(path))
    elif loader == "vgg_weights":
        VGG19Features(path)
    elif loader == "syncnet":
        SyncNet.from_file(path)
    elif loader == "arcface":
        ArcFaceIdentity(path, depth="r18")
    elif loader == "ckpt_path hyperparameters":
        checkpoint_model_spec(path)
    elif loader == "vividtalk fit --ckpt_path":
        cli_main(["fit", "--config", str(STAGES / "pose_vqvae.yaml"), "--data.root", "unused",
                  "--trainer.logger", "false", "--ckpt_path", str(path)])
    else:
        raise AssertionError(loader)


@pytest.mark.parametrize("loader", ["stage_from_checkpoint", "vqvae_checkpoint", "vgg_weights", "syncnet", "arcface",
                                    "ckpt_path hyperparameters", "vividtalk fit --ckpt_path"])
def test_loaders_refuse_a_checkpoint_that_runs_code(booby_trapped, tiny_stages, loader):
    path, marker = booby_trapped
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _load(loader, path, tiny_stages)
    assert not marker.exists()
