"""``vividtalk eval-style``: MimicTalk's in-context motion model against VividTalk's stage 1 on
people held out of training (issue 13's evaluation).

Every test clip of a prepared corpus (best one made with ``vividtalk-prep synth --person-style``,
where each identity speaks in its own style) is one case: its first ``frames`` are driven by
their own audio, and the generated motion is compared with the clip's real motion. The style
prompt is the first ``prompt_frames`` of *another* clip of the same identity (another sentence
of the same person), of a clip of another identity, or none. Measures per case:

- ``lve``: lip vertex error of the non-rigid meshes; ``fdd``: upper-face dynamics deviation;
- ``sync``: the sync expert's mean audio-lip agreement (when one is given);
- ``mouth_style`` / ``pose_style``: :func:`~vividtalk.eval.style.style_distance` of the jaw and
  mouth blendshapes / of the head-pose features to the person's real ones, scaled by their
  spread over the test people;
- ``diversity``: the blendshapes' std over sampling seeds (in-context only).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict

import torch
from tqdm import tqdm

from .audio2mesh.losses import nonrigid_mesh
from .audio2mesh.pose_repr import relative_features
from .audio2mesh.sync_expert import lip_motion
from .data.clip import Clip
from .data.manifest import split_clips
from .eval.mesh import face_dynamics_deviation, lip_vertex_error, upper_face_vertices
from .eval.style import statistic_spread, style_distance

_TAKE_KEYS = ("beta", "lip_offsets", "pose")


@dataclasses.dataclass
class StyleCase:
    """One test clip driven by its own audio, with its prompts (each a take: ``features``
    [1, T, A], ``beta`` [1, T, K], ``lip_offsets`` [1, T, L, 3], ``pose`` [1, T, 7],
    ``identity`` [1, V, 3])."""

    clip: str
    person: str
    drive: dict[str, torch.Tensor]
    same: dict[str, torch.Tensor]
    other: dict[str, torch.Tensor]


def read_take(clip: Clip, features: str, frames: int) -> dict[str, torch.Tensor]:
    """The first ``frames`` of a clip as a take (see :class:`StyleCase`)."""
    take = {k: clip.rows(k, 0, frames) for k in _TAKE_KEYS}
    take["features"] = clip.features(features, 0, frames)
    take["identity"] = clip.rows("identity")
    return {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in take.items()}


def style_cases(root: str | os.PathLike, features: str, frames: int = 100, prompt_frames: int = 50,
                split: str = "test") -> list[StyleCase]:
    """The cases of a corpus split: each clip of at least ``frames`` frames whose identity has
    another clip of at least ``prompt_frames``; the other person's prompt is a clip of the next
    identity (in sorted order), so each case has one fixed set of prompts.

    Raises:
        ValueError: fewer than two identities with two usable clips each.
    """
    people = defaultdict(list)
    for path in split_clips(root, split):
        clip = Clip(path)
        if clip.has_audio and len(clip) >= prompt_frames:
            people[clip.identity].append(clip)
    people = {p: c for p, c in sorted(people.items()) if len(c) >= 2}
    if len(people) < 2:
        raise ValueError(f"the {split} split of {root} has {len(people)} identities with two clips of at least "
                         f"{prompt_frames} frames; the style evaluation needs two or more (make the corpus with "
                         "--clips-per-identity 2 or more)")
    names, cases = list(people), []
    for k, person in enumerate(names):
        clips, others = people[person], people[names[(k + 1) % len(names)]]
        for j, clip in enumerate(clips):
            if len(clip) < frames:
                continue
            same, other = clips[(j + 1) % len(clips)], others[j % len(others)]
            cases.append(StyleCase(clip.clip_id, person, read_take(clip, features, frames),
                                   read_take(same, features, prompt_frames), read_take(other, features, prompt_frames)))
    return cases


def mouth_channels(face) -> list[int]:
    """The jaw and mouth blendshapes of a face model (the articulation a speaking style sets)."""
    return [i for i, n in enumerate(face.expression_names) if n.startswith(("jaw", "mouth"))]


class StyleScorer:
    """The measures of one generated motion against a case's real motion.

    Args:
        face: the face model; cases: the evaluation's cases (their real motion sets the
            style statistics' spread); sync_expert: a :class:`~.audio2mesh.sync_expert.SyncExpert`
            or None.
    """

    def __init__(self, face, cases: list[StyleCase], sync_expert=None) -> None:
        self.face, self.sync_expert = face, sync_expert
        self.upper, self.mouth = upper_face_vertices(face), mouth_channels(face)
        self.mouth_scale = statistic_spread([c.drive["beta"][0, :, self.mouth] for c in cases])
        self.pose_scale = statistic_spread([relative_features(c.drive["pose"])[0] for c in cases])

    @torch.no_grad()
    def __call__(self, case: StyleCase, beta: torch.Tensor, lip_offsets: torch.Tensor,
                 pose_features: torch.Tensor | None = None) -> dict[str, float]:
        """Scores of ``beta`` [1, T, K], ``lip_offsets`` [1, T, L, 3] and optionally
        ``pose_features`` [1, T, 6] (relative to the first frame)."""
        real, identity = case.drive, case.drive["identity"]
        pred_mesh = nonrigid_mesh(self.face, beta, lip_offsets, identity)
        real_mesh = nonrigid_mesh(self.face, real["beta"], real["lip_offsets"], identity)
        out = {"lve": lip_vertex_error(pred_mesh, real_mesh, self.face.lip_indices).mean().item(),
               "fdd": face_dynamics_deviation(pred_mesh, real_mesh, self.upper).mean().item(),
               "mouth_style": style_distance(beta[0, :, self.mouth], real["beta"][0, :, self.mouth],
                                             self.mouth_scale).item()}
        if pose_features is not None:
            out["pose_style"] = style_distance(pose_features[0], relative_features(real["pose"])[0], self.pose_scale).item()
        if self.sync_expert is not None:
            lips = lip_motion(self.face, beta, lip_offsets, identity)
            out["sync"] = self.sync_expert(lips, real["features"]).mean().item()
        return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def _in_context_runs(module, case: StyleCase, prompt: str, cfg_scale: float, steps: int, seeds: int,
                     temperature: float | None = None) -> list[dict[str, torch.Tensor]]:
    """The module's motion for a case with prompt "same", "other" or "none", one per seed."""
    take = None if prompt == "none" else getattr(case, prompt)
    given = None if take is None else module.prompt(take["features"], take["beta"], take["lip_offsets"], take["pose"])
    return [module.generate(case.drive["features"], given, cfg_scale, steps, generator=torch.Generator().manual_seed(seed),
                            temperature=temperature) for seed in range(seeds)]


def evaluate_in_context(module, cases: list[StyleCase], scorer: StyleScorer, prompt: str, cfg_scale: float,
                        steps: int, seeds: int = 1, temperature: float | None = None) -> dict[str, float]:
    """Mean scores of the in-context model over the cases (seed 0's sample; ``diversity``
    the blendshapes' std over ``seeds`` samples, when more than one; ``temperature`` None:
    the module's)."""
    rows = []
    for case in cases:
        runs = _in_context_runs(module, case, prompt, cfg_scale, steps, seeds, temperature)
        row = scorer(case, runs[0]["beta"], runs[0]["lip_offsets"], runs[0]["pose_features"])
        if seeds > 1:
            row["diversity"] = torch.stack([r["beta"] for r in runs]).std(0).mean().item()
        rows.append(row)
    return _mean(rows)


@torch.no_grad()
def evaluate_stage1(audio2mesh, cases: list[StyleCase], scorer: StyleScorer) -> dict[str, float]:
    """Mean scores of VividTalk's stage 1 (an ``Audio2MeshModule``: identity-conditioned, no prompt)."""
    rows = []
    for case in cases:
        z_style = audio2mesh.style_encoder(case.drive["identity"])
        pred = audio2mesh.network.generate(case.drive["features"], z_style)
        rows.append(scorer(case, pred["beta"], pred["lip_offsets"]))
    return _mean(rows)


def evaluate_style(module, cases: list[StyleCase], audio2mesh=None, sync_expert=None, cfg_scales=(0.0, 1.0, 2.0, 3.0),
                   steps=(2, 5, 10), seeds: int = 3, progress: bool = True, temperatures=()) -> dict:
    """The full report: real motion, stage 1, and the in-context model with each prompt at its
    defaults, then its same-person prompt at each ``cfg_scales``, each ``steps`` and each
    ``temperatures`` (the other two at their defaults; the temperature rows with ``seeds``
    samples for their diversity). Returns ``{"cases": n, "people": p, "rows": {name: scores}}``."""
    scorer = StyleScorer(module.face, cases, sync_expert)
    hp = module.hparams
    w0, n0, t0 = hp.cfg_scale, hp.steps, hp.temperature
    jobs = [(f"in-context, {p} prompt, w {w0:g}, {n0} steps, T {t0:g}", p, w0, n0, seeds, t0)
            for p in ("same", "other", "none")]
    jobs += [(f"in-context, same prompt, w {w:g}, {n0} steps, T {t0:g}", "same", w, n0, 1, t0)
             for w in cfg_scales if w != w0]
    jobs += [(f"in-context, same prompt, w {w0:g}, {n} steps, T {t0:g}", "same", w0, n, 1, t0) for n in steps if n != n0]
    jobs += [(f"in-context, same prompt, w {w0:g}, {n0} steps, T {t:g}", "same", w0, n0, seeds, t)
             for t in temperatures if t != t0]
    rows = {"real motion": _mean([scorer(c, c.drive["beta"], c.drive["lip_offsets"],
                                         relative_features(c.drive["pose"])) for c in cases])}
    if audio2mesh is not None:
        rows["VividTalk stage 1"] = evaluate_stage1(audio2mesh, cases, scorer)
    for name, prompt, w, n, k, t in tqdm(jobs, desc="style evaluation", disable=not progress):
        rows[name] = evaluate_in_context(module, cases, scorer, prompt, w, n, k, t)
    return {"cases": len(cases), "people": len({c.person for c in cases}), "rows": rows}


def format_rows(report: dict) -> str:
    """A Markdown table of a report's rows."""
    keys = list(dict.fromkeys(k for row in report["rows"].values() for k in row))
    lines = ["| motion | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" if k in row else "-" for k in keys) + " |")
    return "\n".join(lines)
