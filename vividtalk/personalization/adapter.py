"""Stage 2 adapted to one person: LoRA on its networks (dynamic) and the inverted source appearance (static).

MimicTalk's static-dynamic hybrid adaptation (seed, "Static-Dynamic-Hybrid Identity
Adaptation") inverts the person's canonical appearance (their tri-plane) and adds LoRA for their
dynamics. The warping renderer's analogue of the tri-plane is what it takes from its source: the
source image that the flow warps, ``source`` [1, 3, H, W], and the generator's encoding of it,
``features`` [1, C, m, m], which paints whatever the warp cannot show (the inside of the mouth,
teeth, folds). :class:`PersonAdapter` makes both parameters, initialised from the person's
first frame (so the warped pixels can lose the first frame's passing expression and lighting,
and the features learn the mouth interior), and adds LoRA
(:mod:`vividtalk.mesh2video.lora`) of rank R to every convolution and linear layer of the motion
VAE and of the generator, except the generator's encoder: with the appearance inverted the
encoder no longer runs on the person's source, so an adapter there would never be trained.
"""

from __future__ import annotations

import torch
from torch import nn

from ..mesh2video.lora import add_lora, lora_state, merge_lora
from ..mesh2video.module import Mesh2VideoModule

EXCLUDED = {"motion_vae": (), "generator": ("encoder",)}
"""Module-name prefixes of each network left without an adapter (see the module docstring)."""
NETWORKS = tuple(EXCLUDED)
STATIC = ("features", "source")
"""The prepared-source fields that a personalisation inverts (its appearance)."""


class PersonAdapter(nn.Module):
    """The trainable part of a personalisation, over a frozen base stage 2 (adapted in place).

    Args:
        stage2: the base :class:`~vividtalk.mesh2video.module.Mesh2VideoModule`; its motion VAE
            and generator get LoRA layers (in place) and all its own weights are frozen.
        prepared: :meth:`Mesh2VideoModule.prepare_source` of the person's source frame (batch 1);
            its ``features`` initialise the appearance.
        rank: the LoRA rank r; alpha: the LoRA scale numerator (None: r).
    """

    def __init__(self, stage2: Mesh2VideoModule, prepared: dict, rank: int = 4, alpha: float | None = None) -> None:
        super().__init__()
        stage2.requires_grad_(False)
        self.targets = add_adapters(stage2, rank, alpha)
        self.rank, self.alpha = rank, float(rank if alpha is None else alpha)
        self._stage2 = [stage2]  # not a submodule: its base weights are not the adapter's
        self.prepared = {k: v for k, v in prepared.items() if k not in STATIC}
        self.features = nn.Parameter(prepared["features"].detach().clone())  # [1, C, m, m]
        self.reference = nn.Parameter(prepared["source"].detach().clone())  # [1, 3, H, W] in [0, 1]

    @property
    def stage2(self) -> Mesh2VideoModule:
        return self._stage2[0]

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n in NETWORKS for p in getattr(self.stage2, n).parameters() if p.requires_grad]

    def static(self) -> dict[str, torch.Tensor]:
        """The inverted appearance as :meth:`Mesh2VideoModule.prepare_source` fields: ``features``
        [1, C, m, m] and ``source`` [1, 3, H, W] (clamped to [0, 1])."""
        return {"features": self.features, "source": self.reference.clamp(0.0, 1.0)}

    def forward(self, driving_vertices: torch.Tensor, driving_lips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames of the person's source driven by meshes [B, V, 3] and lips [B, N, 2] (crop
        pixels): :meth:`Mesh2VideoModule.animate`'s outputs (``image`` [B, 3, H, W] in [0, 1], ...)."""
        return self.stage2.animate({**self.prepared, **self.static()}, driving_vertices, driving_lips, sample=False)

    def state(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors as trained (what a checkpoint resumes from): ``<network>.<lora
        key>``, ``appearance.features`` and ``appearance.source`` (not yet clamped)."""
        out = {f"{n}.{k}": v for n in NETWORKS for k, v in lora_state(getattr(self.stage2, n)).items()}
        return {**out, "appearance.features": self.features.detach(), "appearance.source": self.reference.detach()}


def add_adapters(stage2: Mesh2VideoModule, rank: int, alpha: float | None = None) -> dict[str, list[str]]:
    """LoRA layers on stage 2's adapted networks (in place; :data:`EXCLUDED` left out): network
    name -> the adapted module names."""
    return {n: add_lora(getattr(stage2, n), rank, alpha, EXCLUDED[n]) for n in NETWORKS}


def split_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """:meth:`PersonAdapter.state` -> per-network LoRA tensors (the appearance left out)."""
    return {n: {k[len(n) + 1:]: v for k, v in state.items() if k.startswith(n + ".")} for n in NETWORKS}


def merge_adapters(stage2: Mesh2VideoModule) -> None:
    """Fold the LoRA layers of a personalised stage 2 into its base weights (frames unchanged
    within float tolerance, rendered as fast as the base's)."""
    for n in NETWORKS:
        merge_lora(getattr(stage2, n))
