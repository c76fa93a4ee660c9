"""Identity similarity with an ArcFace model from a local file (insightface's IResNet backbones).

:class:`IResNet` has the module layout of insightface's ``arcface_torch`` backbones, so their
released state dicts (``r50`` / ``r100`` ``backbone.pth``) load as is. Faces are aligned to the
112x112 ArcFace template by a similarity transform of five MediaPipe points (eye centres, nose
tip, mouth corners); similarity is the cosine of the 512-D embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..face.pose import similarity_2d
from ..face.tracking import Closing

LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], np.float32)
"""ArcFace's 112x112 five-point template: the eyes, nose tip and mouth corners, left to right in the image."""


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the (downsampled) input."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes, eps=1e-5))
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """Aligned face [B, 3, 112, 112] (RGB scaled to [-1, 1]) -> embedding [B, num_features].

    Args:
        depth: "r18", "r34", "r50" or "r100" (blocks per stage, see :data:`LAYERS`).
        num_features: embedding size.
    """

    def __init__(self, depth: str = "r100", num_features: int = 512):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"depth must be one of {sorted(LAYERS)}, got {depth!r}")
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes, stages = 64, []
        for planes, blocks in zip((64, 128, 256, 512), LAYERS[depth]):
            stages.append(nn.Sequential(IBasicBlock(inplanes, planes, 2),
                                        *(IBasicBlock(planes, planes) for _ in range(blocks - 1))))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # [B, 64, 112, 112]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, 7, 7]
        return self.features(self.fc(self.dropout(self.bn2(x).flatten(1))))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace's five points from MediaPipe landmarks [468+, 2+]: float32 [5, 2], in template order
    (eye centres from the eye corners 33/133 and 362/263, nose tip 1, mouth corners 61 / 291)."""
    pts = np.asarray(landmarks)[:, :2]
    eyes = sorted([pts[[33, 133]].mean(0), pts[[362, 263]].mean(0)], key=lambda p: p[0])
    mouth = sorted([pts[61], pts[291]], key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], pts[1], mouth[0], mouth[1]]).astype(np.float32)


def align_face(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of an RGB uint8 image given its five points [5, 2]."""
    import cv2

    src = torch.from_numpy(points.astype(np.float64))
    if (src == src[0]).all():
        raise ValueError("could not align the face (degenerate landmarks)")
    matrix = similarity_2d(src, torch.from_numpy(TEMPLATE.astype(np.float64))).numpy()
    return cv2.warpAffine(image, matrix, (112, 112), borderValue=0)


class ArcFaceIdentity(Closing):
    """Cosine similarity of ArcFace embeddings (weights from a local file).

    Args:
        weights: an insightface ``arcface_torch`` backbone state dict (``backbone.pth``).
        depth: its IResNet depth ("r50", "r100", ...).
    """

    def __init__(self, weights: str | os.PathLike, depth: str = "r100", device: str = "cpu") -> None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"ArcFace weights not found: {path}")
        self.net = IResNet(depth)
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.eval().to(device)
        self.device = torch.device(device)
        self._tracker = None

    @torch.no_grad()
    def embed(self, faces: np.ndarray) -> torch.Tensor:
        """Unit embeddings [B, 512] of aligned 112x112 RGB uint8 faces [B, 112, 112, 3]."""
        x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float().to(self.device)
        return torch.nn.functional.normalize(self.net((x / 255.0 - 0.5) / 0.5), dim=1).cpu()

    def aligned(self, image: np.ndarray) -> np.ndarray | None:
        """The aligned face of an RGB uint8 image (MediaPipe landmarks), or None without a face."""
        from ..face.mediapipe_tracker import MediaPipeTracker
        from ..face.tracking import NoFaceError

        self._tracker = self._tracker or MediaPipeTracker(min_face_size=32)
        try:
            landmarks = self._tracker.track_image(image)
        except NoFaceError:
            return None
        return align_face(image, five_points(landmarks))

    def close(self) -> None:
        """Close the MediaPipe tracker built by :meth:`aligned` (also on leaving a ``with`` block)."""
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    def similarity(self, images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """Mean cosine similarity of frames [T, H, W, 3] to one reference image [H, W, 3]."""
        ref = self.aligned(reference)
        faces = [f for f in (self.aligned(im) for im in images) if f is not None]
        if ref is None or not faces:
            return {"arcface_similarity": float("nan"), "frames_without_face": len(images) - len(faces)}
        emb = self.embed(np.stack(faces))
        sim = emb @ self.embed(ref[None])[0]
        return {"arcface_similarity": float(sim.mean()), "frames_without_face": len(images) - len(faces)}
