"""Speaking-style similarity of generated motion to a person's real motion (issue 13).

A person's style, as the in-context model should imitate it, is summarised per channel of the
motion (blendshape coefficients, head-pose features): the temporal mean (how far the mouth
opens, how much they smile on average) and standard deviation (how much it moves). The style
distance between two motions is the mean absolute difference of those statistics over the
channels, each channel's difference divided by the spread of that statistic over a reference
set (so channels that barely vary across people do not dominate and none is ignored).
"""

from __future__ import annotations

import torch


def style_statistics(motion: torch.Tensor) -> torch.Tensor:
    """Per-channel temporal mean and std of motion [..., T, C] -> [..., 2, C] (mean, std)."""
    if motion.shape[-2] < 2:
        raise ValueError("style statistics need at least 2 frames")
    return torch.stack([motion.mean(-2), motion.std(-2, unbiased=False)], -2)


def style_distance(generated: torch.Tensor, real: torch.Tensor, scale: torch.Tensor | None = None,
                   min_scale: float = 1e-3) -> torch.Tensor:
    """Mean |difference| of the style statistics of two motions [..., T, C] (any lengths T).

    Args:
        scale: [2, C] per-statistic spread to divide by (e.g. :func:`statistic_spread` of the
            real motions of many people); None: 1. min_scale: its floor (a channel no one moves
            must not blow up the distance).
    Returns:
        [...] distances (0: the same style).
    """
    diff = (style_statistics(generated) - style_statistics(real)).abs()  # [..., 2, C]
    if scale is not None:
        diff = diff / scale.clamp_min(min_scale)
    return diff.mean((-2, -1))


def statistic_spread(motions: list[torch.Tensor]) -> torch.Tensor:
    """Std over people of each style statistic, [2, C], from one motion [T_i, C] per person."""
    stats = torch.stack([style_statistics(m) for m in motions])  # [N, 2, C]
    return stats.std(0, unbiased=False)
