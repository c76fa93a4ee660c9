"""Client input -> what the pipeline takes: generation options, images and audio, checked with
the project's own errors (their messages are what ``vividtalk generate`` prints) and with the
server's size limits. Nothing here reads a path a client gave: uploads are bytes or files the
server named itself."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..audio.align import SAMPLE_RATE
from ..audio.io import AudioError, load_audio
from ..face.image import decode_image
from ..pipeline import MIN_AUDIO_SECONDS

POSES = ("audio", "still")  # "video" needs a reference video: not offered by the server
SIZES = ("crop", "full")
STREAM_OPTIONS = ("pose", "expression_scale", "blink", "seed", "temperature")
JOB_OPTIONS = STREAM_OPTIONS + ("size",)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_options(values: dict, allowed: tuple[str, ...] = JOB_OPTIONS) -> dict:
    """Form fields (strings) or JSON values -> keyword arguments of ``pipe.plan`` /
    ``pipe.stream_session``, defaults as ``vividtalk generate``. Raises ValueError naming the
    option for an unknown option or a bad value."""
    if not isinstance(values, dict):
        raise ValueError(f"the options must be an object of name: value, got {type(values).__name__}")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}: the options are {', '.join(allowed)}")
    out = {"pose": _choice(values, "pose", POSES), "expression_scale": _number(values, "expression_scale", 1.0),
           "blink": _flag(values, "blink", True), "seed": int(_number(values, "seed", 0, integer=True)),
           "temperature": _number(values, "temperature", None)}
    if out["expression_scale"] < 0:
        raise ValueError(f"expression_scale must be >= 0, got {out['expression_scale']}")
    if out["temperature"] is not None and out["temperature"] < 0:
        raise ValueError(f"temperature must be >= 0, got {out['temperature']}")
    if "size" in allowed:
        out["output_size"] = _choice(values, "size", SIZES)
    return out


def _given(values: dict, name: str):
    value = values.get(name)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _choice(values: dict, name: str, choices: tuple[str, ...]) -> str:
    value = _given(values, name)
    if value is None:
        return choices[0]
    if value not in choices:
        raise ValueError(f"{name}: invalid choice {value!r} (choose from {', '.join(choices)})")
    return value


def _number(values: dict, name: str, default, integer: bool = False):
    value = _given(values, name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or (integer and isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {kind}, got {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _flag(values: dict, name: str, default: bool) -> bool:
    value = _given(values, name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _TRUE:
        return True
    if str(value).strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def read_image_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded image (JPEG, PNG, ... as cv2 reads them) -> RGB uint8 [H, W, 3], upright by
    its EXIF orientation. Its size is read from the header first, so a small file that would
    decode to gigabytes (a decompression bomb) is refused before decoding. Raises ValueError."""
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ValueError(f"the image is {size[0]}x{size[1]} pixels; the server accepts at most "
                         f"{max_pixels / 1e6:.0f} megapixels")
    return decode_image(data, "the uploaded image")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding its pixels (None: unknown)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own decompression-bomb warning: judged here
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        return (2**31, 1)
    except Exception:  # not a format PIL knows: cv2 decides (and names the problem)
        return None


def read_audio_file(path: Path, max_seconds: float) -> np.ndarray:
    """An uploaded audio (or video) file the server saved at ``path`` -> float32 [N] 16 kHz
    mono, at least 0.2 s and at most ``max_seconds`` long (the upload size limit bounds what
    decoding costs). Raises AudioError with the file called "the uploaded audio" (never the
    server's temporary path)."""
    try:
        wav = load_audio(path)
    except AudioError as err:
        raise type(err)(str(err).replace(str(path), "the uploaded audio")) from None
    check_audio_length(len(wav), max_seconds)
    return wav


def check_audio_length(samples: int, max_seconds: float) -> None:
    """AudioError for audio shorter than the pipeline takes or longer than the server's limit
    (the short message is the pipeline's own)."""
    seconds = samples / SAMPLE_RATE
    if seconds < MIN_AUDIO_SECONDS:
        raise AudioError(f"the audio is {seconds:.3f} s long; at least {MIN_AUDIO_SECONDS} s is needed")
    if seconds > max_seconds:
        raise AudioError(f"the audio is {seconds:.0f} s long; the server accepts at most {max_seconds:.0f} s")


def pcm_samples(data: bytes) -> np.ndarray:
    """A binary stream message -> float32 [N] samples (little-endian float32 PCM, 16 kHz mono).
    Raises AudioError for a length that is not whole samples or for NaN/Inf values."""
    if len(data) % 4:
        raise AudioError(f"audio messages are float32 little-endian samples (a multiple of 4 bytes), "
                         f"got {len(data)} bytes")
    wav = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(wav).all():
        raise AudioError("the audio contains NaN or Inf values: clean or replace them")
    return np.clip(wav, -1.0, 1.0)
