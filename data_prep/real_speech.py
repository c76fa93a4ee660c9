"""``vividtalk-prep real-speech OUT``: recorded human speech with transcripts, phone-aligned.

Debian's ``pocketsphinx-testdata`` (``apt-get install pocketsphinx-testdata``; BSD-licensed
CMU Sphinx test data) holds a few real recordings with transcripts: five LibriVox utterances
of *Sense and Sensibility* read by one woman (``librivox``, 30 s) and five short phrases by
another speaker (``cards``). This command copies a chosen set into OUT as ``NAME.wav`` (16 kHz
mono) + ``NAME.txt`` (the transcript) + ``NAME.phones.json`` (pocketsphinx's forced alignment,
for looking at): the folder ``vividtalk eval-speech --recordings`` reads. None of it is ever
committed or trained on by the recipes: it is the real-speech evaluation set.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from scipy.io import wavfile

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
SETS = {"librivox": ("librivox", "transcription"), "cards": ("cards", "cards.transcription")}


def transcripts(path: Path) -> dict[str, str]:
    """Sphinx ``.transcription`` lines ``<s> words </s> (fileid)`` -> {fileid: words}."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^)]+)\)\s*$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def collect(out_dir: str | os.PathLike, sets: list[str], source: Path = TESTDATA) -> list[str]:
    """Copy, align and write the recordings of ``sets``; returns the names written."""
    from vividtalk.audio.io import load_audio
    from vividtalk.audio.phonemes import align_phones

    if not source.is_dir():
        raise FileNotFoundError(f"{source} not found: install Debian's pocketsphinx-testdata "
                                "(apt-get install pocketsphinx-testdata) or pass --source")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for name in sets:
        folder, listing = SETS[name]
        for fileid, text in transcripts(source / folder / listing).items():
            wav = load_audio(source / folder / f"{fileid}.wav")
            phones = align_phones(wav, text)
            stem = out / f"{name}-{fileid}"
            tmp = stem.with_suffix(".tmp.wav")
            wavfile.write(tmp, 16000, (np.clip(wav, -1, 1) * 32767).round().astype(np.int16))
            tmp.replace(stem.with_suffix(".wav"))
            stem.with_suffix(".txt").write_text(text + "\n")
            stem.with_suffix(".phones.json").write_text(json.dumps(
                [[p.name, round(p.start, 3), round(p.end, 3), p.word] for p in phones]))
            names.append(stem.name)
    return names


def write_training_clips(recordings: Path, corpus: str | os.PathLike, seed: int = 0) -> list[str]:
    """Turn aligned recordings (``NAME.wav`` + ``NAME.phones.json``) into stage-1 training clips
    of ``corpus``: the recorded audio, the viseme model's motion from the aligned phones, the
    default portrait's face warped to it (as ``vividtalk-prep synth`` renders). Returns the clip
    names; the corpus manifest is rebuilt."""
    from vividtalk.data import build_manifest, write_clip

    from .synth.corpus import SynthConfig, _Worker, synth_clip
    from .synth.speech import Utterance
    from .synth.visemes import from_arpabet
    from vividtalk.audio.io import load_audio

    worker, names = _Worker([None]), []
    for k, path in enumerate(sorted(Path(recordings).glob("*.phones.json"))):
        stem = path.name[: -len(".phones.json")]
        phones = from_arpabet([(p[0], p[1], p[2]) for p in json.loads(path.read_text())])
        wav = load_audio(path.with_name(stem + ".wav"))
        phones[-1] = (phones[-1][0], phones[-1][1], len(wav) / 16000)
        utterance = Utterance(wav, phones, path.with_name(stem + ".txt").read_text().strip(),
                              f"real:{stem.split('-')[0]}", 0, 0)
        data = synth_clip(SynthConfig(seed=seed, clips_per_identity=1 << 20), 10_000 + k, worker.sources,
                          worker.model, worker.warpers, utterance=utterance)
        write_clip(corpus, f"real-{stem}", data)
        names.append(f"real-{stem}")
    build_manifest(Path(corpus), seed=seed)
    return names


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="folder for NAME.wav + NAME.txt (+ NAME.phones.json)")
    parser.add_argument("--sets", nargs="+", default=["librivox"], choices=sorted(SETS),
                        help="which recordings (default: librivox, the one held-out evaluation set)")
    parser.add_argument("--source", default=str(TESTDATA), help=f"the test data folder (default {TESTDATA})")
    parser.add_argument("--clips", help="also write them as stage-1 training clips into this corpus "
                                        "(motion from the aligned phones; never the held-out evaluation set)")


def run_cli(args) -> int:
    names = collect(args.out_dir, args.sets, Path(args.source))
    print(f"wrote {len(names)} recordings with transcripts and alignments to {args.out_dir}")
    if args.clips:
        clips = write_training_clips(Path(args.out_dir), args.clips)
        print(f"wrote {len(clips)} training clips to {args.clips}")
    return 0
