"""VGG-19 for the perceptual loss of stage 2, defined here, weights from a local file.

The layer layout is torchvision's ``vgg19().features`` (``features.<i>.weight`` /
``features.<i>.bias``), so the state dict of torchvision's ImageNet checkpoint
(``vgg19-dcbb9e9d.pth``, from torchvision's cache or anywhere on disk) loads as it is; its
classifier is ignored. Nothing is downloaded: without a file there are no VGG weights, and
:class:`~vividtalk.mesh2video.losses.PerceptualLoss` falls back to an L1 image pyramid.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

# torchvision's configuration "E": channels per conv, "M" for max pooling.
VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """``vgg19().features`` returning the activations relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    Args:
        weights: path of a state dict in torchvision's layout (a ``.pth`` of the whole
            model or of ``features`` only); None leaves the layers randomly initialised.
    """

    OUTPUTS = (1, 6, 11, 20, 29)  # indices of relu1_1 ... relu5_1 in ``features``

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*layers[: self.OUTPUTS[-1] + 1])  # nothing past relu5_1 is needed
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_weights(weights)
        self.requires_grad_(False).eval()

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load torchvision-layout weights; raises FileNotFoundError / ValueError naming the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG-19 weights not found: {path}. Give the path of torchvision's vgg19 checkpoint "
                "(vgg19-dcbb9e9d.pth), or none to train with the L1-pyramid fallback"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        mine = self.state_dict()
        missing = [k for k in mine if k not in wanted]
        if missing:
            raise ValueError(f"{path} is not a torchvision VGG-19 state dict: it lacks {missing[:3]}...")
        bad = [k for k in mine if wanted[k].shape != mine[k].shape]
        if bad:
            raise ValueError(f"{path}: shapes of {bad[:3]} do not match VGG-19")
        self.load_state_dict({k: wanted[k] for k in mine})

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always frozen

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Image float [B, 3, H, W] in [0, 1] -> the five activations [B, C_k, H / 2^k, W / 2^k]."""
        x = (image - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.OUTPUTS:
                out.append(x)
        return out
