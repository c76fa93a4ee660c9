"""The personalisation directory: what ``vividtalk personalize`` writes and ``load_personalization`` reads.

::

    DIR/
        personalization.json   format version, the base it was made for (the sha256 of the base
                               stage 2's weights, its face model id, its path as given), the LoRA
                               rank / scale / adapted layers, the settings, the held-out metrics
        adapter.safetensors    ``motion_vae.*`` / ``generator.*`` LoRA tensors, ``appearance.*``
                               (the inverted appearance: ``features`` [1, C, m, m] and the
                               source image ``source`` [1, 3, H, W]), ``source.*`` (the
                               person's first frame prepared: crop, labels, mesh, identity, pose,
                               expression, lip offsets) and ``style.*`` (the style prompt: the
                               first 10 s of motion and, when the video had sound, audio)

Adapters are tied to the exact base weights they were trained on: loading onto another base
is refused (:func:`check_base`), since LoRA deltas on different weights are meaningless.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..face.crop import CropBox
from ..face.prepare import SourceFace

CONFIG, TENSORS, FORMAT_VERSION = "personalization.json", "adapter.safetensors", 1
SOURCE_FIELDS = ("crop", "masks", "vertices", "identity", "pose", "beta", "lip_offsets")
STYLE_FIELDS = ("beta", "lip_offsets", "pose")


class PersonalizationError(ValueError):
    """A personalisation directory that is missing, malformed, or made for another base pipeline."""


@dataclass
class Personalization:
    """A loaded personalisation (see the module docstring).

    Attributes:
        config: the JSON configuration.
        lora: network name -> its LoRA tensors (state-dict keys of the adapted network).
        appearance: the inverted appearance, float32 ``features`` [1, C, m, m] and ``source``
            [1, 3, H, W] in [0, 1] (stage 2's prepared-source fields they replace).
        source: the person's first frame, prepared (``image`` is the crop itself).
        style: float32 ``beta`` [P, K], ``lip_offsets`` [P, L, 3], ``pose`` [P, 7] and, when the
            video had sound, ``audio`` [P * 640] (16 kHz): the default style prompt; None: none.
    """

    config: dict
    lora: dict[str, dict[str, torch.Tensor]]
    appearance: dict[str, torch.Tensor]
    source: SourceFace
    style: dict[str, torch.Tensor] | None


def stage2_hash(stage2: torch.nn.Module) -> str:
    """sha256 of a base stage 2's weights (every state-dict tensor but the discriminator's, by
    sorted key, its dtype, shape and bytes): what an adapter is tied to."""
    digest = hashlib.sha256()
    for key, value in sorted(stage2.state_dict().items()):
        if key.startswith("discriminator.") or ".lora_" in key:
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{key.replace('.base_layer', '')}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def source_tensors(source: SourceFace) -> dict[str, torch.Tensor]:
    return {f"source.{k}": torch.from_numpy(np.ascontiguousarray(getattr(source, k))) for k in SOURCE_FIELDS}


def save_personalization(path: str | os.PathLike, config: dict, lora: dict[str, dict[str, torch.Tensor]],
                         appearance: dict[str, torch.Tensor], source: SourceFace,
                         style: dict[str, torch.Tensor] | None) -> Path:
    """Write the directory (tensors first, each file atomically; the JSON last)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"{n}.{k}": v for n, state in lora.items() for k, v in state.items()}
    tensors.update(source_tensors(source))
    tensors.update({f"appearance.{k}": v for k, v in appearance.items()})
    tensors.update({f"style.{k}": v for k, v in (style or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = path / (TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path / TENSORS)
    tmp = path / (CONFIG + ".tmp")
    tmp.write_text(json.dumps({**config, "format_version": FORMAT_VERSION}, indent=1))
    tmp.replace(path / CONFIG)
    return path


def load_personalization(path: str | os.PathLike) -> Personalization:
    """Read a directory written by :func:`save_personalization`.

    Raises:
        PersonalizationError: not such a directory, or of another format version.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / TENSORS).is_file():
        raise PersonalizationError(f"{path} is not a personalisation (needs {CONFIG} and {TENSORS}; "
                                   "make one with `vividtalk personalize --video PERSON.mp4 --output DIR`)")
    config = json.loads((path / CONFIG).read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise PersonalizationError(f"{path / CONFIG}: format_version {config.get('format_version')}, "
                                   f"this vividtalk reads {FORMAT_VERSION}")
    tensors = load_file(str(path / TENSORS))
    lora = {n: {k[len(n) + 1:]: v for k, v in tensors.items() if k.startswith(n + ".")}
            for n in config["lora"]["targets"]}
    src = {k: tensors[f"source.{k}"].numpy() for k in SOURCE_FIELDS}
    size = src["crop"].shape[0]
    source = SourceFace(image=src["crop"], box=CropBox(0.0, 0.0, float(size)), **src)
    style = {k[len("style."):]: v for k, v in tensors.items() if k.startswith("style.")} or None
    appearance = {k[len("appearance."):]: v for k, v in tensors.items() if k.startswith("appearance.")}
    return Personalization(config, lora, appearance, source, style)


def check_base(personalization: Personalization, stage2: torch.nn.Module, face_model_id: str) -> None:
    """Refuse a base whose stage 2 or face model is not the one the adapter was trained on."""
    base = personalization.config["base"]
    if base["face_model_id"] != face_model_id:
        raise PersonalizationError(f"this personalisation was made with face model {base['face_model_id']}, the "
                                   f"pipeline's is {face_model_id}")
    own = stage2_hash(stage2)
    if own != base["stage2_sha256"]:
        raise PersonalizationError(
            f"this personalisation was made for another base pipeline ({base.get('name', '?')}, stage-2 sha256 "
            f"{base['stage2_sha256'][:12]}...), this one's stage 2 is {own[:12]}...: load it onto "
            "VividTalkPipeline.from_pretrained(<that base>)")
