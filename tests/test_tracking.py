"""Tracking (MediaPipe and face-alignment backends), input normalisation, crops and paste-back."""

import warnings

import cv2
import numpy as np
import pytest
import torch

from vividtalk.face import (
    CropBox,
    FaceTooSmallError,
    MediaPipeTracker,
    NoFaceError,
    as_rgb_uint8,
    clip_crop_box,
    crop_image,
    get_tracker,
    paste_back,
)
from vividtalk.face.fan_tracker import FaceAlignmentTracker, fan_crop_window, heatmaps_to_points

NOSE_TIP, LEFT_EYE_OUTER, RIGHT_EYE_OUTER, CHIN = 1, 263, 33, 152


@pytest.fixture(scope="module")
def tracker():
    return MediaPipeTracker()


def test_portrait_landmarks_are_plausible(portrait, portrait_landmarks):
    lm = portrait_landmarks
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert (lm[:, :2] > 0).all() and (lm[:, :2] < 512).all()
    # Subject's left eye is on the image's right; the nose between the eyes, above the chin.
    assert lm[LEFT_EYE_OUTER, 0] > lm[NOSE_TIP, 0] > lm[RIGHT_EYE_OUTER, 0]
    assert lm[NOSE_TIP, 1] < lm[CHIN, 1]
    assert lm[NOSE_TIP, 2] < lm[:468, 2].mean()  # the nose is nearest to the camera
    # The face sits where the portrait's face is (upper middle of the image).
    centre = lm[:, :2].mean(0)
    assert 150 < centre[0] < 300 and 80 < centre[1] < 250


def test_no_face_raises(tracker):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        tracker.track_image(noise)


def test_several_faces_use_the_largest_with_a_warning(tracker, portrait):
    face = portrait[20:300, 120:380]
    canvas = np.full((320, 640, 3), 128, np.uint8)
    canvas[10:266, 20:276] = cv2.resize(face, (256, 256))
    canvas[20:220, 340:540] = cv2.resize(face, (200, 200))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm = tracker.track_image(canvas)
    messages = [str(w.message) for w in caught if "faces" in str(w.message)]
    assert messages and "found 2 faces" in messages[0] and "largest" in messages[0]
    assert lm[:, 0].mean() < 320  # the larger face is on the left


def test_small_face_raises(tracker, portrait):
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)  # face ~54 px
    with pytest.raises(FaceTooSmallError, match="at least 64 px"):
        tracker.track_image(small)


def test_input_formats_track_alike(tracker, portrait, portrait_landmarks):
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([portrait, np.full((512, 512, 1), 255, np.uint8)], 2)
    deep = portrait.astype(np.uint16) * 257
    for image in (rgba, deep, portrait.astype(np.float32) / 255.0):
        np.testing.assert_allclose(tracker.track_image(image), portrait_landmarks, atol=1.0)
    assert np.abs(tracker.track_image(gray) - portrait_landmarks)[:, :2].mean() < 3.0
    assert as_rgb_uint8(gray).shape == (512, 512, 3)
    with pytest.raises(ValueError, match="expected an image"):
        as_rgb_uint8(np.zeros((4, 4, 2)))


def test_video_tracking(talking_frames, tracker):
    tracks = tracker.track_video(talking_frames[:40])
    assert tracks.shape == (40, 478, 3) and not np.isnan(tracks).any()
    # Tracking mode is temporally coherent: frame-to-frame motion is small.
    step = np.abs(np.diff(tracks[:, :, :2], axis=0)).mean(axis=(1, 2))
    assert step.max() < 5.0
    lost = tracker.track_video([np.zeros((200, 200, 3), np.uint8), talking_frames[0]])
    assert np.isnan(lost[0]).all() and not np.isnan(lost[1]).any()


def test_tracker_by_name(tmp_path, monkeypatch):
    assert isinstance(get_tracker("mediapipe"), MediaPipeTracker)
    with pytest.raises(ValueError, match="unknown tracker"):
        get_tracker("dlib")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="2DFAN4-cd938726ad.zip"):
        get_tracker("face-alignment")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        get_tracker("face-alignment", weights=tmp_path / "elsewhere")


class FakeFan(torch.nn.Module):
    """Stands in for 2DFAN-4: heatmaps [1, 68, 64, 64] peaking at fixed cells."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hm = torch.zeros(x.shape[0], 68, 64, 64)
        idx = torch.arange(68)
        hm[:, idx, 10 + idx % 40, 5 + idx % 50] = 1.0  # row, column
        return hm


def test_face_alignment_backend_decodes_heatmaps(tmp_path, portrait):
    path = tmp_path / "2DFAN4-test.zip"
    torch.jit.script(FakeFan()).save(str(path))
    tracker = get_tracker("face-alignment", weights=tmp_path)
    assert isinstance(tracker, FaceAlignmentTracker) and tracker.weights_path == path
    box = np.array([180.0, 100.0, 300.0, 250.0])
    lm = tracker.landmarks_in_box(portrait, box)
    centre, side = fan_crop_window(box)
    i = np.arange(68)
    expected_x = (5 + i % 50 + 0.5) * side / 64 + centre[0] - side / 2
    expected_y = (10 + i % 40 + 0.5) * side / 64 + centre[1] - side / 2
    np.testing.assert_allclose(lm[:, 0], expected_x, atol=1e-3)
    np.testing.assert_allclose(lm[:, 1], expected_y, atol=1e-3)
    full = tracker.track_image(portrait)  # detector box + network
    assert full.shape == (68, 3)


def test_heatmap_subpixel_refinement():
    hm = torch.zeros(1, 8, 8)
    hm[0, 3, 4], hm[0, 3, 5], hm[0, 4, 4] = 1.0, 0.5, 0.2
    x, y = heatmaps_to_points(hm)[0]
    assert x == pytest.approx(4.75) and y == pytest.approx(3.75)


def test_clip_crop_box_is_fixed_smoothed_and_contains_the_face(talking_frames, tracker):
    tracks = tracker.track_video(talking_frames[:30])
    box = clip_crop_box(tracks)
    xy = tracks[:, :, :2]
    assert (xy[..., 0] > box.x0).all() and (xy[..., 0] < box.x0 + box.size).all()
    assert (xy[..., 1] > box.y0).all() and (xy[..., 1] < box.y0 + box.size).all()
    face = np.ptp(xy[0], axis=0).max()
    assert 1.3 * face < box.size < 2.2 * face
    # Jitter on one frame barely moves the box (temporal smoothing).
    jittered = tracks.copy()
    jittered[10, :, :2] += 15.0
    moved = clip_crop_box(jittered)
    assert abs(moved.x0 - box.x0) < 6 and abs(moved.size - box.size) < 6
    # Lost frames are bridged.
    holes = tracks.copy()
    holes[5:8] = np.nan
    assert abs(clip_crop_box(holes).size - box.size) < 3


def test_crop_and_paste_back_round_trip(portrait, portrait_landmarks):
    box = clip_crop_box(portrait_landmarks, upright=False)  # axis-aligned: the region checks below
    crop = crop_image(portrait, box)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    pts = box.to_crop(portrait_landmarks)
    assert (pts[:, :2] > 0).all() and (pts[:, :2] < 256).all()
    np.testing.assert_allclose(box.to_image(pts), portrait_landmarks, atol=1e-3)
    back = paste_back(crop, portrait, box)
    inside = np.zeros(portrait.shape[:2], bool)
    x0, y0, s = (int(round(v)) for v in (box.x0, box.y0, box.size))
    inside[y0 + s // 8 : y0 + s - s // 8, x0 + s // 8 : x0 + s - s // 8] = True
    err = np.abs(back.astype(int) - portrait.astype(int))
    assert err[inside].mean() < 6.0  # resampled twice
    outside = np.ones_like(inside)
    outside[max(y0 - 2, 0) : y0 + s + 2, max(x0 - 2, 0) : x0 + s + 2] = False
    assert err[outside].max() == 0  # untouched outside the box
    # A generated crop (here: inverted colours) lands inside the box only.
    pasted = paste_back(255 - crop, portrait, box)
    assert np.abs(pasted.astype(int) - portrait.astype(int))[inside].mean() > 50


def test_crop_box_outside_the_image_pads():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_image(image, CropBox(-50.0, -50.0, 200.0), out_size=64)
    assert crop.shape == (64, 64, 3) and (crop == 200).all()
