"""Saved pipelines: ``config.json`` + ``model.safetensors``, and their assembly from training runs.

``config.json`` holds, per stage, the LightningModule's ``class_path`` / ``init_args`` exactly
as in the stage recipes (training-only parts removed: optimisers, the discriminator, paths of
other checkpoints and of the VGG weights) and the id of the face model the stages were trained
with; ``model.safetensors`` the stages' state dicts under ``<stage>.``. The packaged demo
weights live in ``demo/`` beside this file (see its README.md for how they were trained).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

CONFIG, WEIGHTS, FORMAT_VERSION = "config.json", "model.safetensors", 2
# Version 1: written before stage 2 had the mesh flow (its stage 2 is the paper-literal variant).
STAGES = ("audio2mesh", "pose_mapper", "mesh2video")
OPTIONAL_STAGES = ("in_context",)  # MimicTalk's in-context motion model, when a pipeline has one
_TRAINING_ONLY = ("optimizer", "optimizer_g", "optimizer_d", "lr_scheduler")
_TRAINING_MODULES = ("discriminator", "sync_expert")  # networks only a training loss uses
_CLEARED = ("vqvae_checkpoint", "vgg_weights", "sync_checkpoint") + _TRAINING_MODULES


def inference_spec(spec: dict) -> dict:
    """A stage's ``{"class_path", "init_args"}`` without what only training needs."""
    spec = copy.deepcopy(spec)
    args = spec.setdefault("init_args", {})
    for key in _TRAINING_ONLY:
        args.pop(key, None)
    for key in _CLEARED:
        if key in args:
            args[key] = None
    return spec


def build_stage(spec: dict) -> torch.nn.Module:
    """Instantiate a LightningModule (and its networks) from ``class_path`` / ``init_args``."""
    import pytorch_lightning as pl
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "model")
    cfg = parser.parse_object({"model": spec})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    return instantiate(cfg).model


def run_config(checkpoint: Path) -> dict:
    """The ``model`` section of the Lightning CLI's ``config.yaml`` of a checkpoint's run
    (``<run>/checkpoints/<name>.ckpt`` -> ``<run>/config.yaml``)."""
    import yaml

    path = checkpoint.resolve().parent.parent / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config.yaml of the run beside {checkpoint} (expected {path}); "
                                "checkpoints written by `vividtalk fit` have one")
    return yaml.safe_load(path.read_text())["model"]


def external_prefixes(module: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of submodules that load their own weights when built
    (``external_weights = True``, e.g. the Whisper encoder read from its package): a saved
    pipeline leaves them out instead of copying tens of MB of someone else's weights."""
    return tuple(name + "." for name, m in module.named_modules() if name and getattr(m, "external_weights", False))


def _load_state(module: torch.nn.Module, state: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(external_prefixes(module) or ("\0",))]
    unexpected = [k for k in unexpected if not k.startswith(tuple(m + "." for m in _TRAINING_MODULES))]
    if missing or unexpected:
        raise ValueError(f"{what} does not match its configuration: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")


def stage_from_checkpoint(path: str | Path, stage: str = "stage") -> tuple[torch.nn.Module, dict]:
    """(the inference module, its spec) of one stage's Lightning checkpoint (the run's
    ``config.yaml`` beside ``checkpoints/`` gives the networks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{stage} checkpoint not found: {path}")
    spec = inference_spec(run_config(path))
    module = build_stage(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # tensors only: no code runs
    _load_state(module, state, f"{stage} checkpoint {path}")
    return module, spec


def pipeline_from_checkpoints(cls, checkpoints: dict[str, str]):
    """A pipeline from the stages' Lightning checkpoints (see ``VividTalkPipeline.from_checkpoints``)."""
    modules, config = {}, {}
    for stage in STAGES:
        modules[stage], config[stage] = stage_from_checkpoint(checkpoints[stage], stage)
    return cls(**modules, config=config)


def save_pipeline(pipe, path: Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``pipe`` into the directory ``path``."""
    from safetensors.torch import save_file

    if not pipe.config:
        raise ValueError("this pipeline has no stage configuration to save (build it with from_checkpoints "
                         "or from_pretrained)")
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    present = STAGES + tuple(s for s in OPTIONAL_STAGES if getattr(pipe, s, None) is not None)
    for stage in present:
        skip = tuple(m + "." for m in _TRAINING_MODULES) + external_prefixes(getattr(pipe, stage))
        for key, value in getattr(pipe, stage).state_dict().items():
            if not key.startswith(skip):
                tensors[f"{stage}.{key}"] = value.detach().cpu().contiguous()
    stages = copy.deepcopy({s: pipe.config[s] for s in present})
    vae = getattr(pipe.mesh2video, "motion_vae", None)
    if _motion_vae_args(stages) is not None and vae is not None:  # explicit: not left to a default
        _motion_vae_args(stages)["mesh_flow"] = vae.uses_mesh_flow
    config = {"format_version": FORMAT_VERSION, "face_model_id": pipe.face.model_id, "stages": stages,
              "motion_model": pipe.motion_model}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path / WEIGHTS)
    (path / CONFIG).write_text(json.dumps(config, indent=1))
    return path


def _motion_vae_args(stages: dict) -> dict | None:
    """The init_args of stage 2's DualBranchMotionVAE in a pipeline config (None: another network)."""
    vae = stages.get("mesh2video", {}).get("init_args", {}).get("motion_vae", {})
    return vae.setdefault("init_args", {}) if vae.get("class_path", "").endswith("DualBranchMotionVAE") else None


def load_pipeline(cls, path: Path):
    """Read a directory written by :func:`save_pipeline`; checks the face model id."""
    from safetensors.torch import load_file

    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a saved pipeline (needs {CONFIG} and {WEIGHTS})")
    config = json.loads((path / CONFIG).read_text())
    if config.get("format_version") not in (1, FORMAT_VERSION):
        raise ValueError(f"{path / CONFIG}: format_version {config.get('format_version')}, expected {FORMAT_VERSION}")
    tensors = load_file(str(path / WEIGHTS))
    if config["format_version"] == 1 and _motion_vae_args(config["stages"]) is not None:
        _motion_vae_args(config["stages"]).setdefault("mesh_flow", False)
    modules = {}
    for stage in STAGES + tuple(s for s in OPTIONAL_STAGES if s in config["stages"]):
        modules[stage] = build_stage(config["stages"][stage])
        face = getattr(modules[stage], "face", None)  # the pose mapper has none
        if face is not None and face.model_id != config["face_model_id"]:
            raise ValueError(f"{path} was trained with face model {config['face_model_id']}, but {stage} uses "
                             f"{face.model_id}: use the face model it was trained with")
        prefix = stage + "."
        _load_state(modules[stage], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                    f"{stage} weights in {path}")
    return cls(**modules, config=config["stages"], motion_model=config.get("motion_model", "vividtalk"))
