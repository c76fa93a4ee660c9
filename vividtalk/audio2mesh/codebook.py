"""The discrete head-pose codebook ``Z`` of VividTalk's learnable head-pose codebook.

Nearest-neighbour quantisation ``Z_q = q(z) = argmin_{z_k in Z} ||z - z_k||`` with the
straight-through gradient estimator, the codebook and commitment terms of ``L_rec``
(``||sg(E(P)) - z_q||^2`` and ``||sg(z_q) - E(P)||^2``), the perplexity of code usage and
dead-code re-initialisation: an exponential moving average (EMA) of each code's share of the
assignments is kept while training, and a code whose share falls below
``dead_code_threshold / num_codes`` (a fraction of the uniform share) is moved onto a random
encoder output of the current batch, so that the whole codebook gets used. By default
the search runs on the unit sphere (``normalize_codes``): ``argmin ||z/|z| - z_k/|z_k|||``.

Under ``torch.distributed`` the assignment counts are summed over ranks and the replacement
vectors are broadcast from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of a code histogram counts [K] (>= 0): 1 when one code is used,
    K when all are used equally."""
    probs = counts / counts.sum()
    return torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())


def nearest_codes(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean distance) for every vector.

    Args:
        z: [N, D] float vectors.
        codes: [K, D] float code vectors, same device.
    Returns:
        [N] int64 indices into ``codes`` (ties go to the lowest index).
    """
    dist2 = (
        z.pow(2).sum(-1, keepdim=True)  # [N, 1]
        - 2.0 * z @ codes.t()  # [N, K]
        + codes.pow(2).sum(-1)[None]  # [1, K]
    )
    return dist2.argmin(dim=-1)


class Codebook(nn.Module):
    """Learned codebook ``Z`` [num_codes, dim] with straight-through quantisation.

    Args:
        num_codes: number of codes K.
        dim: size of a code (the encoder's ``code_dim``).
        dead_code_threshold: a code is dead when its EMA share of the assignments falls below
            ``dead_code_threshold / num_codes``; 0 disables re-initialisation.
        usage_decay: EMA decay of the usage shares per training step; together with the
            threshold it sets how long a code may stay unused (about
            ``log(threshold) / log(decay)`` steps, 298 with the defaults).
        normalize_codes: quantise on the unit sphere: inputs and codes are L2-normalised
            before the nearest-neighbour search and the losses (the cosine codebook of
            ViT-VQGAN). It keeps the encoder from drifting away from the codebook, which
            makes the codebook loss small and stable; False gives the plain VQ-VAE.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        dead_code_threshold: float = 0.05,
        usage_decay: float = 0.99,
        normalize_codes: bool = True,
    ):
        super().__init__()
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay}")
        self.num_codes, self.dim = num_codes, dim
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.normalize_codes = normalize_codes
        self.weight = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))  # [K] EMA shares

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [...] int64 -> code vectors [..., dim] (differentiable w.r.t. codes)."""
        return F.embedding(indices, self.codes())

    def codes(self) -> torch.Tensor:
        """The code vectors [K, dim] used for quantisation (unit length with ``normalize_codes``)."""
        return F.normalize(self.weight, dim=-1) if self.normalize_codes else self.weight

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Vectors [..., dim] as the search sees them (unit length with ``normalize_codes``)."""
        return F.normalize(z, dim=-1) if self.normalize_codes else z

    def forward(self, z: torch.Tensor, update: bool | None = None) -> dict[str, torch.Tensor]:
        """Quantise encoder outputs.

        Args:
            z: [..., dim] float encoder outputs ``z_e`` (or mapper outputs ``Z^``); with
                ``normalize_codes`` they are L2-normalised first, and ``z_q`` and both losses
                refer to the normalised vectors.
            update: re-initialise dead codes before quantising and update the usage EMA
                after; defaults to ``self.training``. Pass False for a frozen codebook.
        Returns:
            dict with ``indices`` [...] int64, ``quantized`` [..., dim] the selected codes
            (gradients flow to the codebook), ``z_q`` [..., dim] the straight-through output
            ``z + sg(quantized - z)`` (gradients flow to ``z``), ``codebook_loss`` and
            ``commitment_loss`` (scalar mean squared errors ``|sg(z) - q|^2`` and
            ``|z - sg(q)|^2``), ``perplexity`` (scalar, exp of the entropy of this batch's
            code histogram) and ``codes_used`` (scalar int64, distinct codes in the batch).
        """
        z = self.project(z)
        flat = z.reshape(-1, self.dim)  # [N, D]
        update = self.training if update is None else update
        if update:
            self._reset_dead_codes(flat.detach())
        with torch.no_grad():
            indices = nearest_codes(flat, self.codes())  # [N]
            counts = torch.bincount(indices, minlength=self.num_codes).to(flat.dtype)  # [K]
            if update:
                self._update_usage(counts.clone())
        quantized = self.lookup(indices).view_as(z)  # [..., D]
        return {
            "indices": indices.view(z.shape[:-1]),
            "quantized": quantized,
            "z_q": z + (quantized - z).detach(),
            "codebook_loss": F.mse_loss(quantized, z.detach()),
            "commitment_loss": F.mse_loss(z, quantized.detach()),
            "perplexity": perplexity(counts),
            "codes_used": (counts > 0).sum(),
        }

    @torch.no_grad()
    def _update_usage(self, counts: torch.Tensor) -> None:
        """EMA of each code's share of the assignments; ``counts`` [K] of this step."""
        if _distributed():
            dist.all_reduce(counts)
        share = counts / counts.sum().clamp_min(1.0)  # [K]
        self.usage.mul_(self.usage_decay).add_(share.to(self.usage.dtype), alpha=1.0 - self.usage_decay)

    @torch.no_grad()
    def _reset_dead_codes(self, flat: torch.Tensor) -> int:
        """Move dead codes onto random rows of ``flat`` [N, D]; returns how many moved."""
        if self.dead_code_threshold <= 0:
            return 0
        dead = (self.usage < self.dead_code_threshold / self.num_codes).nonzero().squeeze(-1)  # [M]
        if dead.numel() == 0:
            return 0
        n, m = flat.shape[0], dead.numel()
        pick = torch.randperm(n, device=flat.device)[:m] if n >= m else torch.randint(n, (m,), device=flat.device)
        spread = flat.std(0, unbiased=False).mean().clamp_min(1e-6)
        fresh = flat[pick] + 1e-3 * spread * torch.randn(m, self.dim, device=flat.device, dtype=flat.dtype)
        if _distributed():
            dist.broadcast(fresh, src=0)
        self.weight.data[dead] = fresh.to(self.weight.dtype)
        self.usage[dead] = 1.0 / self.num_codes  # a fresh grace period
        return m
