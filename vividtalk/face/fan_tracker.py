"""The face-alignment (2DFAN-4) backend: 68 landmarks from a TorchScript file on disk.

FOMM-style preprocessing pipelines use these 68 points. The network is the one released by
the face-alignment project as TorchScript (``2DFAN4-cd938726ad.zip`` in the torch hub cache);
vividtalk reads it with ``torch.jit.load`` and never downloads it. Faces are located with
MediaPipe's detector, so no second detector file is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import torch

from .image import as_rgb_uint8
from .mediapipe_tracker import FaceDetector
from .tracking import Closing, NoFaceError, check_face_size, select_largest, stack_tracks

FAN_FILE = "2DFAN4-cd938726ad.zip"


def default_fan_dir() -> Path:
    """The torch hub checkpoint cache, where the face-alignment package keeps its weights."""
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return Path(torch_home) / "hub" / "checkpoints"


def find_fan_weights(weights: str | os.PathLike | None) -> Path:
    """Locate the 2DFAN-4 TorchScript file: a file path, a directory holding ``2DFAN4*.zip``,
    or (None) the torch hub cache. Raises FileNotFoundError naming the missing file."""
    path = Path(weights) if weights is not None else default_fan_dir()
    if path.is_file():
        return path
    found = sorted(path.glob("2DFAN4*.zip")) if path.is_dir() else []
    if found:
        return found[0]
    raise FileNotFoundError(
        f"face-alignment weights not found: expected {path / FAN_FILE if path.suffix != '.zip' else path}. "
        "vividtalk never downloads weights: copy the 2DFAN-4 TorchScript file released by the "
        "face-alignment project there (or pass its path), or use the offline default tracker "
        "'mediapipe'."
    )


# face-alignment's crop convention: a square of 200 * scale pixels around the box centre,
# shifted up by 12% of the box height, with scale = (box width + box height) / 195.
_REFERENCE = 200.0
_INPUT = 256


def fan_crop_window(box: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (x, y) and side in pixels of the network's input window for a face box.

    Args:
        box: float [4] (x0, y0, x1, y1).
    """
    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * 0.12], dtype=np.float64)
    side = _REFERENCE * ((x1 - x0) + (y1 - y0)) / 195.0
    return center, float(side)


def heatmaps_to_points(heatmaps: torch.Tensor) -> np.ndarray:
    """Argmax of each heatmap with a quarter-pixel step towards the larger neighbour.

    Args:
        heatmaps: float [N, h, w].
    Returns:
        float32 [N, 2] (x, y) in heatmap pixel units, pixel centres at +0.5.
    """
    hm = heatmaps.detach().float().cpu().numpy()
    n, h, w = hm.shape
    flat = hm.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    pts = np.stack([xs, ys], axis=1).astype(np.float32)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if 0 < x < w - 1:
            pts[i, 0] += 0.25 * np.sign(hm[i, y, x + 1] - hm[i, y, x - 1])
        if 0 < y < h - 1:
            pts[i, 1] += 0.25 * np.sign(hm[i, y + 1, x] - hm[i, y - 1, x])
    return pts + 0.5


class FaceAlignmentTracker(Closing):
    """68-point landmarks with the 2DFAN-4 network.

    Args:
        weights: path of the TorchScript file, a directory holding it, or None for the torch
            hub cache (``$TORCH_HOME/hub/checkpoints``). Checked at construction.
        device: torch device for the network.
        min_face_size: faces smaller than this (pixels) raise FaceTooSmallError.
    """

    name = "face-alignment"
    num_points = 68

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "cpu",
        min_face_size: int = 64,
    ) -> None:
        self.weights_path = find_fan_weights(weights)
        self.device = torch.device(device)
        self.net = torch.jit.load(str(self.weights_path), map_location=self.device).eval()
        self.min_face_size = min_face_size
        self._detector = FaceDetector()

    @torch.no_grad()
    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Run the network on the window around one face box.

        Args:
            image: [H, W, 3] RGB uint8; box: float [4] (x0, y0, x1, y1).
        Returns:
            float32 [68, 3] (x, y, 0) in image pixels.
        """
        center, side = fan_crop_window(box)
        scale = _INPUT / side
        # Affine map image -> network input: translate the window's corner to 0, then scale.
        affine = np.array(
            [[scale, 0, -(center[0] - side / 2) * scale], [0, scale, -(center[1] - side / 2) * scale]]
        )
        crop = cv2.warpAffine(image, affine, (_INPUT, _INPUT), flags=cv2.INTER_LINEAR)
        x = torch.from_numpy(crop).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        heatmaps = self.net(x)
        heatmaps = heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps  # [1, 68, h, w]
        hm_size = heatmaps.shape[-1]
        pts = heatmaps_to_points(heatmaps[0])  # heatmap units
        xy = pts * (side / hm_size) + (center - side / 2)
        return np.concatenate([xy, np.zeros((len(xy), 1))], axis=1).astype(np.float32)

    def track_image(self, image: np.ndarray) -> np.ndarray:
        """Landmarks of the largest face: float32 [68, 3]. Raises NoFaceError/FaceTooSmallError."""
        image = as_rgb_uint8(image)
        boxes = self._detector(image)[0]
        if len(boxes) == 0:
            raise NoFaceError(f"no face found in the image ({image.shape[1]}x{image.shape[0]})")
        faces = [self.landmarks_in_box(image, b) for b in boxes]
        face = select_largest(faces)
        check_face_size(face, self.min_face_size)
        return face

    def track_video(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Per-frame landmarks: float32 [T, 68, 3], NaN rows where no usable face was found."""
        faces_in = lambda f: [self.landmarks_in_box(f, b) for b in self._detector(f)[0]]  # noqa: E731
        return stack_tracks(frames, faces_in, self.num_points, self.min_face_size)

    def close(self) -> None:
        """Close the face detector's graph."""
        self._detector.close()
