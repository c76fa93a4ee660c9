"""The ``vividtalk`` console script.

Commands:
  generate        audio + one face image -> a talking-head mp4 (``vividtalk generate --help``)
  reenact         drive a photo (default: the video's first frame) by the face tracked in a video
  personalize     adapt stage 2 to a person from a video of them -> a small directory
                  (``generate --personalization DIR`` applies it)
  fit / validate / test / predict   train and evaluate a stage with the Lightning CLI
                  (``vividtalk fit --config stages/audio2mesh.yaml --data.root CORPUS``)
  eval VIDEO...   score videos (lip sync, identity, image quality, head motion) -> JSON report
  eval-stage2     stage 2 on held-out photos and clips (identity test, expression transfer, reenactment)
  eval-speech     stage 1 on recorded speech with transcripts (closures, vowels, mouth/energy)
  bench [NAME]    benchmarks (``render``, ``audio2mesh``, ``mesh2video``, ``mesh_flow``, ``generate``, ``loader``, ``train``, ``stream``; none: all
                  in one report); ``--json`` prints one machine-readable object
  save-pipeline   three trained stage checkpoints -> one pipeline directory (for generate --weights)
  fit-face        track and fit the face model on an image and save a visual check
  serve           the generator as a local web service: jobs, videos, live WebSocket streaming
                  (FastAPI + uvicorn; 127.0.0.1:7860 by default, ``--token`` to require one)
  demo            ``serve`` and open its demo page in the browser (``--no-browser``: don't)

Data preparation is a separate script: ``vividtalk-prep`` (``python -m data_prep``).
"""

from __future__ import annotations

import argparse
import sys

from .command import run_command


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks import run_benchmark

    kwargs = {"device": args.device}
    for key in ("repeats", "batch_size", "size", "seconds", "weights", "encoder", "corpus", "workers", "motion_model"):
        if getattr(args, key):
            kwargs[key] = getattr(args, key)
    if args.no_mesh_flow:
        kwargs["mesh_flow"] = False
    print(run_benchmark(args.name, as_json=args.json, **kwargs))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import time

    from .pipeline import generate

    options = dict(pose="video" if args.pose_video else args.pose, reference_video=args.pose_video,
                   expression_scale=args.expression_scale, blink=not args.no_blink, seed=args.seed,
                   output_size=args.size, batch_size=args.batch_size, temperature=args.temperature,
                   motion_model=args.motion_model or ("in_context" if args.style_video else None),
                   style_video=args.style_video, cfg_scale=args.cfg_scale, steps=args.steps)
    start = time.perf_counter()
    path = generate(args.audio, args.image, output=args.output, weights=args.weights, device=args.device,
                    personalization=args.personalization, progress=not args.quiet, **options)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


def _add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="audio + one face image -> a talking-head video (mp4 with the audio)")
    gen.add_argument("--audio", help="speech: any audio or video file (default: the packaged demo sentence)")
    gen.add_argument("--image", help="a photo with a face (default: scikit-image's astronaut portrait)")
    gen.add_argument("--output", required=True, help="output .mp4 (its directory must exist)")
    gen.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    gen.add_argument("--pose", choices=["audio", "still"], default="audio",
                     help="head motion generated from the audio (default) or a still head")
    gen.add_argument("--pose-video", help="copy the head motion of this video instead")
    gen.add_argument("--expression-scale", type=float, default=1.0, help="scale of the expressions (default 1)")
    gen.add_argument("--no-blink", action="store_true", help="no blinking")
    gen.add_argument("--seed", type=int, default=0, help="seed of head motion and blinks (default 0)")
    gen.add_argument("--temperature", type=float, help="sampling temperature of the head-pose codebook, or of the "
                                                       "in-context model's noise (default: trained)")
    gen.add_argument("--motion-model", choices=["vividtalk", "in_context"],
                     help="VividTalk's stage 1 or MimicTalk's in-context model (default: the pipeline's; "
                          "in_context when --style-video is given)")
    gen.add_argument("--style-video", help="in-context model: a clip of a person speaking (with sound) whose style "
                                           "to imitate (its first 10 s)")
    gen.add_argument("--cfg-scale", type=float, help="in-context model: guidance weight on the style (default: trained)")
    gen.add_argument("--steps", type=int, help="in-context model: ODE steps (default: trained)")
    gen.add_argument("--personalization", help="a directory written by `vividtalk personalize`: stage 2 adapted to "
                                               "that person (default image: the person's first frame)")
    _add_render_options(gen)
    gen.set_defaults(func=_generate)


def _add_render_options(parser) -> None:
    """Options that generate and reenact share: output size, device, batch size, progress."""
    parser.add_argument("--size", choices=["crop", "full"], default="crop",
                        help="256x256 face crop (default) or the crop pasted back into the full image")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames rendered at a time (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _reenact(args: argparse.Namespace) -> int:
    import time

    from .pipeline import VividTalkPipeline

    start = time.perf_counter()
    pipe = VividTalkPipeline.from_pretrained(args.weights, device=args.device)
    path = pipe.reenact(args.video, args.image, output=args.output, batch_size=args.batch_size,
                        progress=not args.quiet, output_size=args.size, expression_scale=args.expression_scale)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


def _add_reenact(sub) -> None:
    re = sub.add_parser("reenact", help="drive a photo by the face in a video (default: the video's first frame)")
    re.add_argument("--video", required=True, help="the driving video (its audio, if any, is muxed in)")
    re.add_argument("--image", help="the photo to drive (default: the video's first frame: self-reenactment)")
    re.add_argument("--output", required=True, help="output .mp4 (its directory must exist)")
    re.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    re.add_argument("--expression-scale", type=float, default=1.0, help="scale of the expression changes (default 1)")
    _add_render_options(re)
    re.set_defaults(func=_reenact)


def _personalize(args: argparse.Namespace) -> int:
    from .pipeline import VividTalkPipeline

    pipe = VividTalkPipeline.from_pretrained(args.weights, device=args.device)
    report = pipe.personalize(args.video, args.output, steps=args.steps, rank=args.rank, batch_size=args.batch_size,
                              max_seconds=args.max_seconds, vgg_weights=args.vgg_weights,
                              identity=not args.no_identity, keep_work=args.keep_work,
                              base_name=args.weights or "demo", progress=not args.quiet)
    print(f"held-out frames of {args.video} ({report['frames']['scored']} scored), source: its first frame")
    for key in ("psnr", "ssim", "psnr_mouth", "cpbd", "identity_distance"):
        if key in report["before"]:
            print(f"  {key:18s} before {report['before'][key]:8.4f}   after {report['after'][key]:8.4f}")
    print(f"adapted in {report['seconds']['adapt']:.1f} s ({report['seconds']['adapt_cpu']:.1f} s of CPU time, "
          f"{report['steps_run']} steps); wrote {args.output}")
    return 0


def _add_personalize(sub) -> None:
    pz = sub.add_parser("personalize", help="adapt stage 2 to the person of a video (LoRA + inverted appearance)")
    pz.add_argument("--video", required=True, help="10 s to a few minutes of the person (the last 10 %% are held out)")
    pz.add_argument("--output", required=True, help="the personalisation directory to write")
    pz.add_argument("--weights", help="the base pipeline directory (default: the packaged demo weights)")
    pz.add_argument("--steps", type=int,
                    help="optimiser steps (default 300: about 2 min on 2 CPU cores, under 4 min of CPU time)")
    pz.add_argument("--rank", type=int, help="LoRA rank (default 4)")
    pz.add_argument("--batch-size", type=int, help="frames per step (default 4)")
    pz.add_argument("--max-seconds", type=float, default=300.0,
                    help="use at most this much of the video (default 300)")
    pz.add_argument("--vgg-weights", help="VGG-19 weights for the perceptual loss (default: the L1-pyramid fallback)")
    pz.add_argument("--no-identity", action="store_true", help="do not score dlib's identity distance")
    pz.add_argument("--keep-work", action="store_true", help="keep the prepared clip and the checkpoint (OUTPUT/.work)")
    pz.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    pz.add_argument("--quiet", action="store_true", help="no progress bars")
    pz.set_defaults(func=_personalize)


def _report_path(output: str):
    """The path of a JSON report; its directory must exist (checked before any work)."""
    from pathlib import Path

    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {output.parent}")
    return output


def _write_report(output, report: dict) -> None:
    """Write a JSON report atomically (never a partial file)."""
    import json
    import os

    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, output)


def _eval_stage2(args: argparse.Namespace) -> int:
    import json

    from .face.image import image_files
    from .renderer_eval import evaluate_stage2

    output = _report_path(args.output)
    if args.checkpoint:
        from .pretrained import stage_from_checkpoint

        module = stage_from_checkpoint(args.checkpoint, "mesh2video")[0]
    else:
        from .pipeline import VividTalkPipeline

        module = VividTalkPipeline.from_pretrained(args.weights).mesh2video
    report = evaluate_stage2(module.to(args.device), image_files(args.photos), args.driving, args.reenact or [],
                             frames=args.frames, strips=args.strips, progress=not args.quiet)
    _write_report(output, report)
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {output}")
    return 0


def _add_eval_stage2(sub) -> None:
    ev = sub.add_parser("eval-stage2", help="stage 2 on held-out photos (identity test, expression transfer) "
                                            "and held-out clips (self-reenactment)")
    ev.add_argument("--photos", required=True, help="folder of photos never trained on")
    ev.add_argument("--driving", nargs="+", required=True, help="prepared clips whose motion drives the photos")
    ev.add_argument("--reenact", nargs="*", help="prepared held-out clips for self-reenactment")
    ev.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    ev.add_argument("--checkpoint", help="a stage-2 Lightning checkpoint instead of --weights")
    ev.add_argument("--frames", type=int, default=50, help="frames of each driving clip (default 50)")
    ev.add_argument("--strips", help="folder for frame strips (PNG) of each transfer")
    ev.add_argument("--output", required=True, help="the JSON report")
    ev.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_eval_stage2)


def _eval_speech(args: argparse.Namespace) -> int:
    import json

    from .speech_eval import corpus_recordings, default_images, evaluate_speech, load_recordings

    output = _report_path(args.output)
    if (args.recordings is None) == (args.corpus is None):
        raise ValueError("give --recordings (recorded speech) or --corpus (a synthetic corpus' split), one of them")
    if args.corpus:
        recordings, skipped = corpus_recordings(args.corpus, args.split), {}
    else:
        recordings, skipped = load_recordings(args.recordings)
    for name, why in skipped.items():
        print(f"left out {name}: {why}", file=sys.stderr)
    pipe = _pipeline(args)
    report = {**evaluate_speech(pipe, recordings, default_images(args.faces), progress=not args.quiet,
                                tracked=args.tracked),
              "measured_on": "rendered video, tracked" if args.tracked else "generated meshes", "left_out": skipped}
    _write_report(output, report)
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {output}")
    return 0


def _pipeline(args: argparse.Namespace):
    """The saved pipeline of ``--weights`` (default: the demo weights), with ``--audio2mesh``
    (a stage-1 checkpoint) in place of its stage 1 when given."""
    from .pipeline import VividTalkPipeline

    pipe = VividTalkPipeline.from_pretrained(args.weights, device=args.device)
    if getattr(args, "audio2mesh", None):
        pipe = pipe.replace_stages({"audio2mesh": args.audio2mesh}).to(args.device)
    return pipe


def _add_eval_speech(sub) -> None:
    ev = sub.add_parser("eval-speech", help="stage 1's lip sync on recorded speech with transcripts "
                                            "(bilabial closures, open vowels, mouth/energy)")
    ev.add_argument("--recordings", help="folder of NAME.wav + NAME.txt (vividtalk-prep real-speech writes one)")
    ev.add_argument("--corpus", help="instead, a synthetic corpus (vividtalk-prep synth): one split's clips with "
                                     "the phoneme timings they were spoken with, a validation set")
    ev.add_argument("--split", default="val", help="the corpus split (default: val)")
    ev.add_argument("--faces", help="folder of face photos whose identities speak (default: the demo portrait)")
    ev.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    ev.add_argument("--audio2mesh", help="a stage-1 Lightning checkpoint to use instead of the pipeline's")
    ev.add_argument("--output", required=True, help="the JSON report")
    ev.add_argument("--tracked", action="store_true",
                    help="measure on the rendered video, tracked and fitted again, not on stage 1's meshes")
    ev.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_eval_speech)


def _eval_style(args: argparse.Namespace) -> int:
    from .pretrained import stage_from_checkpoint
    from .style_eval import evaluate_style, format_rows, style_cases

    output = _report_path(args.output)
    pipe = _pipeline(args)
    module = stage_from_checkpoint(args.in_context, "in_context")[0] if args.in_context else pipe.in_context
    if module is None:
        raise ValueError("the pipeline has no in-context motion model: give --in-context CKPT (stages/in_context.yaml)")
    expert = stage_from_checkpoint(args.sync_expert, "sync_expert")[0].expert.eval() if args.sync_expert else None
    cases = style_cases(args.corpus, args.features, args.frames, args.prompt_frames, args.split)
    report = evaluate_style(module.cpu().eval(), cases, pipe.audio2mesh.cpu().eval(), expert, args.cfg_scales,
                            args.steps, args.seeds, progress=not args.quiet, temperatures=args.temperatures)
    _write_report(output, report)
    print(format_rows(report))
    print(f"wrote {output}")
    return 0


def _add_eval_style(sub) -> None:
    ev = sub.add_parser("eval-style", help="the in-context motion model's speaking style on held-out people, "
                                           "against VividTalk's stage 1 (LVE, FDD, style distances, sync)")
    ev.add_argument("--corpus", required=True, help="a prepared corpus (vividtalk-prep synth --person-style) with "
                                                    "cached features")
    ev.add_argument("--in-context", help="an in-context model checkpoint (default: the pipeline's)")
    ev.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    ev.add_argument("--audio2mesh", help="a stage-1 Lightning checkpoint to use instead of the pipeline's")
    ev.add_argument("--sync-expert", help="a sync expert checkpoint (stages/sync_expert.yaml) for the sync score")
    ev.add_argument("--features", default="whisper-tiny.en-w10", help="the cached features' name")
    ev.add_argument("--split", default="test", help="corpus split (default: test)")
    ev.add_argument("--frames", type=int, default=100, help="driven frames per clip (default 100)")
    ev.add_argument("--prompt-frames", type=int, default=50, help="style prompt frames (default 50)")
    ev.add_argument("--cfg-scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0], help="guidance sweep")
    ev.add_argument("--steps", type=int, nargs="+", default=[2, 5, 10], help="ODE steps sweep")
    ev.add_argument("--temperatures", type=float, nargs="*", default=[], help="sampling temperature sweep "
                                                                              "(default: none)")
    ev.add_argument("--seeds", type=int, default=3, help="samples per case for the diversity (default 3)")
    ev.add_argument("--output", required=True, help="the JSON report")
    ev.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_eval_style)


def _eval(args: argparse.Namespace) -> int:
    from .eval.report import EvalWeights, evaluate_videos, format_table

    output = _report_path(args.output)
    weights = EvalWeights(args.syncnet, args.arcface, args.arcface_depth, args.inception)
    report = evaluate_videos(args.videos, reference=args.reference, audio=args.audio, image=args.image,
                             weights=weights, device=args.device)
    _write_report(output, report)
    print(format_table(report))
    print(f"wrote {output}")
    return 0


def _add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="score talking-head videos; write a JSON report and print a table")
    ev.add_argument("videos", nargs="+", help="generated videos (mp4, ...)")
    ev.add_argument("--reference", help="the real video to compare with (PSNR, SSIM, LVE, FDD, FID, identity)")
    ev.add_argument("--audio", help="the driving audio (default: each video's own audio track)")
    ev.add_argument("--image", help="the source image (identity against it)")
    ev.add_argument("--output", required=True, help="the JSON report")
    ev.add_argument("--syncnet", help="SyncNet weights (syncnet_v2.model) for LSE-D / LSE-C")
    ev.add_argument("--arcface", help="an ArcFace backbone (insightface backbone.pth) for identity similarity")
    ev.add_argument("--arcface-depth", default="r100", help="its IResNet depth (default r100)")
    ev.add_argument("--inception", help="TorchScript Inception (inception-2015-12-05.pt) for FID")
    ev.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ev.set_defaults(func=_eval)


def _save_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import VividTalkPipeline

    given = {"audio2mesh": args.audio2mesh, "pose_mapper": args.pose_mapper, "mesh2video": args.mesh2video}
    if args.base:
        pipe = VividTalkPipeline.from_pretrained(args.base).replace_stages({**given, "in_context": args.in_context})
    elif None in given.values():
        missing = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is None)
        raise ValueError(f"missing {missing}: give all three checkpoints, or --base DIR for the stages not given")
    else:
        pipe = VividTalkPipeline.from_checkpoints(args.audio2mesh, args.pose_mapper, args.mesh2video)
        if args.in_context:
            pipe = pipe.replace_stages({"in_context": args.in_context})
    if args.motion_model:
        pipe = pipe.replace_stages({}, motion_model=args.motion_model)
    if args.temperature is not None:  # an inference setting: stored in the pipeline's config
        pipe.pose_mapper.temperature = args.temperature
        pipe.config["pose_mapper"]["init_args"]["temperature"] = args.temperature
    print(f"wrote {pipe.save_pretrained(args.output)}")
    return 0


def _fit_face(args: argparse.Namespace) -> int:
    from .face.visualize import fit_face_report

    summary = fit_face_report(args.image, args.output, tracker=args.tracker)
    print(summary)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .pipeline import VividTalkPipeline
    from .server import ServerSettings
    from .server.app import create_app
    from .server.settings import is_loopback, token_from_env

    settings = ServerSettings(host=args.host, port=args.port, weights=args.weights, device=args.device,
                              token=token_from_env(args.token), max_upload_mb=args.max_upload_mb, queue=args.queue)
    if not is_loopback(settings.host) and settings.token is None:
        print(f"warning: listening on {settings.host} without a token: anyone who can reach this machine can use "
              "it (give --token or set VIVIDTALK_TOKEN)", file=sys.stderr)
    # loaded here, not at the server's startup, so bad weights are one clear line (exit 2)
    pipe = VividTalkPipeline.from_pretrained(settings.weights, device=settings.device)
    print(f"vividtalk server on {settings.url} (device {settings.device}, queue {settings.queue}, "
          f"{'token required' if settings.token else 'no token'})", flush=True)
    if args.open_browser:
        _open_when_ready(settings.url)
    # ws_max_size: a stream's image is one WebSocket message, as large as an upload may be
    uvicorn.run(create_app(pipe, settings), host=settings.host, port=settings.port, log_level="info",
                ws_max_size=settings.max_upload_bytes + 4096)
    return 0


def _open_when_ready(url: str) -> None:
    """Open ``url`` in the browser once ``/healthz`` answers (the pipeline loads first)."""
    import threading
    import time
    import urllib.request
    import webbrowser

    def wait_and_open() -> None:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                webbrowser.open(url)
                return
            except OSError:
                time.sleep(0.5)

    threading.Thread(target=wait_and_open, name="open-browser", daemon=True).start()


def _add_serve(sub, name: str, help: str):
    serve = sub.add_parser(name, help=help)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--weights", help="a saved pipeline directory (default: the packaged demo weights)")
    serve.add_argument("--token", help="require Authorization: Bearer TOKEN on every route but /healthz "
                                       "(default: $VIVIDTALK_TOKEN; none when unset)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0,
                       help="largest upload (request body, stream image) in MiB (default 20)")
    serve.add_argument("--queue", type=int, default=8, help="jobs that may wait; more get 503 (default 8)")
    serve.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    serve.set_defaults(func=_serve, open_browser=False)
    return serve


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def cli_main(args: list[str] | None = None):
    """The Lightning CLI over every stage: the model and the data are given by ``class_path``
    in the stage recipes (``stages/*.yaml``). Callable from tests with an argument list.
    With ``--ckpt_path`` the arguments win over the checkpoint's stored hyperparameters
    (:class:`~vividtalk.stages.lightning_cli.StageCLI`)."""
    import pytorch_lightning as pl

    from .stages.lightning_cli import StageCLI

    return StageCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vividtalk",
        description="One-shot audio-driven talking-head generation. "
        "Data preparation: see `vividtalk-prep --help`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_reenact(sub)
    _add_personalize(sub)
    _add_eval(sub)
    _add_eval_stage2(sub)
    _add_eval_speech(sub)
    _add_eval_style(sub)
    for name in LIGHTNING_COMMANDS:  # parsed by the Lightning CLI (see `vividtalk fit --help`)
        sub.add_parser(name, help=f"{name} a stage with the Lightning CLI (--config stages/<stage>.yaml)",
                       add_help=False)
    bench = sub.add_parser("bench", help="run a benchmark (render, audio2mesh, mesh2video, mesh_flow, generate, "
                                         "loader, train, stream)")
    bench.add_argument("name", nargs="?", default="all",
                       help="render, audio2mesh, mesh2video, mesh_flow, generate, loader, train, stream, or all (default: "
                            "every one, one report)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    bench.add_argument("--repeats", type=int, default=0, help="timed repetitions (default: the benchmark's)")
    bench.add_argument("--batch-size", type=int, default=0, help="frames (render) or sequences per call (default: 1)")
    bench.add_argument("--size", default="", help="network size: audio2mesh demo (default) or paper; mesh2video default or large")
    bench.add_argument("--seconds", type=float, default=0.0, help="audio length (audio2mesh, generate: default 10; stream: default 20)")
    bench.add_argument("--weights", default="", help="generate: a saved pipeline (default: the demo weights)")
    bench.add_argument("--encoder", default="", help="audio2mesh: the expression network's audio encoder, "
                                                     "whisper (default) or logmel")
    bench.add_argument("--motion-model", default="", help="audio2mesh: vividtalk (default) or in_context "
                                                         "(MimicTalk's flow-matching model)")
    bench.add_argument("--no-mesh-flow", action="store_true", help="mesh2video: the paper-literal variant (ablation)")
    bench.add_argument("--corpus", default="", help="loader, train: a prepared corpus (default: a fixture corpus)")
    bench.add_argument("--workers", type=int, default=0, help="loader: also time a DataLoader with this many workers")
    bench.set_defaults(func=_bench)
    save = sub.add_parser("save-pipeline", help="three stage checkpoints (vividtalk fit) -> a pipeline directory")
    save.add_argument("--audio2mesh", help="stage 1 checkpoint (stages/audio2mesh.yaml)")
    save.add_argument("--pose-mapper", help="pose mapper checkpoint (stages/pose_mapper.yaml)")
    save.add_argument("--mesh2video", help="stage 2 checkpoint (stages/mesh2video.yaml)")
    save.add_argument("--in-context", help="MimicTalk's in-context motion model checkpoint (stages/in_context.yaml)")
    save.add_argument("--motion-model", choices=["vividtalk", "in_context"], help="the default motion model to store")
    save.add_argument("--base", help="a saved pipeline whose stages are kept where no checkpoint is given")
    save.add_argument("--output", required=True, help="the pipeline directory (config.json + model.safetensors)")
    save.add_argument("--temperature", type=float, help="head-pose sampling temperature to store (default: the run's)")
    save.set_defaults(func=_save_pipeline)
    fit = sub.add_parser("fit-face", help="fit the face model to an image; save image | NCC render | overlay")
    fit.add_argument("--image", help="input photo with one face (default: scikit-image's portrait)")
    fit.add_argument("--output", required=True, help="output PNG")
    fit.add_argument("--tracker", default="mediapipe", help="mediapipe (default) or face-alignment")
    fit.set_defaults(func=_fit_face)
    _add_serve(sub, "serve", "the generator as a local web service (HTTP jobs + WebSocket streaming)")
    demo = _add_serve(sub, "demo", "serve, and open the demo page in the browser")
    demo.add_argument("--no-browser", dest="open_browser", action="store_false", help="do not open the browser")
    demo.set_defaults(open_browser=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        cli_main(None if from_command_line else argv)  # None: the Lightning CLI reads sys.argv itself
        return 0
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
