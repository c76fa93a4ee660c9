"""``personalize``: a person's video -> a personalisation directory (prepare, score, adapt, score, save).

The steps and where they live: the video becomes a clip (:mod:`.video`), stage 2 gets the
person's adapter (:mod:`.adapter`), trained by :mod:`.adapt`, scored on the held-out end of the
clip before and after (:mod:`.evaluate`), and written (:mod:`.store`). Work files (the prepared
clip, the adaptation checkpoint) stay in ``OUTPUT/.work`` until the directory is complete, so an
interrupted run resumes where it stopped; they are removed at the end unless ``keep_work``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..audio.align import FPS, SAMPLES_PER_FRAME
from ..data import Clip
from ..data.video import VideoError
from ..face.prepare import SourceFace
from .adapt import AdaptSettings, frames_batch, split_frames, train_adapter
from .adapter import EXCLUDED, PersonAdapter, split_state
from .evaluate import heldout_metrics
from .store import Personalization, save_personalization, stage2_hash
from .video import prepare_person_video

STYLE_SECONDS = 10.0
EVAL_FRAMES = 50
"""Held-out frames scored (evenly spaced over the held-out range)."""


def personalize(stage2, face, video: str | os.PathLike, output: str | os.PathLike,
                settings: AdaptSettings = AdaptSettings(), base_name: str = "", max_seconds: float = 300.0,
                perceptual: torch.nn.Module | None = None, identity: bool = True, keep_work: bool = False,
                progress: bool = True) -> tuple[Personalization, dict]:
    """Adapt ``stage2`` (in place: it keeps the person's LoRA layers) to the person of ``video``.

    Args:
        stage2: the base pipeline's :class:`~vividtalk.mesh2video.module.Mesh2VideoModule`, on
            the device to train on; face: the pipeline's face model.
        video: the person's video (10 s to a few minutes; only its first ``max_seconds`` are used).
        output: the personalisation directory to write (its parent must exist).
        settings: steps, rank, learning rates, ...; base_name: the base's name, recorded.
        perceptual: the perceptual loss (None: the base stage 2's).
        identity: also score dlib's identity distance on the held-out frames.
    Returns:
        (the :class:`~.store.Personalization`, the report: metrics ``before`` / ``after``,
        ``seconds`` of each step, ``frames``).
    """
    output = Path(output)
    if not output.parent.is_dir():
        raise VideoError(f"output directory's parent does not exist: {output.parent}")
    clock, seconds = time.perf_counter(), {}
    base = {"name": base_name, "stage2_sha256": stage2_hash(stage2), "face_model_id": face.model_id}
    clip = Clip(prepare_person_video(video, output / ".work", face, max_seconds, progress=progress))
    seconds["prepare"], clock = time.perf_counter() - clock, time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # LoRA's A starts random: seeded, so runs repeat
        torch.manual_seed(settings.seed)
        adapter = PersonAdapter(stage2, _prepared_source(stage2, clip), settings.rank)
    train, held = split_frames(len(clip), settings.heldout)
    scored = held[:: max(1, len(held) // EVAL_FRAMES)]
    judge = _identity() if identity else None
    before = heldout_metrics(adapter, clip, scored, identity=judge)
    run = train_adapter(adapter, clip, settings, output / ".work", perceptual, progress)
    seconds["adapt"], seconds["adapt_cpu"] = run["seconds"], run["cpu_seconds"]
    after = heldout_metrics(adapter, clip, scored, identity=judge)
    report = {"before": before, "after": after, "seconds": seconds, "steps_run": run["steps"],
              "frames": {"train": len(train), "heldout": len(held), "scored": len(scored)}}
    config = {"base": base, "video": str(video), "settings": asdict(settings), "report": report,
              "lora": {"rank": adapter.rank, "alpha": adapter.alpha, "targets": adapter.targets,
                       "excluded": {k: list(v) for k, v in EXCLUDED.items()}}}
    source, style = source_face(clip), style_prompt(clip)
    appearance, lora = {k: v.detach() for k, v in adapter.static().items()}, split_state(adapter.state())
    save_personalization(output, config, lora, appearance, source, style)
    if not keep_work:
        shutil.rmtree(output / ".work", ignore_errors=True)
    return Personalization(config, lora, appearance, source, style), report


def _prepared_source(stage2, clip: Clip) -> dict:
    src = frames_batch(clip, [0], stage2.device, "source")
    with torch.no_grad():
        return stage2.prepare_source(src["source"], src["source_mask"], src["source_vertices"], src["source_lips"])


def _identity():
    from ..eval.identity import DlibIdentity

    return DlibIdentity()


def source_face(clip: Clip) -> SourceFace:
    """The clip's first frame as a prepared source (its ``image`` the crop itself)."""
    from ..face.crop import CropBox

    crop = clip.frame(0)
    first = {k: clip.rows(k, 0, 1)[0] for k in ("vertices", "pose", "beta", "lip_offsets")}
    return SourceFace(image=crop, box=CropBox(0.0, 0.0, float(crop.shape[0])), crop=crop, masks=clip.mask(0),
                      identity=clip.rows("identity"), **first)


def style_prompt(clip: Clip, seconds: float = STYLE_SECONDS) -> dict[str, torch.Tensor]:
    """The first ``seconds`` of the clip's motion (``beta``, ``lip_offsets``, ``pose``) and, when
    it has sound, ``audio``: the in-context model's default style prompt for this person."""
    frames = min(len(clip), int(seconds * FPS))
    style = {k: torch.from_numpy(np.asarray(clip.rows(k, 0, frames), np.float32)) for k in
             ("beta", "lip_offsets", "pose")}
    if clip.has_audio:
        style["audio"] = torch.from_numpy(clip.audio(0, frames * SAMPLES_PER_FRAME))
    return style
