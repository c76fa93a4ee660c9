"""Rasterization: one protocol (nvdiffrast's conventions), two backends.

- ``TorchRasterizer``: pure PyTorch, CPU or GPU, differentiable w.r.t. vertex positions
  (barycentric gradients, no antialiasing) and attributes.
- ``NvdiffrastRasterizer``: ``nvdiffrast.torch`` on CUDA (``pip install vividtalk[gpu]``).

``get_rasterizer("auto", device)`` picks nvdiffrast on CUDA when it is installed, else torch.
"""

from vividtalk.render.base import Rasterizer, get_rasterizer, nvdiffrast_unavailable_reason
from vividtalk.render.nvdiffrast_backend import NvdiffrastRasterizer
from vividtalk.render.shading import image_to_clip, render_attributes
from vividtalk.render.torch_backend import TorchRasterizer

__all__ = [
    "NvdiffrastRasterizer",
    "Rasterizer",
    "TorchRasterizer",
    "get_rasterizer",
    "image_to_clip",
    "nvdiffrast_unavailable_reason",
    "render_attributes",
]
