"""Stage 2 through the Lightning CLI and its recipes: fit with both optimisers, resume,
validation metrics against the source-frame baseline, image grids, the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vividtalk.cli import cli_main, main

STAGES = Path(__file__).resolve().parents[1] / "stages"


def recipe(tmp_path: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        "--config", str(STAGES / "mesh2video.yaml"), "--config", str(STAGES / "cpu" / "mesh2video.yaml"),
        "--data.root", str(corpus), "--data.init_args.batch_size", "2", "--data.init_args.pairs_per_clip", "2",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "1", "--model.init_args.adversarial_start", "1",
        "--model.init_args.image_every", "1", "--model.init_args.rasterizer", "torch", *extra,
    ]


def test_mesh2video_fit_resume_validate(tiny_synth_corpus, tmp_path, tiny_pipeline_dir):
    cli = cli_main(["fit", *recipe(tmp_path, tiny_synth_corpus, "--trainer.max_steps", "5")])
    # Step 1: generator only (one optimiser step); then generator + discriminator (two per step).
    assert cli.trainer.global_step == 5
    metrics = cli.trainer.callback_metrics
    for key in ("train/perceptual", "train/discriminator", "train/feature_matching", "val/psnr", "val/ssim",
                "val/psnr_source_baseline", "val/ssim_source_baseline", "val/psnr_mouth_without_lip_branch"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    grids = list(Path(cli.trainer.logger.log_dir, "images").glob("*.png"))
    assert grids
    import cv2

    assert cv2.imread(str(grids[0])).shape == (256, 6 * 256, 3)  # six panels
    last = str(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert len(state["optimizer_states"]) == 2  # generator side and discriminator both saved
    resumed = cli_main(["fit", *recipe(tmp_path, tiny_synth_corpus, "--trainer.max_steps", "7"), "--ckpt_path", last])
    assert resumed.trainer.global_step == 7
    # A new stage 2 on top of a saved pipeline: save-pipeline --base keeps the other stages.
    from vividtalk.pipeline import VividTalkPipeline

    out = tmp_path / "pipeline"
    assert main(["save-pipeline", "--base", str(tiny_pipeline_dir), "--mesh2video", last, "--output", str(out)]) == 0
    pipe, base = VividTalkPipeline.from_pretrained(out), VividTalkPipeline.from_pretrained(tiny_pipeline_dir)
    trained = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in pipe.mesh2video.state_dict().items():
        torch.testing.assert_close(value, trained[key])
    for key, value in pipe.audio2mesh.state_dict().items():
        torch.testing.assert_close(value, base.audio2mesh.state_dict()[key])
    assert pipe.mesh2video.motion_vae.uses_mesh_flow
    assert main(["save-pipeline", "--mesh2video", last, "--output", str(out)]) == 2  # the other stages missing


def test_bench_mesh2video_reports_stages_and_flops(capsys):
    assert main(["bench", "mesh2video", "--json", "--repeats", "1", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "mesh2video" and report["batch_size"] == 2
    parts = sum(report[f"ms_per_frame_{k}"] for k in ("conditioning", "motion_vae", "generator"))
    assert 0 < parts <= report["ms_per_frame"] * 1.5
    assert 0.5 < report["gflops_per_frame"] < 10 and report["parameters"] > 1e5
    assert 0 < report["gflops_prepare_source"] < report["gflops_per_frame"] and report["ms_prepare_source"] > 0


def test_bench_mesh_flow_pairs_the_two_variants(capsys):
    assert main(["bench", "mesh_flow", "--json", "--repeats", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "mesh_flow" and report["repeats"] == 3
    assert report["ms_per_frame_mesh_flow"] > 0 and report["ms_per_frame_paper_literal"] > 0
    assert abs(report["ms_added_by_mesh_flow"]) < report["ms_per_frame_mesh_flow"]
