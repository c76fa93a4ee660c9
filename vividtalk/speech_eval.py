"""``vividtalk eval-speech``: stage 1's lip sync on recorded speech with transcripts.

A recordings folder holds ``NAME.wav`` (any rate or channels; read as 16 kHz mono) with
``NAME.txt`` (its transcript). Each recording is phone-aligned by pocketsphinx
(:func:`vividtalk.audio.phonemes.align_phones`), driven through the pipeline's stage 1 onto each
given face with a still head and no blinks (the meshes :meth:`VividTalkPipeline.plan` gives
stage 2), and scored by :mod:`vividtalk.eval.speech_sync` on the meshes' inner-lip gap.
:func:`corpus_recordings` gives the same measures a validation set: a synthetic corpus split.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .audio.io import load_audio
from .audio.phonemes import Phone, align_phones, espeak_to_arpabet
from .eval.speech_sync import pooled, speech_sync_scores
from .face.holes import lip_gap
from .face.image import image_files


@dataclasses.dataclass
class Recording:
    """A recording, its transcript and its phone alignment (``wav``: float32 [N] at 16 kHz)."""

    name: str
    wav: np.ndarray
    transcript: str
    phones: list[Phone]


def load_recordings(folder: str | os.PathLike) -> tuple[list[Recording], dict[str, str]]:
    """Every ``NAME.wav`` of ``folder`` that has a ``NAME.txt`` transcript, aligned; and the
    recordings that could not be aligned, by name, with the reason (they are left out).

    Raises:
        FileNotFoundError: no such pairs in the folder.
    """
    pairs = [(w, w.with_suffix(".txt")) for w in sorted(Path(folder).glob("*.wav"))]
    pairs = [(w, t) for w, t in pairs if t.is_file()]
    if not pairs:
        raise FileNotFoundError(f"no NAME.wav with a NAME.txt transcript in {folder} "
                                "(vividtalk-prep real-speech writes such a folder)")
    out, skipped = [], {}
    for wav_path, text_path in pairs:
        wav, text = load_audio(wav_path), text_path.read_text().strip()
        try:
            out.append(Recording(wav_path.stem, wav, text, align_phones(wav, text)))
        except ValueError as err:
            skipped[wav_path.stem] = str(err)
    if not out:
        raise ValueError(f"no recording in {folder} could be aligned: {skipped}")
    return out, skipped


def corpus_recordings(root: str | os.PathLike, split: str = "val") -> list[Recording]:
    """The clips of one split of a synthetic corpus as recordings: their audio and the phoneme
    timings they were synthesised with (eSpeak NG's events, or Piper's durations) in ARPAbet.

    A validation set for the measures of this module that is not the held-out recordings: the
    split's identities (face shape and voice) never trained.

    Raises:
        ValueError: a clip without audio or without stored phonemes (not a synthetic clip).
    """
    from .data.clip import Clip
    from .data.manifest import split_clips

    out = []
    for path in split_clips(root, split):
        clip = Clip(path)
        phonemes = clip.meta.get("phonemes")
        if not clip.has_audio or not phonemes:
            raise ValueError(f"{path} has no audio or no phoneme timings: corpus_recordings reads clips "
                             "written by vividtalk-prep synth")
        out.append(Recording(clip.clip_id, clip.audio(), str(clip.meta.get("text", "")), espeak_to_arpabet(phonemes)))
    return out


@torch.no_grad()
def mouth_gap_track(pipeline, wav: np.ndarray, image) -> tuple[np.ndarray, float]:
    """Inner-lip gap of the generated meshes in face heights, float [T], and the identity's
    neutral gap (its mesh with no expression and no lip offsets), for a still head."""
    plan = pipeline.plan(wav, image, pose="still", blink=False)
    face = pipeline.face.to(plan.vertices.device)
    neutral = face.assemble(torch.zeros_like(plan.beta[:1]),
                            identity=torch.from_numpy(plan.source.identity).to(plan.vertices), pose=plan.poses[:1])
    return _gaps(face, plan.vertices, neutral)


@torch.no_grad()
def tracked_gap_track(pipeline, wav: np.ndarray, image) -> tuple[np.ndarray, float]:
    """As :func:`mouth_gap_track`, measured on the rendered video: its frames (still head, no
    blinks) tracked and fitted, the fitted meshes' gap in the canonical frame, float [T], and the
    neutral gap of the fitted identity (in face heights of that identity)."""
    from .face.prepare import track_and_fit

    frames = pipeline(wav, image, pose="still", blink=False).frames
    _, fit = track_and_fit(list(frames), pipeline.face)
    face = pipeline.face
    meshes = face.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets)  # [T, V, 3]
    neutral = face.assemble(torch.zeros_like(fit.beta[:1]), identity=fit.identity)  # [1, V, 3]
    return _gaps(face, meshes, neutral)


def _gaps(face, meshes: torch.Tensor, neutral: torch.Tensor) -> tuple[np.ndarray, float]:
    """Inner-lip gaps of meshes [T, V, 3] and of the neutral mesh [1, V, 3], in face heights of the neutral."""
    height = float(neutral[0, :, 1].max() - neutral[0, :, 1].min())
    return lip_gap(face, meshes).cpu().numpy() / height, float(lip_gap(face, neutral)[0]) / height


def evaluate_speech(pipeline, recordings: list[Recording], images: list, progress: bool = True,
                    tracked: bool = False) -> dict:
    """Scores per (image, recording) and pooled over all of them.

    Args:
        images: face images (paths or arrays) whose identities the meshes take.
        tracked: measure on the rendered, tracked video (:func:`tracked_gap_track`) instead of
            the generated meshes.
    Returns:
        ``{"summary": pooled scores, "per_image": {image: pooled}, "items": [rows]}``.
    """
    rows = []
    jobs = [(i, r) for i in range(len(images)) for r in recordings]
    track = tracked_gap_track if tracked else mouth_gap_track
    for i, rec in tqdm(jobs, desc="speech sync", disable=not progress):
        gap, neutral = track(pipeline, rec.wav, images[i])
        rows.append({"image": _name(images[i], i), "recording": rec.name, "neutral_gap": neutral,
                     **speech_sync_scores(gap, neutral, rec.phones, rec.wav)})
    names = list(dict.fromkeys(r["image"] for r in rows))
    return {"summary": pooled(rows), "per_image": {n: pooled([r for r in rows if r["image"] == n]) for n in names},
            "items": rows}


def _name(image, index: int) -> str:
    return Path(image).stem if isinstance(image, (str, os.PathLike)) else f"image{index}"


def default_images(folder: str | os.PathLike | None) -> list:
    """The face images of a folder, or the pipeline's default portrait when None."""
    if folder is None:
        from .face.visualize import default_portrait

        return [default_portrait()]
    return [str(p) for p in image_files(folder)]
