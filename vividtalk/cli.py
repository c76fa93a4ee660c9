"""The ``vividtalk`` console script.

Commands available now:
  fit / validate / test / predict   train and evaluate a stage with the Lightning CLI
                  (``vividtalk fit --config stages/audio2mesh.yaml --data.root CORPUS``)
  bench NAME      benchmarks (``render``, ``audio2mesh``, ``mesh2video``); ``--json`` prints one machine-readable object
  fit-face        track and fit the face model on an image and save a visual check

Data preparation is a separate script: ``vividtalk-prep`` (``python -m data_prep``).
"""

from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    kwargs = {"device": args.device}
    for key in ("repeats", "batch_size", "size"):
        if getattr(args, key):
            kwargs[key] = getattr(args, key)
    print(run_benchmark(args.name, as_json=args.json, **kwargs))
    return 0


def _fit_face(args: argparse.Namespace) -> int:
    from .face.visualize import fit_face_report

    summary = fit_face_report(args.image, args.output, tracker=args.tracker)
    print(summary)
    return 0


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def cli_main(args: list[str] | None = None):
    """The Lightning CLI over every stage: the model and the data are given by ``class_path``
    in the stage recipes (``stages/*.yaml``). Callable from tests with an argument list."""
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    return LightningCLI(
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
    for name in LIGHTNING_COMMANDS:  # parsed by the Lightning CLI (see `vividtalk fit --help`)
        sub.add_parser(name, help=f"{name} a stage with the Lightning CLI (--config stages/<stage>.yaml)", add_help=False)
    bench = sub.add_parser("bench", help="run a benchmark (render, audio2mesh, mesh2video)")
    bench.add_argument("name", help="which benchmark: render, audio2mesh, mesh2video")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    bench.add_argument("--repeats", type=int, default=0, help="timed repetitions (default: the benchmark's)")
    bench.add_argument("--batch-size", type=int, default=0, help="frames (render) or sequences per call (default: 1)")
    bench.add_argument("--size", default="", help="network size: audio2mesh demo (default) or paper; mesh2video default or large")
    bench.set_defaults(func=_bench)
    fit = sub.add_parser("fit-face", help="fit the face model to an image; save image | NCC render | overlay")
    fit.add_argument("--image", help="input photo with one face (default: scikit-image's portrait)")
    fit.add_argument("--output", required=True, help="output PNG")
    fit.add_argument("--tracker", default="mediapipe", help="mediapipe (default) or face-alignment")
    fit.set_defaults(func=_fit_face)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and dispatch to ``args.func``; bad input (ValueError, FileNotFoundError) becomes
    one clear line on stderr and exit code 2, with no traceback."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        cli_main(None if from_command_line else argv)  # None: the Lightning CLI reads sys.argv itself
        return 0
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
