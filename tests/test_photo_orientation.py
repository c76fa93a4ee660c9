"""Photos as users take them: EXIF orientation, tilted and upside-down faces, faces cut by the
image border (issue: photos as users take them)."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from vividtalk.face.image import decode_image


def _tagged_jpeg(stored: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(portrait, orientation):
    stored = np.ascontiguousarray(cv2.resize(portrait, (200, 150))[:, :, :])
    data = _tagged_jpeg(stored, orientation)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    ours = decode_image(data, "tagged.jpg")
    assert ours.shape == reference.shape
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 2.0


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def pipe(tiny_stages):
    """Tiny random stages; stage 2 as initialised returns the source for its own mesh."""
    import torch

    from vividtalk.pipeline import VividTalkPipeline
    from vividtalk.pretrained import build_stage

    torch.manual_seed(0)
    return VividTalkPipeline(**{n: build_stage(s) for n, s in tiny_stages.items()}, config=tiny_stages)


@pytest.fixture(scope="module")
def tracker():
    from vividtalk.face import MediaPipeTracker

    t = MediaPipeTracker(min_face_size=32)
    yield t
    t.close()


def _turned(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)


def _cut(image: np.ndarray, landmarks: np.ndarray, edge: str, keep: float = 0.8) -> np.ndarray:
    """The image cut through the face so that about ``keep`` of its width / height remains."""
    (x0, y0), (x1, y1) = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    if edge == "left":
        return image[:, int(x1 - keep * (x1 - x0)):]
    if edge == "right":
        return image[:, :int(x0 + keep * (x1 - x0))]
    if edge == "top":
        return image[int(y1 - keep * (y1 - y0)):]
    return image[:int(y0 + keep * (y1 - y0))]


def _first_frame(pipe, image, size: str) -> np.ndarray:
    out = pipe(np.zeros(8000, np.float32), image, pose="still", expression_scale=0.0, blink=False,
               output_size=size)
    return out.frames[0]


CASES = ["turn90", "turn180", "turn270", "tilt25", "tilt-35", "exif6", "cut-left", "cut-right", "cut-top",
         "cut-bottom"]


def _case(name: str, portrait: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    if name.startswith("turn"):
        return np.ascontiguousarray(np.rot90(portrait, int(name[4:]) // 90))
    if name.startswith("tilt"):
        return _turned(portrait, float(name[4:]))
    if name == "exif6":  # stored sideways (as phones do), the tag says: turn 90 degrees clockwise
        return decode_image(_tagged_jpeg(np.ascontiguousarray(np.rot90(portrait, 1)), 6), "phone.jpg")
    return np.ascontiguousarray(_cut(portrait, landmarks, name[4:]))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_generated_face_is_upright_in_the_crop(pipe, tracker, portrait, portrait_landmarks, case):
    from vividtalk.face.crop import eye_line_angle

    image = _case(case, portrait, portrait_landmarks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = _first_frame(pipe, image, "crop")
    assert frame.shape == (256, 256, 3)
    angle = np.degrees(eye_line_angle(tracker.track_image(frame)))
    assert abs(angle) < 5.0, angle
    if case.startswith("cut"):
        assert any(f"image's {case[4:]} edge" in str(w.message) for w in caught)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["turn90", "tilt25", "exif6", "cut-left"])
def test_the_full_output_keeps_the_input_faces_angle(pipe, tracker, portrait, portrait_landmarks, case):
    from vividtalk.face.crop import eye_line_angle

    image = _case(case, portrait, portrait_landmarks)
    frame = _first_frame(pipe, image, "full")
    assert frame.shape == image.shape
    before = np.degrees(eye_line_angle(tracker.track_image(image)))
    after = np.degrees(eye_line_angle(tracker.track_image(frame)))
    assert abs((after - before + 180) % 360 - 180) < 5.0, (before, after)


@pytest.mark.parametrize("edge", ["left", "bottom"])
def test_a_face_two_thirds_inside_is_accepted_with_a_warning(portrait, portrait_landmarks, face_model, edge):
    from vividtalk.face.prepare import prepare_source

    image = np.ascontiguousarray(_cut(portrait, portrait_landmarks, edge, keep=0.68))
    with pytest.warns(UserWarning, match=f"image's {edge} edge"):
        source = prepare_source(image, face_model)
    assert source.crop.shape == (256, 256, 3)


def test_a_face_mostly_outside_the_image_names_the_edge(portrait_landmarks):
    from vividtalk.face.tracking import FaceCutError, check_visible, unturn_points, visible_share

    share, edge = visible_share(portrait_landmarks, (512, 512))
    assert share == 1.0 and edge is None
    shifted = portrait_landmarks.copy()
    shifted[:, 0] -= shifted[:, 0].min() + 0.6 * np.ptp(shifted[:, 0])  # 60 % of the width left of x = 0
    share, edge = visible_share(shifted, (512, 512))
    assert edge == "left" and 0.3 < share < 0.5
    with pytest.raises(FaceCutError, match="left edge"):
        check_visible(shifted, (512, 512))
    # Points found in a turned image map back onto the same pixels.
    image = np.zeros((40, 60, 3), np.uint8)
    image[10, 50] = 255  # pixel (row 10, col 50): centre (50.5, 10.5)
    for k in (1, 2, 3):
        turned = np.rot90(image, k)
        r, c = np.argwhere(turned[..., 0] == 255)[0]
        back = unturn_points(np.array([[c + 0.5, r + 0.5, 0.0]]), k, image.shape[:2])
        np.testing.assert_allclose(back[0, :2], [50.5, 10.5])
