"""``python -m data_prep COMMAND`` / ``vividtalk-prep COMMAND``.

Commands:
  face-model   rebuild the default face model asset (mean shape, blendshapes, topology)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vividtalk-prep", description="vividtalk data preparation")
    sub = parser.add_subparsers(dest="command", required=True)
    face = sub.add_parser("face-model", help="rebuild the default face model asset")
    face.add_argument("--output", help="output .npz (default: the packaged asset)")
    face.set_defaults(func=_face_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
