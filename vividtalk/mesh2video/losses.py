"""Losses of stage 2: perceptual (VGG-19 on an image pyramid), feature matching, adversarial, KL.

VividTalk: "the perceptual loss L_perc based on a pretrained VGG-19 is the main driving loss;
a feature-matching loss L_fm stabilises training and gives more realistic results" (seed,
training strategy); the motion VAE adds its KL term.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import VGG19Features


FALLBACK_WARNING = (
    "the perceptual loss has no VGG-19 weights, so it is the L1 distance of an image pyramid instead of the "
    "paper's VGG-19 loss. To train with VGG-19, give the path of torchvision's ImageNet checkpoint "
    "vgg19-dcbb9e9d.pth on disk (nothing is downloaded) as vgg_weights: for stage 2, "
    "--model.init_args.vgg_weights PATH or model.init_args.vgg_weights in stages/mesh2video.yaml"
)


class PerceptualLoss(nn.Module):
    """Mean over an image pyramid of the L1 distance between VGG-19 activations.

    Without VGG weights (``vgg_weights=None``) the offline fallback is the L1 distance of the
    images themselves at each pyramid scale: a weaker but honest reconstruction loss, so that
    training works with nothing on disk. ``uses_vgg`` tells which one is active. The fallback
    is announced by one warning per instance, at its first forward: a module built only for
    inference never computes the loss and never warns.

    Args:
        vgg_weights: path of torchvision-layout VGG-19 weights (see :mod:`.vgg`), or None.
        scales: pyramid scales (1 = full resolution).
        layer_weights: weights of relu1_1 ... relu5_1.
    """

    def __init__(self, vgg_weights: str | os.PathLike | None = None, scales: tuple[float, ...] = (1.0, 0.5, 0.25),
                 layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        # Held outside the module tree: the frozen VGG (80 MB for the real weights) is read from
        # its file, so it stays out of every checkpoint and optimiser; _apply still moves it.
        self._vgg = [VGG19Features(vgg_weights)] if vgg_weights is not None else []
        self.scales, self.layer_weights = tuple(scales), tuple(layer_weights)
        self._warned = False

    @property
    def vgg(self) -> VGG19Features | None:
        return self._vgg[0] if self._vgg else None

    @property
    def uses_vgg(self) -> bool:
        return bool(self._vgg)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for vgg in self._vgg:
            vgg._apply(fn, recurse)
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Images float [B, 3, H, W] in [0, 1] -> scalar loss."""
        if self.vgg is None and not self._warned:
            self._warned = True
            warnings.warn(FALLBACK_WARNING, stacklevel=2)
        total = prediction.new_zeros(())
        for s in self.scales:
            p, t = (prediction, target) if s == 1 else (
                F.interpolate(prediction, scale_factor=s, mode="bilinear", align_corners=False, antialias=True),
                F.interpolate(target, scale_factor=s, mode="bilinear", align_corners=False, antialias=True),
            )
            if self.vgg is None:
                total = total + F.l1_loss(p, t)
                continue
            with torch.no_grad():
                t_features = self.vgg(t)
            for w, pf, tf in zip(self.layer_weights, self.vgg(p), t_features):
                total = total + w * F.l1_loss(pf, tf)
        return total / len(self.scales)


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """``L_fm``: L1 between the discriminator's intermediate features of fake and real images,
    averaged over scales and layers (the real features are constants)."""
    terms = [F.l1_loss(f, r.detach()) for fs, rs in zip(fake, real) for f, r in zip(fs[:-1], rs[:-1])]
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Least-squares GAN, generator side: mean over scales of ``(D(G) - 1)^2``."""
    return torch.stack([(scores[-1] - 1).pow(2).mean() for scores in fake]).mean()


def discriminator_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Least-squares GAN, discriminator side: ``(D(x) - 1)^2 + D(G)^2`` averaged over scales."""
    terms = [(r[-1] - 1).pow(2).mean() + f[-1].pow(2).mean() for f, r in zip(fake, real)]
    return torch.stack(terms).mean()


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent element, averaged: the motion VAE's prior term."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
