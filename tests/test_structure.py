"""The package's structure (docs/architecture.md, "Layout and dependency direction"): imports
only point down the layers, no two modules import each other (directly or round a loop), and
every module imports on its own, first, in any order."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layers, lowest first; a module may import its own layer's modules and those below. The most
# specific prefix decides (``vividtalk.eval`` before ``vividtalk``).
LAYERS = [
    ("vividtalk.audio", "vividtalk.render", "vividtalk.stages", "vividtalk.command"),
    ("vividtalk.face",),
    ("vividtalk.data",),
    ("vividtalk.eval",),
    ("vividtalk.audio2mesh", "vividtalk.mesh2video"),
    ("vividtalk.motion", "vividtalk.pretrained", "vividtalk.pipeline", "vividtalk.renderer_eval",
     "vividtalk.speech_eval", "vividtalk.personalization", "vividtalk"),
    ("vividtalk.benchmarks", "data_prep", "vividtalk.server"),
    ("vividtalk.cli",),
]


def module_files() -> dict[str, Path]:
    """Dotted name -> file of every module of vividtalk and data_prep (packages by __init__)."""
    out = {}
    for top in ("vividtalk", "data_prep"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # an attribute of a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = module_files()
    return {name: imported(name, path, known) for name, path in known.items()}


def layer(name: str) -> int:
    matches = [(len(prefix), rank) for rank, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return max(matches)[1]


def test_the_walk_sees_the_imports():
    edges = graph()
    assert "vividtalk.face.prepare" in edges["vividtalk.pipeline"]
    assert "vividtalk.face.tracking" in edges["vividtalk.face.fan_tracker"]
    assert "vividtalk.audio.align" in edges["data_prep.synth.speech"]
    assert "vividtalk.stages" in edges["vividtalk.benchmarks.mesh2video"]  # `from .. import stages`
    assert len(edges) > 80


def test_imports_only_point_down():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (loop := visit(nxt)):
                return loop
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (loop := visit(start)):
            return loop
    return None


def test_find_cycle_finds_a_loop_and_only_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    loop = find_cycle(graph())
    assert loop is None, " -> ".join(loop)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_module_imports_first_in_any_order(seed):
    """Each order imports every module in a fresh interpreter; a module that works only after
    another was imported fails in some order."""
    names = sorted(module_files())
    random.Random(seed).shuffle(names)
    code = "import importlib\nfor name in %r:\n    importlib.import_module(name)\n" % names
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
