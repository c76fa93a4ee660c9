"""The synthetic talking-head corpus: ``python -m data_prep synth OUT_DIR --clips N --seed S``.

Every clip has exact ground truth. An identity is a real photo (the scikit-image portrait by
default, or each image of ``--faces DIR``) whose fitted 3-D face is widened by a random
shape perturbation along the identity basis, and one eSpeak NG voice. A clip is one spoken
sentence: phoneme-timed speech drives blendshape curves, lip offsets, blinks, brows and head
motion (``motion.py``); the face model assembles the meshes; the photo is warped to follow
them (``warp.py``). Clip ``i`` depends only on (seed, i), so the corpus is deterministic for a
seed, whatever the number of workers, and a rerun skips the clips already written.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vividtalk.audio.align import SAMPLES_PER_FRAME
from vividtalk.data import ClipData, build_manifest, list_clips, remove_incomplete, write_clip
from vividtalk.face import FaceModel
from vividtalk.face.image import image_files
from vividtalk.face.prepare import FacePreparer, SourceFace
from vividtalk.face.visualize import default_portrait, read_image

from .acoustics import AudioAugment

CROP = 256


def prepare_photo(path: Path | None, preparer: FacePreparer) -> tuple[str, SourceFace]:
    """(identity stem, the photo tracked, cropped, fitted and labelled); None is the default portrait."""
    name, image = load_photo(path)
    return name, preparer.photo(image)


def photo_paths(faces_dir: str | os.PathLike | None) -> list[Path | None]:
    """The photos of ``faces_dir`` (sorted), or [None] for the default portrait."""
    return [None] if faces_dir is None else image_files(faces_dir, "--faces folder")


def load_photo(path: Path | None) -> tuple[str, np.ndarray]:
    """(identity stem, RGB image); None is scikit-image's public-domain portrait."""
    return ("astronaut", default_portrait()) if path is None else (path.stem, read_image(path))


def usable_photos(faces_dir, model: FaceModel) -> tuple[list[Path | None], list[dict]]:
    """Photos whose face can be tracked and fitted, and the others with the reason.

    Raises ValueError when no photo is usable.
    """
    good, skipped = [], []
    with FacePreparer(model, CROP) as preparer:
        for path in photo_paths(faces_dir):
            try:
                prepare_photo(path, preparer)
                good.append(path)
            except (ValueError, FileNotFoundError) as err:  # NoFaceError, FaceTooSmallError, unreadable
                skipped.append({"photo": str(path), "reason": str(err)})
    if not good:
        reasons = "; ".join(f"{s['photo']}: {s['reason']}" for s in skipped)
        raise ValueError(f"no usable face photo in {faces_dir}: {reasons}")
    return good, skipped


def identity_shape(source: SourceFace, model: FaceModel, seed: int, k: int, spread: float) -> np.ndarray:
    """Identity k of a photo: its neutral shape plus a seeded perturbation alpha U_id."""
    if k == 0:
        return source.identity  # the photo's own shape stays in the corpus
    rng = np.random.default_rng([seed, 7, k])
    alpha = torch.from_numpy(rng.normal(0.0, spread, model.num_identity).astype(np.float32))
    return source.identity + (model.identity_shape(alpha) - model.mean).numpy()


def compose_pose(base: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Photo pose [7] + relative head motion [T, 6] -> poses [T, 7].

    Head motion: (d_pitch, d_yaw, d_roll) radians, (d_tx, d_ty) face heights, d_log_scale.
    """
    pose = np.repeat(base[None].astype(np.float32), len(head), axis=0)
    pose[:, :3] += head[:, :3]
    pose[:, 3:5] += head[:, 3:5] * base[6]
    pose[:, 6] *= np.exp(head[:, 5])
    return pose


@dataclass
class SynthConfig:
    """Corpus settings (every clip's randomness derives from ``seed`` and its index).

    Attributes:
        clips: number of clips; clips_per_identity: clips sharing a shape and a voice;
        spread: std of the identity-basis perturbation; min_seconds/max_seconds: target
        clip length (sentences are drawn until the speech fits); piper_share: share of the
        identities speaking with the natural Piper voice (the others: eSpeak NG voices);
        augment: the acoustic augmentation of every clip's speech (``AudioAugment(probability=0)``: clean);
        english_share: share of the sentences drawn from the English language model
        (:mod:`.texts`: open vocabulary), the others from the small built-in grammar (0: the
        corpora made before it, clip for clip); person_style: each identity speaks in its own
        style (articulation gains, coarticulation timing, head mobility; recorded in the clip's
        meta), as the in-context motion model's style prompts need; False: a style per clip.
    """

    clips: int = 200
    seed: int = 0
    clips_per_identity: int = 10
    spread: float = 0.8
    min_seconds: float = 4.0
    max_seconds: float = 8.0
    piper_share: float = 0.35
    augment: AudioAugment = field(default_factory=AudioAugment)
    english_share: float = 0.75
    person_style: bool = False


def identity_voice(cfg: SynthConfig, person: int) -> str:
    """The voice of identity ``person``: Piper's (share ``piper_share``) or an eSpeak NG voice."""
    from .piper import VOICE
    from .speech import VOICES

    rng = np.random.default_rng([cfg.seed, 5, person])
    voice = VOICES[int(rng.integers(len(VOICES)))]
    return VOICE if rng.random() < cfg.piper_share else voice


def _speaker(voice: str, rng: np.random.Generator):
    """text -> Utterance in ``voice`` at a random rate and pitch (one draw per clip)."""
    from .piper import VOICE, synthesize_piper
    from .speech import synthesize

    if voice == VOICE:
        # pitch up to 1.3 also raises the formants (resampling): a shorter vocal tract, towards
        # women's and children's voices from the one male voice
        speed, pitch, noise = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.3), rng.uniform(0.7, 1.2)
        return lambda text: synthesize_piper(text, float(speed), float(pitch), float(noise))
    rate, pitch = int(rng.integers(130, 201)), int(rng.integers(30, 71))
    return lambda text: synthesize(text, voice=voice, rate=rate, pitch=pitch)


def clip_utterance(cfg: SynthConfig, index: int, voice: str):
    """The utterance of clip ``index``: sentences in one voice until at least min_seconds,
    padded with silence, then acoustically augmented (``cfg.augment``)."""
    from .acoustics import augment_utterance
    from .speech import pad_silence, random_sentence
    from .texts import english_text

    rng = np.random.default_rng([cfg.seed, 11, index])
    text_rng = np.random.default_rng([cfg.seed, 19, index])  # apart: english_share 0 keeps old clips
    speak = _speaker(voice, rng)
    # About 2.2 words a second at these rates: keep one sentence shorter than the longest clip.
    max_words = int(np.clip(2.2 * (cfg.max_seconds - 0.8), 3, 14))
    words = []
    for _ in range(8):
        if cfg.english_share > 0 and text_rng.random() < cfg.english_share:
            words.append(english_text().sentence(text_rng, min_words=min(6, max_words), max_words=max_words))
        else:
            words.append(random_sentence(rng, min_words=min(6, max_words), max_words=max_words))
        utterance = speak(" ".join(words))
        if utterance.duration >= cfg.min_seconds - 0.6:
            break
    if utterance.duration > cfg.max_seconds - 0.6 and len(words) > 1:
        utterance = speak(" ".join(words[:-1]))
    utterance = pad_silence(utterance, float(rng.uniform(0.2, 0.4)), float(rng.uniform(0.2, 0.4)))
    return augment_utterance(utterance, np.random.default_rng([cfg.seed, 17, index]), cfg.augment)


def synth_clip(cfg: SynthConfig, index: int, sources: list[tuple[str, SourceFace]], model: FaceModel, warpers: dict,
               utterance=None) -> ClipData:
    """Generate clip ``index`` (deterministic in (cfg.seed, index)); ``utterance``: speak this
    instead of the clip's own sentence (e.g. a recording with its aligned phonemes)."""
    from .motion import person_style, synth_motion

    person = index // cfg.clips_per_identity
    style = person_style(np.random.default_rng([cfg.seed, 23, person])) if cfg.person_style else None
    name, source = sources[person % len(sources)]
    shape_k = person // len(sources)
    utterance = utterance or clip_utterance(cfg, index, identity_voice(cfg, person))
    voice = utterance.voice
    lips = model.lip_indices
    motion = synth_motion(
        utterance, model.expression_names, model.num_lip_vertices, np.random.default_rng([cfg.seed, 13, index]),
        lip_positions=model.mean[lips].numpy(), lip_basis=model.exp_basis[:, lips].numpy(), style=style,
    )
    identity = identity_shape(source, model, cfg.seed, shape_k, cfg.spread)
    pose = compose_pose(source.pose, motion.head)
    vertices = model.assemble(
        torch.from_numpy(motion.beta), identity=torch.from_numpy(identity),
        lip_offsets=torch.from_numpy(motion.lip_offsets), pose=torch.from_numpy(pose),
    ).numpy()
    frames, masks = warpers[name].render(vertices)
    contour = model.lip_contour().numpy()
    arrays = dict(vertices=vertices, pose=pose, beta=motion.beta, lip_offsets=motion.lip_offsets,
                  identity=identity, lip_landmarks=vertices[:, contour, :2], masks=masks)
    meta = dict(source=f"synthetic:{name}", identity=f"{name}-shape{shape_k:03d}-{voice}",
                face_model_id=model.model_id, synthetic=True, seed=cfg.seed, index=index, voice=voice,
                rate=utterance.rate, pitch=utterance.pitch, text=utterance.text,
                phonemes=[list(p) for p in utterance.phonemes], **({"speaking_style": style} if style else {}))
    audio = np.pad(utterance.audio, (0, len(frames) * SAMPLES_PER_FRAME - len(utterance.audio)))
    return ClipData(frames, audio, arrays, meta)


class _Worker:
    """Per-process state: the face model, prepared photos and their warpers (built once)."""

    def __init__(self, photos: list[Path | None]) -> None:
        from .warp import PhotoWarper

        torch.set_num_threads(1)
        self.model = FaceModel.default()
        with FacePreparer(self.model, CROP) as preparer:
            self.sources = [prepare_photo(p, preparer) for p in photos]
        self.warpers = {name: PhotoWarper(s.crop, s.vertices, self.model, s.masks) for name, s in self.sources}


_WORKER: _Worker | None = None


def _init_worker(photos: list[Path | None]) -> None:
    global _WORKER
    _WORKER = _Worker(photos)


def _make_clip(job: tuple[SynthConfig, int, str]) -> tuple[int, int, float]:
    """Generate and write one clip in a worker; returns (index, frames, seconds)."""
    cfg, index, out_dir = job
    start = time.perf_counter()
    data = synth_clip(cfg, index, _WORKER.sources, _WORKER.model, _WORKER.warpers)
    write_clip(out_dir, clip_name(index), data)
    return index, len(data.frames), time.perf_counter() - start


def clip_name(index: int) -> str:
    return f"synth-{index:05d}"


def generate_corpus(out_dir: str | os.PathLike, cfg: SynthConfig, faces_dir: str | None = None,
                    workers: int = 1) -> dict:
    """Write the corpus (resuming: clips already present are kept) and its manifest.

    Returns a summary: clips written/skipped, frames, wall seconds, frames per second, and
    the photos skipped for having no usable face (with the reason).
    """
    photos, bad_photos = usable_photos(faces_dir, FaceModel.default())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_incomplete(out_dir)
    done = {p.name for p in list_clips(out_dir)}
    todo = [(cfg, i, str(out_dir)) for i in range(cfg.clips) if clip_name(i) not in done]
    start, frames = time.perf_counter(), 0
    with tqdm(total=len(todo), desc="synthetic clips", unit="clip") as bar:
        if workers <= 1:
            _init_worker(photos)
            results = map(_make_clip, todo)
            for _, n, _ in results:
                frames += n
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(photos,)) as pool:
                for _, n, _ in pool.imap_unordered(_make_clip, todo):
                    frames += n
                    bar.update()
    seconds = time.perf_counter() - start
    manifest = build_manifest(out_dir, seed=cfg.seed)
    return {"written": len(todo), "skipped": len(done), "frames": frames, "seconds": round(seconds, 1),
            "frames_per_second": round(frames / seconds, 1) if seconds > 0 else None,
            "splits": {k: len(v) for k, v in manifest["splits"].items()}, "skipped_photos": bad_photos}


def add_arguments(parser) -> None:
    """Options of ``python -m data_prep synth``."""
    parser.add_argument("out_dir", help="corpus directory (created; a rerun resumes)")
    parser.add_argument("--clips", type=int, default=200, help="number of clips (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--faces", help="folder of face photos (default: scikit-image's portrait)")
    parser.add_argument("--clips-per-identity", type=int, default=10, help="clips per shape+voice identity")
    parser.add_argument("--spread", type=float, default=0.8, help="identity-basis perturbation std")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="shortest clip (s)")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="longest clip (s)")
    parser.add_argument("--piper-share", type=float, default=0.35,
                        help="share of identities with the natural Piper voice (default 0.35; 0: eSpeak NG only)")
    parser.add_argument("--augment", type=float, default=0.7,
                        help="share of clips with acoustic augmentation (speed, room, noise, band, loudness; "
                             "default 0.7; 0: clean speech)")
    parser.add_argument("--english-share", type=float, default=0.75,
                        help="share of sentences drawn from pocketsphinx's English language model (open vocabulary; "
                             "default 0.75), the others from the built-in 80-word grammar (0: grammar only)")
    parser.add_argument("--person-style", action="store_true",
                        help="each identity speaks in its own style (mouth gains, timing, head mobility), "
                             "for the in-context motion model; default: a style per clip")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")


def run_cli(args) -> int:
    if not all(0 <= v <= 1 for v in (args.piper_share, args.augment, args.english_share)):
        raise ValueError("--piper-share, --augment and --english-share are shares: give values in [0, 1]")
    cfg = SynthConfig(args.clips, args.seed, args.clips_per_identity, args.spread, args.min_seconds,
                      args.max_seconds, args.piper_share, AudioAugment(probability=args.augment),
                      args.english_share, args.person_style)
    if cfg.clips < 1 or cfg.clips_per_identity < 1 or not 0.5 < cfg.min_seconds <= cfg.max_seconds:
        raise ValueError("need --clips >= 1, --clips-per-identity >= 1 and 0.5 < --min-seconds <= --max-seconds")
    summary = generate_corpus(args.out_dir, cfg, args.faces, args.workers)
    print(
        f"synthetic corpus {args.out_dir}: {summary['written']} clips written, {summary['skipped']} already there, "
        f"{summary['frames']} frames in {summary['seconds']} s ({summary['frames_per_second']} frames/s); "
        f"splits {summary['splits']}"
    )
    for bad in summary["skipped_photos"]:
        print(f"skipped photo {bad['photo']}: {bad['reason']}")
    return 0
