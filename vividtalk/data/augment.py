"""Augmentation of stage-2 training pairs: one random transform applied alike to the source and
the driving frame of a pair (they are two frames of one video: same camera, same person).

Geometric: a horizontal flip that keeps the mesh's semantics (vertex i of the flipped mesh is
the mirror image of vertex ``mirror[i]``, so the left eye stays the left eye and the NCC
texture stays a face texture) and a crop jitter (scale and shift, reflection at the border);
the meshes, lip landmarks and label masks follow. Photometric: brightness, contrast, gamma
and saturation jitter, grayscale, Gaussian blur and JPEG artefacts.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..face.model import FaceModel

SIDES = ("source", "driving")


def mirror_indices(face: FaceModel) -> np.ndarray:
    """int64 [V]: for each vertex, the vertex nearest to its mirror image in the mean shape
    (mirrored about the mean shape's vertical symmetry plane)."""
    mean = face.mean.cpu().numpy().astype(np.float64)
    mirrored = mean.copy()
    mirrored[:, 0] = 2.0 * np.median(mean[:, 0]) - mean[:, 0]
    d = ((mirrored[:, None, :] - mean[None, :, :]) ** 2).sum(-1)  # [V, V]
    return d.argmin(1)


class PairAugment:
    """Random flip, crop jitter and photometric jitter of a stage-2 pair (see the module docstring).

    Args:
        flip: probability of the horizontal flip.
        scale: crop zoom range +- (0.1: 0.9 to 1.1 times); shift: crop shift range +- (crop sides).
        brightness, contrast, saturation: multiplicative jitter ranges +-; gamma: range +- of
            the exponent (log-uniform around 1).
        grayscale, blur, jpeg: probabilities of each; blur sigma up to ``max_blur`` pixels,
            JPEG quality from ``min_quality`` to 95.
        face_model: the face model file whose topology the clips use (None: the packaged default).
    """

    def __init__(self, flip: float = 0.5, scale: float = 0.08, shift: float = 0.04, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.3, gamma: float = 0.2, grayscale: float = 0.1,
                 blur: float = 0.2, max_blur: float = 1.2, jpeg: float = 0.2, min_quality: int = 40,
                 face_model: str | None = None) -> None:
        face = FaceModel.load(face_model) if face_model else FaceModel.default()
        self.mirror = torch.from_numpy(mirror_indices(face))
        self.lip_mirror = self._lip_mirror(face)
        self.flip, self.scale, self.shift = flip, scale, shift
        self.brightness, self.contrast, self.saturation, self.gamma = brightness, contrast, saturation, gamma
        self.grayscale, self.blur, self.max_blur, self.jpeg, self.min_quality = grayscale, blur, max_blur, jpeg, min_quality

    def _lip_mirror(self, face: FaceModel) -> torch.Tensor:
        """int64 [N]: the lip landmark (of ``lip_contour``) at the mirror position of each one."""
        contour = face.lip_contour().numpy()
        position = {int(v): k for k, v in enumerate(contour)}
        return torch.tensor([position[int(self.mirror[v])] for v in contour])

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        """Augment an item of :class:`~vividtalk.data.stage2.FramePairs` (a new dict)."""
        item = dict(item)
        size = item["source"].shape[-1]
        if rng.random() < self.flip:
            for side in SIDES:
                self._flip(item, side, size)
        s = float(np.exp(rng.uniform(-self.scale, self.scale)))
        t = rng.uniform(-self.shift, self.shift, 2) * size
        mat = np.array([[s, 0.0, (1 - s) * size / 2 + t[0]], [0.0, s, (1 - s) * size / 2 + t[1]]])
        photo = self._photometric_params(rng)
        for side in SIDES:
            self._transform(item, side, mat, s, size, photo)
        return item

    def _flip(self, item: dict, side: str, size: int) -> None:
        item[side] = item[side].flip(-1)
        item[f"{side}_mask"] = item[f"{side}_mask"].flip(-1)
        v = item[f"{side}_vertices"][self.mirror].clone()
        v[:, 0] = size - v[:, 0]
        item[f"{side}_vertices"] = v
        lips = item[f"{side}_lips"][self.lip_mirror].clone()
        lips[:, 0] = size - lips[:, 0]
        item[f"{side}_lips"] = lips

    @staticmethod
    def _transform(item: dict, side: str, mat: np.ndarray, s: float, size: int, photo: dict) -> None:
        """Zoom/shift the frame, mask, mesh (z scaled too) and lips by the 2x3 ``mat`` (pixel
        centres), and jitter the frame's colours by ``photo``."""
        # cv2 maps pixel indices; the clip format's positions are pixel centres (index + 0.5).
        shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        m = (np.linalg.inv(shift) @ np.vstack([mat, [0, 0, 1]]) @ shift)[:2]
        # The frames come from 8-bit files: warping and colour work in uint8 is exact up to
        # rounding and several times faster than in float (a loader worker's main cost).
        image = item[side].mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        image = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        item[side] = torch.from_numpy(_photometric(image, photo)).permute(2, 0, 1).float().div_(255).contiguous()
        mask = item[f"{side}_mask"].numpy().astype(np.uint8)
        mask = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        item[f"{side}_mask"] = torch.from_numpy(mask.astype(np.int64))
        a, b = torch.from_numpy(mat[:, :2]).float(), torch.from_numpy(mat[:, 2]).float()
        v = item[f"{side}_vertices"].clone()
        v[:, :2] = v[:, :2] @ a.T + b
        v[:, 2] = v[:, 2] * s
        item[f"{side}_vertices"] = v
        item[f"{side}_lips"] = item[f"{side}_lips"] @ a.T + b

    def _photometric_params(self, rng: np.random.Generator) -> dict:
        return {"brightness": rng.uniform(1 - self.brightness, 1 + self.brightness),
                "contrast": rng.uniform(1 - self.contrast, 1 + self.contrast),
                "saturation": rng.uniform(1 - self.saturation, 1 + self.saturation),
                "gamma": float(np.exp(rng.uniform(-self.gamma, self.gamma))),
                "gray": rng.random() < self.grayscale,
                "blur": rng.uniform(0.3, self.max_blur) if rng.random() < self.blur else 0.0,
                "quality": int(rng.integers(self.min_quality, 96)) if rng.random() < self.jpeg else 0}


GRAY = np.array([0.299, 0.587, 0.114])


def _photometric(image: np.ndarray, p: dict) -> np.ndarray:
    """uint8 [S, S, 3] RGB -> the same, jittered by the parameters ``p``: gamma, brightness and
    contrast (about the image's mean after the first two) as one lookup table, saturation or
    grayscale as one colour matrix, then blur and JPEG artefacts."""
    levels = (np.arange(256) / 255.0) ** p["gamma"] * p["brightness"]  # [256]
    mean = float(np.bincount(image.ravel(), minlength=256) @ levels) / image.size
    table = np.clip(((levels - mean) * p["contrast"] + mean) * 255.0, 0, 255).round().astype(np.uint8)
    image = cv2.LUT(image, table)
    keep = 0.0 if p["gray"] else p["saturation"]  # x' = gray + (x - gray) * keep
    matrix = keep * np.eye(3) + (1.0 - keep) * np.tile(GRAY, (3, 1))
    image = cv2.transform(image, matrix)  # saturates to [0, 255]
    if p["blur"]:
        image = cv2.GaussianBlur(image, (0, 0), p["blur"])
    if p["quality"]:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, p["quality"]])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image
