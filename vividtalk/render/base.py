"""The rasterizer protocol shared by every backend, and backend selection.

Conventions follow nvdiffrast exactly, so that the pure-PyTorch backend and the nvdiffrast
backend are interchangeable (docs/architecture.md, "Stage 2"):

- ``rasterize(pos, tri, resolution) -> rast``: ``pos`` float32 [B, V, 4] clip-space
  (x, y, z, w); ``tri`` int32/int64 [F, 3]; ``resolution`` (H, W). ``rast`` float32
  [B, H, W, 4] holds (u, v, z/w, triangle_id), triangle_id = triangle index + 1 (0 = empty).
  An attribute interpolates as ``a = u * a0 + v * a1 + (1 - u - v) * a2`` (perspective
  correct). Row i, column j has its centre at NDC x = 2 (j + 0.5) / W - 1,
  y = 2 (i + 0.5) / H - 1, so row 0 is y = -1.
- ``interpolate(attr, rast, tri) -> out``: ``attr`` float32 [B, V, C] or [V, C];
  ``out`` float32 [B, H, W, C], zero on empty pixels.
- Depth test: the smallest z/w wins. Pixels whose z/w is outside [-1, 1] are not drawn.
  The torch backend skips triangles with a vertex at w <= 0 (nvdiffrast clips them as
  polygons): keep meshes in front of the camera, as face meshes are.
"""

from __future__ import annotations

import importlib
from typing import Protocol, Sequence, runtime_checkable

import torch

BACKENDS = ("auto", "torch", "nvdiffrast")


@runtime_checkable
class Rasterizer(Protocol):
    """A triangle rasterizer with nvdiffrast's conventions (see the module docstring)."""

    name: str

    def rasterize(
        self, pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int]
    ) -> torch.Tensor:
        """Rasterize ``pos`` [B, V, 4] float32 / ``tri`` [F, 3] int -> rast [B, H, W, 4]."""
        ...

    def interpolate(
        self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor
    ) -> torch.Tensor:
        """Interpolate ``attr`` [B, V, C] or [V, C] over ``rast`` -> [B, H, W, C]."""
        ...


def nvdiffrast_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why the nvdiffrast backend cannot be used on ``device``, or None when it can.

    ``device`` None means "the default CUDA device, if any".
    """
    try:
        importlib.import_module("nvdiffrast.torch")
    except (ImportError, OSError, RuntimeError) as exc:  # a broken CUDA install raises OSError
        return (
            f"nvdiffrast.torch cannot be imported ({exc}); install it with "
            "`pip install vividtalk[gpu]` (PyPI package diffrp-nvdiffrast, CUDA only)"
        )
    if not torch.cuda.is_available():
        return "nvdiffrast needs a CUDA device and torch.cuda.is_available() is False"
    if device is not None and torch.device(device).type != "cuda":
        return f"nvdiffrast needs a CUDA device, got device={device!s}"
    return None


def get_rasterizer(name: str = "auto", device: torch.device | str | None = None) -> Rasterizer:
    """Return a rasterizer backend.

    Args:
        name: "torch" (pure PyTorch, CPU or GPU), "nvdiffrast" (CUDA only) or "auto", which
            picks nvdiffrast when ``nvdiffrast.torch`` imports and ``device`` is a CUDA
            device, else torch. With ``device=None`` "auto" picks torch.
        device: the device the tensors will live on (only used for the choice).

    Raises:
        ValueError: unknown ``name``.
        RuntimeError: ``name="nvdiffrast"`` but nvdiffrast cannot be used (the message says why).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown rasterizer {name!r}; valid names: {', '.join(BACKENDS)}")
    # Imported here: the backends import this module for the protocol.
    from vividtalk.render.nvdiffrast_backend import NvdiffrastRasterizer
    from vividtalk.render.torch_backend import TorchRasterizer

    if name == "torch":
        return TorchRasterizer()
    if name == "nvdiffrast":
        reason = nvdiffrast_unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"the nvdiffrast rasterizer is unavailable: {reason}")
        return NvdiffrastRasterizer()
    is_cuda = device is not None and torch.device(device).type == "cuda"
    if is_cuda and nvdiffrast_unavailable_reason(device) is None:
        return NvdiffrastRasterizer()
    return TorchRasterizer()
