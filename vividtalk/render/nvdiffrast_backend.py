"""nvdiffrast backend (CUDA only): a thin wrapper with the ``Rasterizer`` protocol.

``nvdiffrast.torch`` (PyPI: ``diffrp-nvdiffrast``, ``pip install vividtalk[gpu]``) is imported
lazily, on first use, so that importing ``vividtalk.render`` never needs it.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import torch


def _nvdiffrast():
    """The ``nvdiffrast.torch`` module, or a RuntimeError saying how to install it."""
    try:
        return importlib.import_module("nvdiffrast.torch")
    except (ImportError, OSError, RuntimeError) as exc:
        raise RuntimeError(
            "the nvdiffrast backend needs nvdiffrast.torch: `pip install vividtalk[gpu]` "
            f"(PyPI package diffrp-nvdiffrast) on a CUDA machine ({exc})"
        ) from exc


def _check_cuda(tensor: torch.Tensor, what: str) -> None:
    """Raise a ValueError unless ``tensor`` lives on a CUDA device."""
    if tensor.device.type != "cuda":
        raise ValueError(
            f"NvdiffrastRasterizer needs CUDA tensors, got {what} on {tensor.device}; "
            "use the 'torch' rasterizer on CPU"
        )


class NvdiffrastRasterizer:
    """Rasterizer backed by ``nvdiffrast.torch`` (``RasterizeCudaContext``, no OpenGL).

    One context is created lazily per CUDA device and cached on the instance.
    Conventions: see ``vividtalk.render.base`` (they are nvdiffrast's own).
    """

    name = "nvdiffrast"

    def __init__(self) -> None:
        self._contexts: dict[torch.device, object] = {}

    def _context(self, device: torch.device):
        """The cached ``RasterizeCudaContext`` for ``device``."""
        if device not in self._contexts:
            self._contexts[device] = _nvdiffrast().RasterizeCudaContext(device=device)
        return self._contexts[device]

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor,
                  resolution: Sequence[int]) -> torch.Tensor:
        """Rasterize triangles.

        Args:
            pos: float32 [B, V, 4] clip-space (x, y, z, w), on a CUDA device.
            tri: int32/int64 [F, 3] (converted to contiguous int32 on ``pos.device``).
            resolution: (H, W).

        Returns:
            rast: float32 [B, H, W, 4] (u, v, z/w, triangle_id) on ``pos.device``.
        """
        _check_cuda(pos, "pos")
        if pos.dim() != 3 or pos.shape[-1] != 4:
            raise ValueError(f"pos must be [B, V, 4], got {tuple(pos.shape)}")
        tri = tri.to(device=pos.device, dtype=torch.int32).contiguous()
        ctx = self._context(pos.device)
        resolution = [int(resolution[0]), int(resolution[1])]
        rast, _ = _nvdiffrast().rasterize(ctx, pos.float().contiguous(), tri, resolution)
        return rast

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor,
                    tri: torch.Tensor) -> torch.Tensor:
        """Interpolate vertex attributes.

        Args:
            attr: float32 [B, V, C], [1, V, C] or [V, C] on the CUDA device of ``rast``.
            rast: float32 [B, H, W, 4] from ``rasterize``.
            tri: int32/int64 [F, 3].

        Returns:
            float32 [B, H, W, C], zero on empty pixels.
        """
        _check_cuda(rast, "rast")
        if attr.dim() == 3 and attr.shape[0] == 1:
            attr = attr[0]  # nvdiffrast broadcasts a [V, C] attribute over the batch
        tri = tri.to(device=rast.device, dtype=torch.int32).contiguous()
        out, _ = _nvdiffrast().interpolate(attr.float().contiguous(), rast, tri)
        return out
