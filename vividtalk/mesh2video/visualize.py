"""Pictures of stage 2's intermediate maps (training grids, notebooks)."""

from __future__ import annotations

import numpy as np
import torch


def flow_to_rgb(flow: torch.Tensor, gain: float = 2.0) -> torch.Tensor:
    """Dense motion as colour: float [B, 2, H, W] (normalised offsets) -> [B, 3, H, W] in [0, 1].

    Red is the x offset and green the y offset around mid-grey (0.5 = no motion), blue stays
    0.5; ``gain`` scales the offsets (2: a shift of a quarter image saturates).
    """
    return torch.cat([0.5 + gain * flow, torch.full_like(flow[:, :1], 0.5)], dim=1).clamp(0, 1)


def frames_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] (any device) -> RGB uint8 [B, H, W, 3], rounded."""
    return (images.detach().clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).cpu().numpy()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float [3, H, W] or [1, H, W] in [0, 1] -> RGB uint8 [H, W, 3] (grey for one channel)."""
    return frames_uint8(image.float().expand(3, -1, -1)[None])[0]
