"""The warping generator of stage 2: reference image + dense motion -> the driven frame.

"The reference image is warped by the predicted dense motion; the warped image, together with
the occlusion map, is the input of the generator, which synthesises the final video frame by
frame" (seed, Mesh-To-Video). As in first-order-model, the warp acts on the encoded
reference: features at the motion resolution are warped by the flow, weighted by the
occlusion map, refined by residual blocks and decoded into a painted frame. The output keeps
the warped reference pixels where the occlusion map says they are visible and the painted
frame where they are not (e.g. the inside of an opening mouth):

    image = O * warp(reference, flow) + (1 - O) * painted

so the fine texture of the reference survives the warp without passing through the
low-resolution features, and zero flow with full visibility returns the reference exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, ResBlock, resize_bilinear, warp


class WarpingGenerator(nn.Module):
    """(reference [B, 3, H, W], flow, occlusion) -> frame [B, 3, H, W] in [0, 1].

    For speed the heavy convolutions run at the motion resolution: the reference enters by
    pixel-unshuffling (``(H / m)^2`` pixels become channels) and the frame leaves through
    2x pixel-shuffles of light convolutions whose channels halve, the last one painting RGB.

    Args:
        image_size: H = W of the frames.
        motion_size: side of the flow / occlusion maps; the features are warped at this size.
        channels: feature channels at the motion resolution.
        num_res_blocks: residual blocks before the warp and after it (each).
        refine_channels: channels after the first 2x pixel-shuffle (halved at every further one).
    """

    def __init__(self, image_size: int = 256, motion_size: int = 64, channels: int = 32, num_res_blocks: int = 1,
                 refine_channels: int = 16):
        super().__init__()
        if motion_size <= 0 or image_size % motion_size:
            raise ValueError(f"image_size must be a multiple of motion_size, got {image_size} / {motion_size}")
        r = image_size // motion_size
        if r & (r - 1):
            raise ValueError(f"image_size / motion_size must be a power of two, got {r}")
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(r), ConvBlock(3 * r * r, channels), *(ResBlock(channels) for _ in range(num_res_blocks))
        )  # [B, C, m, m]
        up: list[nn.Module] = [ResBlock(channels) for _ in range(num_res_blocks)]
        c_in, levels = channels, r.bit_length() - 1
        for k in range(levels - 1):  # each doubles the resolution
            c_out = max(4, refine_channels >> k)
            up += [ConvBlock(c_in, 4 * c_out), nn.PixelShuffle(2)]
            c_in = c_out
        self.decoder = nn.Sequential(*up)  # [B, c_in, 2 H / r, 2 W / r]
        # The last doubling paints the RGB sub-pixels directly: a convolution at full
        # resolution with 3 output channels is among the slowest layers on a CPU.
        self.out = (nn.Sequential(nn.Conv2d(c_in, 12, 3, padding=1), nn.PixelShuffle(2)) if levels
                    else nn.Conv2d(c_in, 3, 3, padding=1))  # [B, 3, H, W]

    def encode(self, reference: torch.Tensor) -> torch.Tensor:
        """The reference's features [B, C, m, m]; constant over a video, so computed once per source."""
        return self.encoder(reference)

    def forward(self, reference: torch.Tensor, flow: torch.Tensor, occlusion: torch.Tensor,
                features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Args:
            reference: float [B, 3, H, W] in [0, 1], the source frame.
            flow: [B, 2, m, m] normalised offsets; occlusion: [B, 1, m, m] in [0, 1].
            features: :meth:`encode` of the reference, when already at hand (None: encoded here).
        Returns:
            dict with ``image`` [B, 3, H, W] in [0, 1], ``warped`` [B, 3, H, W] (the reference
            warped by the flow) and ``painted`` [B, 3, H, W] (the decoded features).
        """
        features = self.encode(reference) if features is None else features  # [B, C, m, m]
        features = warp(features, flow) * occlusion
        painted = torch.sigmoid(self.out(self.decoder(features)))  # [B, 3, H, W]
        warped = warp(reference, flow)  # [B, 3, H, W]
        visible = resize_bilinear(occlusion, tuple(reference.shape[-2:]))
        return {"image": visible * warped + (1.0 - visible) * painted, "warped": warped, "painted": painted}
