"""``VividTalkPipeline``: audio + one face image -> a talking-head video; ``generate()``.

The pipeline holds the three trained stages as their LightningModules (which own the
networks, the face model and the inference settings): stage 1 (audio -> blendshapes and lip
offsets, :class:`~vividtalk.audio2mesh.module.Audio2MeshModule`), the head-pose mapper with
its frozen codebook (:class:`~vividtalk.audio2mesh.pose_modules.PoseMapperModule`) and
stage 2 (meshes -> frames, :class:`~vividtalk.mesh2video.module.Mesh2VideoModule`).

    pipe = VividTalkPipeline.from_pretrained()          # the packaged demo weights
    out = pipe("speech.wav", "face.jpg")                # VividTalkOutput
    out.save("talk.mp4")
    vividtalk.generate("speech.wav", "face.jpg", output="talk.mp4")   # the same, streamed

A saved pipeline is a directory with ``config.json`` (each stage's ``class_path`` /
``init_args`` as in the stage recipes, the face model id) and ``model.safetensors``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from . import motion
from .audio.align import FPS, SAMPLE_RATE, frames_to_samples, num_frames
from .audio.io import AudioError, frames_sound, load_audio
from .face.crop import paste_back
from .face.prepare import SourceFace, prepare_source, reference_poses

MIN_AUDIO_SECONDS = 0.2
POSE_MODES = ("audio", "still", "video")
MOTION_MODELS = ("vividtalk", "in_context")


def demo_weights_dir() -> Path:
    """The packaged demo weights (trained by the project's CPU recipes on its synthetic corpus)."""
    return Path(__file__).resolve().parent / "pretrained" / "demo"


@dataclass
class VividTalkOutput:
    """A generated talking head.

    Attributes:
        frames: uint8 [T, H, W, 3]; fps: frames per second (25).
        audio: float32 [N] 16 kHz mono (the input audio; None for a reenactment of a silent video).
        vertices: float32 [T, V, 3] the driving meshes in crop pixels.
        poses: float32 [T, 7] head poses (pitch, yaw, roll, tx, ty, tz, scale).
        beta: float32 [T, K] blendshape coefficients.
    """

    frames: np.ndarray
    fps: int
    audio: np.ndarray | None
    vertices: np.ndarray
    poses: np.ndarray
    beta: np.ndarray

    def save(self, path: str | os.PathLike) -> Path:
        """Write an H.264 mp4 with the audio muxed in (AAC); never a partial file."""
        from .data.video import write_video

        write_video(path, iter(self.frames), fps=self.fps, audio=self.audio)
        return Path(path)


@dataclass
class GenerationPlan:
    """Everything decided before stage 2 renders (:meth:`VividTalkPipeline.plan`): the prepared
    source and the driving motion; :meth:`VividTalkPipeline.frames` renders it."""

    source: SourceFace
    audio: np.ndarray | None
    vertices: torch.Tensor  # [T, V, 3] crop pixels
    poses: torch.Tensor  # [T, 7]
    beta: torch.Tensor  # [T, K]
    full_size: bool
    seconds: dict  # wall time of each step: source, expression, pose
    appearance: dict | None = None  # a personalisation's inverted appearance (features, source image)


class VividTalkPipeline:
    """The two-stage VividTalk generator (see the module docstring).

    Args:
        audio2mesh, pose_mapper, mesh2video: the trained stage modules.
        config: each stage's ``{"class_path", "init_args"}`` (kept for :meth:`save_pretrained`).
        in_context: optionally MimicTalk's in-context motion model
            (:class:`~vividtalk.audio2mesh.in_context_module.InContextMotionModule`).
        motion_model: the default motion model, "vividtalk" or "in_context" (saved with the pipeline).
    """

    def __init__(self, audio2mesh, pose_mapper, mesh2video, config: dict | None = None, in_context=None,
                 motion_model: str = "vividtalk") -> None:
        self.audio2mesh, self.pose_mapper, self.mesh2video = audio2mesh, pose_mapper, mesh2video
        self.in_context, self.config = in_context, config or {}
        self.motion_model = _check_motion_model(motion_model, in_context)
        ids = {m.face.model_id for m in (audio2mesh, mesh2video) + ((in_context,) if in_context else ())}
        if len(ids) != 1:
            raise ValueError(f"the stages were trained with different face models: {sorted(ids)}")
        self.face = audio2mesh.face
        self.personalization = None  # a loaded Personalization (load_personalization / personalize)
        for m in self.modules():
            m.eval()

    def modules(self) -> list[torch.nn.Module]:
        return [self.audio2mesh, self.pose_mapper, self.mesh2video] + ([self.in_context] if self.in_context else [])

    @property
    def device(self) -> torch.device:
        return next(self.audio2mesh.parameters()).device

    def to(self, device: str | torch.device) -> VividTalkPipeline:
        for m in self.modules():
            m.to(device)
        return self

    # ------------------------------------------------------------------ save / load
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "cpu") -> VividTalkPipeline:
        """Load a pipeline saved by :meth:`save_pretrained` (None: the packaged demo weights)."""
        from .pretrained import load_pipeline

        return load_pipeline(cls, Path(path) if path is not None else demo_weights_dir()).to(device)

    @classmethod
    def from_checkpoints(cls, audio2mesh: str, pose_mapper: str, mesh2video: str) -> VividTalkPipeline:
        """Assemble a pipeline from the three stages' Lightning checkpoints (each run's
        ``config.yaml``, written by the Lightning CLI beside ``checkpoints/``, gives the networks)."""
        from .pretrained import pipeline_from_checkpoints

        return pipeline_from_checkpoints(cls, {"audio2mesh": audio2mesh, "pose_mapper": pose_mapper,
                                               "mesh2video": mesh2video})

    def replace_stages(self, checkpoints: dict[str, str | None], motion_model: str | None = None) -> VividTalkPipeline:
        """A new pipeline with the stages whose Lightning checkpoint is given (name -> path or
        None) taken from those checkpoints and the others from this one; ``motion_model``: its
        default motion model (None: this one's)."""
        from .pretrained import OPTIONAL_STAGES, STAGES, stage_from_checkpoint

        unknown = set(checkpoints) - set(STAGES + OPTIONAL_STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}: known are {STAGES + OPTIONAL_STAGES}")
        modules = {s: getattr(self, s) for s in STAGES + OPTIONAL_STAGES}
        config = dict(self.config)
        for stage, path in checkpoints.items():
            if path is not None:
                modules[stage], config[stage] = stage_from_checkpoint(path, stage)
        return VividTalkPipeline(**modules, config=config, motion_model=motion_model or self.motion_model)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to the directory ``path``."""
        from .pretrained import save_pipeline

        if self.personalization is not None:
            raise ValueError("this pipeline is personalised: save the base pipeline (a personalisation is its own "
                             "directory, applied with load_personalization)")

        return save_pipeline(self, Path(path))

    # ------------------------------------------------------------------ personalisation
    def personalize(self, video: str | os.PathLike, output: str | os.PathLike, *, steps: int | None = None,
                    rank: int | None = None, batch_size: int | None = None, max_seconds: float = 300.0,
                    vgg_weights: str | None = None, identity: bool = True, keep_work: bool = False,
                    base_name: str = "", progress: bool = True) -> dict:
        """Adapt this pipeline to the person of ``video`` (MimicTalk's static-dynamic hybrid
        adaptation, :mod:`vividtalk.personalization`), write the personalisation directory
        ``output`` and apply it here (on this pipeline's device: train on a GPU by moving the
        pipeline there first).

        Args:
            video: 10 s to a few minutes of the person (the first ``max_seconds`` are used; the
                last 10 % are held out and scored before and after).
            steps, rank, batch_size: the adaptation's (None: :class:`~vividtalk.personalization.adapt.AdaptSettings`'
                defaults, sized for a CPU).
            vgg_weights: VGG-19 weights for the perceptual loss (None: the L1-pyramid fallback).
            identity: score dlib's identity distance too; keep_work: keep the prepared clip and
                the checkpoint in ``output/.work``; base_name: recorded as the base's name.
        Returns:
            The report (held-out metrics ``before`` / ``after``, ``seconds``, ``frames``).
        """
        from .mesh2video.losses import PerceptualLoss
        from .personalization.adapt import AdaptSettings
        from .personalization.run import personalize

        self._check_not_personalized()
        given = {"steps": steps, "rank": rank, "batch_size": batch_size}
        settings = AdaptSettings(**{k: v for k, v in given.items() if v is not None})
        perceptual = PerceptualLoss(vgg_weights).to(self.device) if vgg_weights else None
        personalization, report = personalize(self.mesh2video, self.face, video, output, settings, base_name,
                                              max_seconds, perceptual, identity, keep_work, progress)
        self.mesh2video.eval()
        self.personalization = personalization
        return report

    def load_personalization(self, path: str | os.PathLike, merge: bool = False) -> VividTalkPipeline:
        """Apply a personalisation directory (``vividtalk personalize``) to this pipeline, in place.

        Args:
            merge: fold the LoRA adapters into stage 2's weights (as fast as the base; the frames
                equal the unmerged adapters' within float tolerance).
        Returns:
            This pipeline. Generation without an ``image`` then uses the person's first frame and
            its inverted appearance; the in-context motion model's default style prompt is the
            person's clip.
        Raises:
            PersonalizationError: not a personalisation, or made for another base pipeline.
        """
        from .personalization.apply import apply_personalization

        self._check_not_personalized()
        self.personalization = apply_personalization(self.mesh2video, self.face, path, merge)
        return self

    def _check_not_personalized(self) -> None:
        if self.personalization is not None:
            raise ValueError("this pipeline is already personalised; load the base again "
                             "(VividTalkPipeline.from_pretrained) to apply another personalisation")

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        audio,
        image,
        *,
        pose: str = "audio",
        reference_video: str | os.PathLike | None = None,
        expression_scale: float = 1.0,
        blink: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        motion_model: str | None = None,
        style_video: str | os.PathLike | None = None,
        cfg_scale: float | None = None,
        steps: int | None = None,
        output_size: str = "crop",
        batch_size: int = 8,
        progress: bool = False,
    ) -> VividTalkOutput:
        """Generate a talking head: :meth:`plan` (stage 1 and the controls), then stage 2.

        Args:
            audio: the speech: a path (any audio or video file) or a float array [N] at 16 kHz
                (np.ndarray or torch.Tensor), at least 0.2 s long.
            image: the source photo with a face: a path or an RGB uint8 array [H, W, 3]; None
                with a personalisation loaded: the person's first frame and its inverted appearance.
            pose: the head motion: "audio" (sampled from the speech), "still" (the source's
                pose throughout) or "video" (the head motion of ``reference_video``).
            reference_video: the video (a path) whose head motion ``pose="video"`` copies.
            expression_scale: scales blendshapes and lip offsets (>= 0; 0: a still face).
            blink: add blinks every 2-5 s (False: the eyes stay open).
            seed: seeds the head-motion sampling and the blink times (None: 0, unless
                ``generator`` is given; passing both is an error).
            generator: drives the same randomness instead of ``seed``: head motion is drawn
                from it (on its device), blink times follow its ``initial_seed()``.
                ``seed=s`` equals ``generator=torch.Generator(device=pipe.device).manual_seed(s)``.
            temperature: the sampling temperature (None: the trained default): of the head-pose
                codebook (0: the nearest code, nothing sampled), or with ``motion_model="in_context"``
                of its starting noise (0: one deterministic motion).
            motion_model: "vividtalk" (VividTalk's stage 1 and head-pose codebook) or
                "in_context" (MimicTalk's flow-matching model: expression and head motion
                styled by ``style_video``); None: the pipeline's default (:attr:`motion_model`).
            style_video: a clip of a person speaking (a path, with sound) whose way of speaking
                the in-context model imitates (its first 10 s are the prompt); None: unconditional.
            cfg_scale, steps: the in-context model's guidance weight on the style prompt and its
                ODE steps (None: its defaults).
            output_size: "crop" (256x256 frames) or "full" (the crop pasted back into the image).
            batch_size: frames rendered by stage 2 at a time.
            progress: show progress bars.

        Returns:
            A :class:`VividTalkOutput` (frames, audio, meshes, poses, blendshapes).

        Raises:
            ValueError: an invalid option, or both ``seed`` and ``generator``; AudioError: audio
            that cannot be loaded or is too short; NoFaceError: no face in the image.
        """
        plan = self.plan(audio, image, pose=pose, reference_video=reference_video, expression_scale=expression_scale,
                         blink=blink, seed=seed, generator=generator, temperature=temperature,
                         motion_model=motion_model, style_video=style_video, cfg_scale=cfg_scale, steps=steps,
                         output_size=output_size, progress=progress)
        return self._render(plan, None, batch_size, progress)

    @torch.no_grad()
    def plan(
        self,
        audio,
        image,
        *,
        pose: str = "audio",
        reference_video: str | os.PathLike | None = None,
        expression_scale: float = 1.0,
        blink: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        motion_model: str | None = None,
        style_video: str | os.PathLike | None = None,
        cfg_scale: float | None = None,
        steps: int | None = None,
        output_size: str = "crop",
        progress: bool = False,
    ) -> GenerationPlan:
        """Stage 1 and the controls: the driving meshes of every frame (:meth:`frames` renders them).

        Args:
            audio, image, pose, reference_video, expression_scale, blink, seed, generator,
                temperature, motion_model, style_video, cfg_scale, steps, output_size: as for
                :meth:`__call__`, which documents them.
            progress: show a progress bar for stage 1.

        Returns:
            A :class:`GenerationPlan`: the prepared source, the audio padded to whole frames,
            the driving meshes [T, V, 3], poses [T, 7] and blendshapes [T, K].
        """
        generator, blink_seed = _random_source(seed, generator, self.device)
        wav = self._audio(audio)
        model = _check_motion_model(self.motion_model if motion_model is None else motion_model, self.in_context)
        _check_options(pose, reference_video, output_size, expression_scale, model, style_video)
        clock = _Clock(self.device)
        source, appearance = self._source(image)
        clock.lap("source")
        dev, frames = self.device, num_frames(len(wav))
        wav_t = torch.from_numpy(wav).to(dev)
        identity = torch.from_numpy(source.identity).to(dev)[None]
        source_pose = torch.from_numpy(source.pose).to(dev)[None]
        if model == "in_context":
            prompt = self._style_prompt(style_video, progress) if style_video is not None else self._person_prompt()
            expr, generated = motion.in_context_track(self.in_context, wav_t, frames, source_pose, prompt, cfg_scale,
                                                      steps, generator, temperature)
        else:
            expr, generated = self._expression(wav_t, identity, frames, progress), None
        clock.lap("expression")
        if generated is not None and pose == "audio":
            poses = generated  # the in-context model's own head motion
        else:
            poses = self._poses(pose, reference_video, wav_t, identity, source_pose, frames, temperature, generator)
        clock.lap("pose")
        blinks = motion.blink_track(frames, blink_seed).to(dev) if blink else None
        vertices, beta = motion.driven_meshes(self.face, expr, motion.speech_gate(wav_t, frames),
                                              self.audio2mesh.network.lip_index, blinks, expression_scale, identity,
                                              poses)  # [T, V, 3]
        return GenerationPlan(source, wav, vertices, poses[0], beta[0], output_size == "full", clock.seconds,
                              appearance)

    def _source(self, image) -> tuple[SourceFace, dict | None]:
        """The prepared source and its inverted appearance (None: the generator encodes it):
        ``image``, or without one the personalisation's person."""
        if image is not None:
            return prepare_source(_read_image(image), self.face), None
        if self.personalization is None:
            raise ValueError("an image is needed (a path or an RGB array), unless a personalisation is loaded")
        return self.personalization.source, self.personalization.appearance

    def _person_prompt(self) -> dict | None:
        """The in-context model's style prompt from the personalisation's clip (None: no
        personalisation, or its video had no sound)."""
        style = None if self.personalization is None else self.personalization.style
        if style is None or "audio" not in style:
            return None
        return self._prompt(style["audio"], style["beta"], style["lip_offsets"], style["pose"])

    def _prompt(self, wav: torch.Tensor, beta: torch.Tensor, lip_offsets: torch.Tensor,
                pose: torch.Tensor) -> dict:
        """The in-context model's prompt from a clip's sound float [P * 640] and its motion
        ``beta`` [P, K], ``lip_offsets`` [P, L, 3], ``pose`` [P, 7]."""
        dev, module = self.device, self.in_context
        features = motion.encode_frames(module.audio_encoder, wav.to(dev), 0, len(beta))
        return module.prompt(features, beta.to(dev)[None], lip_offsets.to(dev)[None], pose.to(dev)[None])

    @torch.no_grad()
    def plan_reenactment(self, video: str | os.PathLike, image=None, output_size: str = "crop",
                         expression_scale: float = 1.0, progress: bool = False) -> GenerationPlan:
        """Video-driven reenactment: the source photo (None: the video's first frame, which makes
        it self-reenactment) driven by the expression, lip motion and head motion tracked in
        ``video``, each relative to the video's first frame; the video's audio when it has any.

        Raises:
            VideoError: unreadable video; NoFaceError: no face in the video or the photo.
        """
        from .data.video import VideoError, iter_frames
        from .face.prepare import track_and_fit

        if output_size not in ("crop", "full"):
            raise ValueError(f"output_size must be 'crop' or 'full', got {output_size!r}")
        if not Path(video).is_file():
            raise VideoError(f"driving video not found: {video}")
        clock = _Clock(self.device)
        frames = list(tqdm(iter_frames(video, fps=FPS), desc="reading the driving video", unit="frame",
                           disable=not progress))
        if not frames:
            raise VideoError(f"the driving video has no frames: {video}")
        source = prepare_source(frames[0] if image is None else _read_image(image), self.face)
        clock.lap("source")
        _, fit = track_and_fit(frames, self.face)
        vertices, poses, beta = motion.carried_motion(self.face, source, fit.beta.to(self.device), fit.lip_offsets,
                                                      fit.pose, expression_scale)
        clock.lap("tracking")
        return GenerationPlan(source, frames_sound(video, len(frames)), vertices, poses, beta, output_size == "full",
                              clock.seconds)

    def reenact(self, video: str | os.PathLike, image=None, output: str | os.PathLike | None = None, *,
                output_size: str = "crop", expression_scale: float = 1.0, batch_size: int = 8,
                progress: bool = False):
        """Render :meth:`plan_reenactment` into the mp4 ``output`` (streamed; its path returned),
        or as a :class:`VividTalkOutput` when ``output`` is None.

        Args:
            video, image, output_size, expression_scale: as for :meth:`plan_reenactment`.
            output: the mp4 to write (its directory must exist), or None.
            batch_size: frames rendered by stage 2 at a time; progress: show progress bars.
        """
        _check_output_dir(output)
        plan = self.plan_reenactment(video, image, output_size=output_size, expression_scale=expression_scale,
                                     progress=progress)
        return self._render(plan, output, batch_size, progress)

    @torch.no_grad()
    def stream_session(
        self,
        image,
        *,
        pose: str = "audio",
        expression_scale: float = 1.0,
        blink: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        block: int = 8,
        first_block: int = 2,
        lookahead: int = 2,
        batch_size: int = 8,
    ):
        """A :class:`~vividtalk.streaming.StreamSession` for ``image`` (prepared once, here; None
        with a personalisation loaded: the person, with its inverted appearance):
        ``push`` audio chunks, get frame batches; ``flush`` at the end of speech.

        Args:
            image, pose ("audio" or "still"), expression_scale, blink, seed, generator,
                temperature: as for :meth:`__call__`.
            block: frames rendered together (a multiple of 4); first_block: the first block's
                (any size; smaller: an earlier first frame); lookahead: frames of future audio a block
                waits for (>= 2). Latency grows with them, quality too: see :mod:`vividtalk.streaming`.
            batch_size: frames per stage-2 batch.

        Raises:
            NoFaceError: no face in the image; ValueError: an invalid option.
        """
        from .streaming import StreamSession

        generator, blink_seed = _random_source(seed, generator, self.device)
        source, appearance = self._source(image)
        return StreamSession(self, source, generator, blink_seed, pose=pose, expression_scale=expression_scale,
                             blink=blink, temperature=temperature, block=block, first_block=first_block,
                             lookahead=lookahead, batch_size=batch_size, appearance=appearance)

    def stream(self, image, audio_chunks, **options):
        """Generate while the audio arrives: float32 16 kHz chunks of any size in, timestamped
        :class:`~vividtalk.streaming.FrameBatch` es out as soon as they are determined, the
        rest at the end of ``audio_chunks`` (a flush). ``options``: those of :meth:`stream_session`."""
        with self.stream_session(image, **options) as session:
            for chunk in audio_chunks:
                yield from session.push(chunk)
            yield from session.flush()

    def _expression(self, wav: torch.Tensor, identity: torch.Tensor, frames: int, progress: bool) -> dict:
        """VividTalk's stage 1 over the whole audio, with a progress bar."""
        bar = tqdm(total=frames, desc="audio to mesh", unit="frame", disable=not progress)
        expr = motion.expression_track(self.audio2mesh, wav, identity, frames, progress=lambda n: bar.update(n - bar.n))
        bar.close()
        return expr

    def _style_prompt(self, video: str | os.PathLike, progress: bool, seconds: float = 10.0) -> dict:
        """The in-context model's style prompt from a video of a person speaking: its first
        ``seconds`` tracked and fitted (motion) and its sound encoded (audio features)."""
        from .data.video import VideoError, iter_frames
        from .face.prepare import track_and_fit

        if not Path(video).is_file():
            raise VideoError(f"style video not found: {video}")
        frames = list(tqdm(islice(iter_frames(video, fps=FPS), int(seconds * FPS)), desc="reading the style video",
                           unit="frame", disable=not progress))
        if len(frames) < FPS:
            raise VideoError(f"the style video has {len(frames)} frames; at least 1 s of a person speaking is needed")
        try:
            wav = load_audio(video)[: frames_to_samples(len(frames))]
        except AudioError as err:
            raise VideoError(f"the style video has no usable sound ({err}): the prompt needs the person's "
                             "speech with their motion") from err
        wav = np.pad(wav, (0, frames_to_samples(len(frames)) - len(wav)))
        _, fit = track_and_fit(frames, self.face)
        return self._prompt(torch.from_numpy(wav), fit.beta, fit.lip_offsets, fit.pose)

    def _audio(self, audio) -> np.ndarray:
        wav = load_audio(audio, SAMPLE_RATE if isinstance(audio, (np.ndarray, torch.Tensor)) else None)
        if len(wav) < MIN_AUDIO_SECONDS * SAMPLE_RATE:
            raise AudioError(f"the audio is {len(wav) / SAMPLE_RATE:.3f} s long; at least {MIN_AUDIO_SECONDS} s "
                             "is needed")
        return np.pad(wav, (0, frames_to_samples(num_frames(len(wav))) - len(wav)))

    def _poses(self, mode: str, reference_video, wav, identity, source_pose, frames: int, temperature,
               generator: torch.Generator):
        if mode == "still":
            return motion.still_poses(source_pose, frames)
        if mode == "video":
            from .data.video import iter_frames

            return motion.copied_poses(reference_poses(list(iter_frames(reference_video, fps=FPS)), self.face),
                                       source_pose, frames)
        return motion.pose_track(self.pose_mapper, wav, identity, source_pose, frames, temperature=temperature,
                                 generator=generator)

    @torch.no_grad()
    def frames(self, plan: GenerationPlan, batch_size: int = 8, progress: bool = False) -> Iterator[np.ndarray]:
        """Stage 2: the frames of a plan, uint8 [H, W, 3] one by one (rendered ``batch_size``
        at a time; the source is prepared once)."""
        src, total = plan.source, len(plan.vertices)
        with tqdm(total=total, desc="mesh to video", unit="frame", disable=not progress) as bar:
            for batch in self.mesh2video.drive(src.crop, src.masks, src.vertices, plan.vertices, batch_size,
                                               plan.appearance):
                bar.update(len(batch))
                for frame in batch:
                    yield paste_back(frame, src.image, src.box) if plan.full_size else frame

    def write(
        self,
        audio,
        image,
        output: str | os.PathLike,
        *,
        pose: str = "audio",
        reference_video: str | os.PathLike | None = None,
        expression_scale: float = 1.0,
        blink: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        motion_model: str | None = None,
        style_video: str | os.PathLike | None = None,
        cfg_scale: float | None = None,
        steps: int | None = None,
        output_size: str = "crop",
        batch_size: int = 8,
        progress: bool = False,
    ) -> Path:
        """Generate straight into an mp4 (frames are streamed to the encoder, not kept: memory
        stays bounded for long audio); returns its path.

        Args:
            output: the mp4 to write (its directory must exist; never a partial file).
            audio, image, pose, reference_video, expression_scale, blink, seed, generator,
                temperature, motion_model, style_video, cfg_scale, steps, output_size, batch_size,
                progress: as for :meth:`__call__`.
        """
        _check_output_dir(output)
        plan = self.plan(audio, image, pose=pose, reference_video=reference_video, expression_scale=expression_scale,
                         blink=blink, seed=seed, generator=generator, temperature=temperature,
                         motion_model=motion_model, style_video=style_video, cfg_scale=cfg_scale, steps=steps,
                         output_size=output_size, progress=progress)
        return self._render(plan, output, batch_size, progress)

    def _render(self, plan: GenerationPlan, output: str | os.PathLike | None, batch_size: int, progress: bool):
        """Stage 2 of a plan: streamed into the mp4 ``output`` (its path returned; never a partial
        file), or kept as a :class:`VividTalkOutput` when ``output`` is None."""
        from .data.video import write_video

        if output is not None:
            write_video(output, self.frames(plan, batch_size, progress), fps=FPS, audio=plan.audio)
            return Path(output)
        frames = np.stack(list(self.frames(plan, batch_size, progress)))
        return VividTalkOutput(frames, FPS, plan.audio, plan.vertices.cpu().numpy(), plan.poses.cpu().numpy(),
                               plan.beta.cpu().numpy())


class _Clock:
    """Wall time between laps, by name, of work on ``device``: on a GPU each lap first waits for
    the queued kernels, or a lap would time their launch instead of their run (and the next lap
    would pay for them)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, name: str) -> None:
        now = self._now()
        self.seconds[name], self._last = now - self._last, now


def _random_source(seed: int | None, generator: torch.Generator | None,
                   device: torch.device) -> tuple[torch.Generator, int]:
    """The generator of the head-motion sampling and the seed of the blink times, from the
    ``seed`` or the ``generator`` of :meth:`VividTalkPipeline.plan` (not both)."""
    if generator is None:
        seed = 0 if seed is None else seed
        return torch.Generator(device=device).manual_seed(seed), seed
    if seed is not None:
        raise ValueError(
            f"pass either seed or generator, not both (got seed={seed} and a generator); "
            "e.g. generator=torch.Generator().manual_seed(seed)"
        )
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator, generator.initial_seed()


def _check_options(pose: str, reference_video, output_size: str, expression_scale: float, model: str,
                   style_video) -> None:
    if pose not in POSE_MODES:
        raise ValueError(f"pose must be one of {POSE_MODES}, got {pose!r}")
    if (pose == "video") != (reference_video is not None):
        raise ValueError("pose='video' needs reference_video (a path), and reference_video needs pose='video'")
    if output_size not in ("crop", "full"):
        raise ValueError(f"output_size must be 'crop' or 'full', got {output_size!r}")
    if expression_scale < 0:
        raise ValueError(f"expression_scale must be >= 0, got {expression_scale}")
    if style_video is not None and model != "in_context":
        raise ValueError("style_video styles the in-context motion model: pass motion_model='in_context'")


def _check_motion_model(name: str, in_context) -> str:
    if name not in MOTION_MODELS:
        raise ValueError(f"motion_model must be one of {MOTION_MODELS}, got {name!r}")
    if name == "in_context" and in_context is None:
        raise ValueError("this pipeline has no in-context motion model: add one with "
                         "`vividtalk save-pipeline --in-context CKPT` or use motion_model='vividtalk'")
    return name


def _check_output_dir(output: str | os.PathLike | None) -> None:
    """Refuse an output whose directory does not exist, before any work (VideoError)."""
    from .data.video import VideoError

    if output is not None and not Path(output).parent.is_dir():
        raise VideoError(f"output directory does not exist: {Path(output).parent}")


def _read_image(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from .face.visualize import read_image

        return read_image(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a path or an array, got {type(image).__name__}")
    return image


def generate(
    audio=None,
    image=None,
    output: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    *,
    pose: str = "audio",
    reference_video: str | os.PathLike | None = None,
    expression_scale: float = 1.0,
    blink: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
    motion_model: str | None = None,
    style_video: str | os.PathLike | None = None,
    cfg_scale: float | None = None,
    steps: int | None = None,
    output_size: str = "crop",
    batch_size: int = 8,
    personalization: str | os.PathLike | None = None,
    progress: bool = False,
):
    """One call: audio + image -> a talking head.

    Args:
        audio, image: as for :meth:`VividTalkPipeline.__call__`; None: the packaged demo
            speech / the default portrait (with ``personalization``: the person's first frame).
        personalization: a personalisation directory (``vividtalk personalize``) to apply.
        output: the mp4 to write (streamed; its path is returned), or None for a
            :class:`VividTalkOutput`.
        weights: a saved pipeline directory (None: the packaged demo weights).
        device: the torch device to run on.
        pose, reference_video, expression_scale, blink, seed, generator, temperature, motion_model,
            style_video, cfg_scale, steps, output_size, batch_size, progress: as for
            :meth:`VividTalkPipeline.__call__`.
    """
    pipe = VividTalkPipeline.from_pretrained(weights, device=device)
    if personalization is not None:
        pipe.load_personalization(personalization)
    if audio is None:
        audio = str(demo_weights_dir() / "speech.wav")
    if image is None and personalization is None:
        from .face.visualize import default_portrait

        image = default_portrait()
    options = dict(pose=pose, reference_video=reference_video, expression_scale=expression_scale, blink=blink,
                   seed=seed, generator=generator, temperature=temperature, motion_model=motion_model,
                   style_video=style_video, cfg_scale=cfg_scale, steps=steps, output_size=output_size,
                   batch_size=batch_size, progress=progress)
    if output is not None:
        return pipe.write(audio, image, output, **options)
    return pipe(audio, image, **options)
