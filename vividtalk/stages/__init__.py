"""The training recipes: Lightning CLI configs, shipped with the package.

``vividtalk fit --config stages/<stage>.yaml [--config stages/cpu/<stage>.yaml]`` trains a stage
(stages/README.md); later files overlay earlier ones as jsonargparse merges
them. :func:`model_args` does that merge for the ``model`` section so that code (the
benchmarks) builds networks of exactly a recipe's size, and :func:`build` instantiates one
``{class_path, init_args}`` entry.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import yaml

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_path(name: str) -> Path:
    """The file of a recipe, e.g. ``"audio2mesh.yaml"`` or ``"cpu/audio2mesh.yaml"``."""
    path = RECIPES_DIR / name
    if not path.is_file():
        known = sorted(str(p.relative_to(RECIPES_DIR)) for p in RECIPES_DIR.rglob("*.yaml"))
        raise FileNotFoundError(f"no recipe {name!r}; the recipes are {', '.join(known)}")
    return path


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` on top of ``base``: nested dicts merge key by key; an entry whose
    ``class_path`` changes is replaced whole (the old class's ``init_args`` do not carry over)."""
    if "class_path" in overlay and overlay["class_path"] != base.get("class_path", overlay["class_path"]):
        return copy.deepcopy(overlay)
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_args(*names: str) -> dict:
    """The ``model.init_args`` of recipes ``names`` merged in order (base first, overlays after)."""
    merged: dict = {}
    for name in names:
        merged = merge(merged, yaml.safe_load(recipe_path(name).read_text()).get("model", {}))
    return merged.get("init_args", {})


def build(spec: dict, **overrides):
    """Instantiate a ``{class_path, init_args}`` entry, ``overrides`` replacing init args."""
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**spec.get("init_args", {}), **overrides})
