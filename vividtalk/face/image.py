"""Image input normalisation shared by the tracker, the cropper and the pipeline."""

from __future__ import annotations

import numpy as np


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Bring an image array to RGB uint8 [H, W, 3].

    Accepts grayscale [H, W] or [H, W, 1], RGB, RGBA (alpha dropped: composited on black
    would darken faces, so the colour channels are kept as they are), uint8, uint16
    (scaled by 1/257), bool, and float arrays in [0, 1].

    Raises:
        ValueError: on any other shape or dtype, naming what was received.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an image of shape [H, W], [H, W, 3] or [H, W, 4], got {image.shape}"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is too small ({image.shape[0]}x{image.shape[1]} pixels)")
    image = image[:, :, :3] if image.shape[2] == 4 else image
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(_to_uint8(image))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ... any depth/channels cv2 reads) to RGB uint8
    [H, W, 3], turned upright by its EXIF orientation tag (phones store the pixels sideways
    and say so in that tag). ``name`` labels the error. Raises ValueError when it cannot be decoded."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ValueError(f"cannot read {name} as an image (unsupported or corrupt file)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return apply_orientation(as_rgb_uint8(image), exif_orientation(data))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of an encoded image; 1 (upright) when it has none."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # no EXIF block worth reading
        return 1
    return int(value) if value in range(1, 9) else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels [H, W, C] upright for an EXIF orientation (1-8): the tag says how the
    stored image must be flipped / rotated to be displayed."""
    ops = {
        2: lambda x: x[:, ::-1],                     # mirrored
        3: lambda x: x[::-1, ::-1],                  # rotated 180
        4: lambda x: x[::-1],                        # flipped vertically
        5: lambda x: x.transpose(1, 0, 2),           # transposed
        6: lambda x: x.transpose(1, 0, 2)[:, ::-1],  # rotate 90 clockwise to display
        7: lambda x: x.transpose(1, 0, 2)[::-1, ::-1],  # transverse
        8: lambda x: x.transpose(1, 0, 2)[::-1],     # rotate 90 counter-clockwise to display
    }
    return np.ascontiguousarray(ops[orientation](image)) if orientation in ops else image


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File endings read as photos when a folder of them is given."""


def image_files(folder, what: str = "photo folder") -> list:
    """The images of a folder (by :data:`IMAGE_SUFFIXES`), sorted: list of ``Path``.

    Raises:
        FileNotFoundError: no such folder (``what`` names it); ValueError: no image in it.
    """
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files
