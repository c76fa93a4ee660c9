"""FID (Heusel et al. 2017): the Fréchet distance between Inception features of two image sets.

The Inception network comes from a local TorchScript file with the calling convention of
NVIDIA's ``inception-2015-12-05.pt`` (used by StyleGAN2/3 and clean-fid):
``net(images uint8 [B, 3, H, W], return_features=True) -> [B, 2048]`` (resizing inside). The
distance itself, :func:`frechet_distance`, needs no weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` of two Gaussians (means [D], covariances [D, D])."""
    from scipy import linalg

    with np.errstate(all="ignore"):
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the reference code does
        eps = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D] (N >= 2)."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(0), np.cov(features, rowvar=False)


class InceptionFeatures:
    """Images -> 2048-D Inception features, from a local TorchScript file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", batch_size: int = 32) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found: {path}")
        self.net = torch.jit.load(str(path), map_location=device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 [N, H, W, 3] -> float64 [N, 2048]."""
        out = []
        for s in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.batch_size])).permute(0, 3, 1, 2)
            out.append(self.net(x.to(self.device), return_features=True).double().cpu().numpy())
        return np.concatenate(out)


def fid(images: np.ndarray, references: np.ndarray, features: InceptionFeatures) -> float:
    """FID between two sets of RGB uint8 images [N, H, W, 3]."""
    return frechet_distance(*feature_statistics(features(images)), *feature_statistics(features(references)))
