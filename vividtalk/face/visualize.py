"""Visual checks of tracking and fitting: NCC renders, face-oval masks, overlays."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from .fitting import FaceFitter
from .image import decode_image
from .model import FaceModel
from .prepare import crop_and_fit
from .segmentation import face_region
from .trackers import get_tracker


def render_ncc(
    model: FaceModel, vertices: torch.Tensor, height: int, width: int, rasterizer=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the NCC code (each vertex coloured by its normalised mean-shape position).

    Args:
        model: the face model (triangles, NCC colours).
        vertices: [B, V, 3] image-space vertices (x, y pixels; z depth, smaller = nearer).
        rasterizer: a :class:`vividtalk.render.Rasterizer` (default: ``get_rasterizer("auto")``).
    Returns:
        (image [B, H, W, 3] float in [0, 1], mask [B, H, W, 1] float {0, 1}).
    """
    from ..render import get_rasterizer, render_attributes

    rasterizer = rasterizer or get_rasterizer("auto", device=vertices.device)
    colors = model.ncc_colors().to(vertices)[None].expand(vertices.shape[0], -1, -1)
    return render_attributes(rasterizer, vertices, model.triangles.to(vertices.device), colors, height, width)


def oval_mask(landmarks: np.ndarray, model: FaceModel, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the tracked face-oval polygon: bool [H, W]."""
    return face_region(landmarks, model, height, width)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3] (any depth/channels cv2 reads)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return decode_image(Path(path).read_bytes(), str(path))


def default_portrait() -> np.ndarray:
    """scikit-image's public-domain astronaut portrait, RGB uint8 [512, 512, 3]."""
    try:
        import skimage.data
    except ImportError as err:
        raise ValueError("no --image given and scikit-image (the default portrait) is not installed") from err
    return skimage.data.astronaut()


def fit_face_report(image_path, output, tracker: str = "mediapipe", size: int = 256) -> str:
    """Track, crop and fit one image; write [crop | NCC render | overlay] as a PNG.

    Args:
        image_path: a photo, or None for the default portrait.
    Returns a one-line summary (fit residuals and the NCC-vs-oval IoU).
    """
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {output.parent}")
    image = read_image(image_path) if image_path is not None else default_portrait()
    with get_tracker(tracker) as face_tracker:
        landmarks = face_tracker.track_image(image)
    model = FaceModel.default()
    fitted = crop_and_fit([image], landmarks, FaceFitter(model), size)
    crop, points, fit = fitted.crops[0], fitted.points[0], fitted.fit
    ncc, mask = render_ncc(model, torch.from_numpy(fitted.vertices), size, size)
    ncc_u8 = (ncc[0].numpy() * 255 + 0.5).astype(np.uint8)
    overlay = np.where(mask[0].numpy() > 0, (0.5 * crop + 0.5 * ncc_u8).astype(np.uint8), crop)
    oval = oval_mask(points, model, size, size)
    iou = float((oval & (mask[0, ..., 0].numpy() > 0)).sum() / (oval | (mask[0, ..., 0].numpy() > 0)).sum())
    panel = np.concatenate([crop, ncc_u8, overlay], axis=1)
    tmp = output.with_name(output.name + ".tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write {output} (is the extension an image format?)")
    os.replace(tmp, output)
    return (
        f"wrote {output}: fit residual {float(fit.residual[0]):.2f} px, outside identity basis "
        f"{float(fit.prior_residual):.2f} px, NCC/oval IoU {iou:.3f}"
    )
