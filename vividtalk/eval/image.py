"""Image-quality metrics on a region: PSNR and SSIM (Wang et al. 2004, Gaussian window).

Both take float images [B, 3, H, W] in [0, 1] and an optional region mask [B, 1, H, W]
(e.g. the face), and return one value per image [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak 1) over the masked pixels: float [B]."""
    err = (prediction - target).pow(2)  # [B, 3, H, W]
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        weight = mask.expand_as(err)
        mse = (err * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # [C, 1, k, k]


def ssim_map(prediction: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM averaged over channels, float [B, 1, H - window + 1, W - window + 1]
    (valid positions only, as scikit-image's ``structural_similarity(gaussian_weights=True)``)."""
    c1, c2 = 0.01**2, 0.03**2
    k = _gaussian_window(window, sigma, prediction.shape[1], prediction.device, prediction.dtype)
    groups = prediction.shape[1]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, k, groups=groups)

    mu_x, mu_y = blur(prediction), blur(target)
    # Unbiased local (co)variances, as scikit-image computes them.
    n = window * window
    cov = n / (n - 1)
    var_x = cov * (blur(prediction * prediction) - mu_x**2)
    var_y = cov * (blur(target * target) - mu_y**2)
    cov_xy = cov * (blur(prediction * target) - mu_x * mu_y)
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(1, keepdim=True)


def ssim(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM over the masked pixels (the mask is cropped to the valid positions): float [B]."""
    s = ssim_map(prediction, target, window, sigma)  # [B, 1, h, w]
    if mask is None:
        return s.flatten(1).mean(1)
    pad = (window - 1) // 2
    m = mask[..., pad : pad + s.shape[-2], pad : pad + s.shape[-1]].to(s.dtype)
    return (s * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
