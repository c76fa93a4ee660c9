"""Style statistics and distance (vividtalk.eval.style) against explicit computations."""

from __future__ import annotations

import pytest
import torch

from vividtalk.eval.style import statistic_spread, style_distance, style_statistics


def test_statistics_and_distance_by_hand():
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # means (2, 1), stds (1.633, 0)
    b = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # means (1, 1), stds (0, 1)
    stats = style_statistics(a)
    assert torch.allclose(stats, torch.tensor([[2.0, 1.0], [(8 / 3) ** 0.5, 0.0]]))
    expected = (abs(2 - 1) + 0 + (8 / 3) ** 0.5 + 1) / 4
    assert style_distance(a, b).item() == pytest.approx(expected)
    scale = torch.tensor([[2.0, 1.0], [1.0, 0.5]])
    assert style_distance(a, b, scale).item() == pytest.approx((0.5 + 0 + (8 / 3) ** 0.5 + 2) / 4)
    with pytest.raises(ValueError):
        style_statistics(a[:1])


def test_a_person_is_closer_to_themself_than_to_others():
    g = torch.Generator().manual_seed(0)
    people = [(torch.rand(3, generator=g), 0.2 + torch.rand(3, generator=g)) for _ in range(5)]
    takes = [[m + s * torch.randn(200, 3, generator=g) for _ in range(2)] for m, s in people]
    scale = statistic_spread([t[0] for t in takes])
    same = torch.stack([style_distance(t[1], t[0], scale) for t in takes])
    other = torch.stack([style_distance(takes[(i + 1) % 5][1], takes[i][0], scale) for i in range(5)])
    assert (same < other).all()
