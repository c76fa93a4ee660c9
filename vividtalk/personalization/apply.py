"""Applying a saved personalisation to a base stage 2 (``VividTalkPipeline.load_personalization``)."""

from __future__ import annotations

import os

from ..mesh2video.lora import load_lora_state
from .adapter import NETWORKS, add_adapters, merge_adapters
from .store import Personalization, PersonalizationError, check_base, load_personalization


def apply_personalization(stage2, face, path: str | os.PathLike, merge: bool = False) -> Personalization:
    """Read ``path``, check it was made for this base (refused otherwise, nothing changed), add
    the LoRA layers to ``stage2`` (in place) with the saved tensors, and merge them into the
    base weights when ``merge``. Returns the personalisation (its appearance on stage 2's device)."""
    personalization = load_personalization(path)
    check_base(personalization, stage2, face.model_id)
    lora = personalization.config["lora"]
    targets = add_adapters(stage2, lora["rank"], lora["alpha"])
    for name in NETWORKS:
        if targets[name] != lora["targets"][name]:
            raise PersonalizationError(f"{path}: the adapted layers of {name} differ from this base's")
        load_lora_state(getattr(stage2, name), personalization.lora[name])
    if merge:
        merge_adapters(stage2)
    stage2.eval()
    personalization.appearance = {k: v.to(stage2.device) for k, v in personalization.appearance.items()}
    return personalization
