"""``python -m data_prep COMMAND`` / ``vividtalk-prep COMMAND``.

Commands:
  face-model   rebuild the default face model asset (mean shape, blendshapes, topology)
  videos       real videos -> training clips (tracking, crops, face-model fits, masks, audio)
  synth        a synthetic talking-head corpus with exact ground truth (eSpeak NG speech)
"""

from __future__ import annotations

import argparse
import sys


def _face_model(args: argparse.Namespace) -> int:
    from .face_model import build_face_model

    model = build_face_model(args.output) if args.output else build_face_model()
    print(
        f"wrote {model.model_id}: {model.num_vertices} vertices, {model.triangles.shape[0]} triangles, "
        f"{model.num_expressions} blendshapes, {model.num_identity} identity modes"
    )
    return 0


def _add_videos(sub) -> None:
    """The ``videos`` subcommand; its options live with its code in :mod:`data_prep.videos`."""
    from .videos import add_arguments, run_cli

    videos = sub.add_parser("videos", help="prepare a corpus of clips from a folder of videos (resumable)")
    add_arguments(videos)
    videos.set_defaults(func=run_cli)


def _add_synth(sub) -> None:
    """The ``synth`` subcommand; its options live in :mod:`data_prep.synth.corpus`."""
    from .synth.corpus import add_arguments, run_cli

    synth = sub.add_parser("synth", help="generate a synthetic corpus with exact ground truth (resumable)")
    add_arguments(synth)
    synth.set_defaults(func=run_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vividtalk-prep", description="vividtalk data preparation")
    sub = parser.add_subparsers(dest="command", required=True)
    face = sub.add_parser("face-model", help="rebuild the default face model asset")
    face.add_argument("--output", help="output .npz (default: the packaged asset)")
    face.set_defaults(func=_face_model)
    _add_videos(sub)
    _add_synth(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vividtalk.cli import run_command

    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
