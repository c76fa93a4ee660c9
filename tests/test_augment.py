"""Stage-2 pair augmentation: the mesh, lips and masks follow the image; the flip keeps the
mesh's semantics; source and driving get the same transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk.data.augment import PairAugment, mirror_indices
from vividtalk.data.stage2 import frame_fields


@pytest.fixture(scope="module")
def item(tiny_synth_corpus):
    from vividtalk.data import Clip, list_clips

    clip = Clip(list_clips(tiny_synth_corpus)[0])
    return {**frame_fields("source", clip, 0), **frame_fields("driving", clip, 0)}


def _colours_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """float [3, S, S] sampled (nearest) at pixel-centre positions [N, 2] -> [N, 3]."""
    ij = points.floor().long().clamp(0, image.shape[-1] - 1)
    return image[:, ij[:, 1], ij[:, 0]].T


def test_mirror_map_is_an_involution_that_swaps_the_eyes(face_model):
    m = mirror_indices(face_model)
    assert (m[m] == np.arange(len(m))).all() and len(np.unique(m)) == len(m)
    right, left = face_model.regions["right_eye_upper"], face_model.regions["left_eye_upper"]
    assert set(m[right]) == set(left)


def test_flip_keeps_semantics_and_twice_is_the_identity(item, face_model):
    aug = PairAugment(flip=1.0, scale=0.0, shift=0.0, brightness=0, contrast=0, saturation=0, gamma=0,
                      grayscale=0, blur=0, jpeg=0)
    rng = np.random.default_rng(0)
    once = aug(item, rng)
    right, left = face_model.regions["right_eye_upper"], face_model.regions["left_eye_upper"]
    for it in (item, once):  # the subject's right eye stays on the image's left
        assert it["source_vertices"][right, 0].mean() < it["source_vertices"][left, 0].mean()
    torch.testing.assert_close(once["source_lips"], once["source_vertices"][face_model.lip_contour(), :2])
    # Each vertex still sits on the same colour (the image and the mesh flipped together).
    before = _colours_at(item["source"], item["source_vertices"][:, :2])
    after = _colours_at(once["source"], once["source_vertices"][:, :2])
    assert (before[aug.mirror] - after).abs().mean() < 0.02
    twice = aug(once, rng)
    for key in ("source", "source_vertices", "source_lips", "source_mask"):
        torch.testing.assert_close(twice[key], item[key], atol=1e-4, rtol=0)


def test_crop_jitter_moves_mesh_lips_and_mask_with_the_image(item, face_model):
    aug = PairAugment(flip=0.0, scale=0.1, shift=0.05, brightness=0, contrast=0, saturation=0, gamma=0,
                      grayscale=0, blur=0, jpeg=0)
    out = aug(item, np.random.default_rng(3))
    assert not torch.allclose(out["source_vertices"], item["source_vertices"])
    before = _colours_at(item["source"], item["source_vertices"][:, :2])
    after = _colours_at(out["source"], out["source_vertices"][:, :2])
    assert (before - after).abs().mean() < 0.03
    torch.testing.assert_close(out["source_lips"], out["source_vertices"][face_model.lip_contour(), :2])
    on_face = out["source_mask"][out["source_vertices"][:, 1].long().clamp(0, 255),
                                 out["source_vertices"][:, 0].long().clamp(0, 255)] == 2
    assert on_face.float().mean() > 0.9


def test_source_and_driving_get_the_same_transform(item):
    out = PairAugment(flip=0.5, blur=1.0, jpeg=1.0, grayscale=0.5)(item, np.random.default_rng(5))
    for key in ("", "_vertices", "_lips", "_mask"):  # the item pairs a frame with itself
        torch.testing.assert_close(out[f"source{key}"], out[f"driving{key}"])
    assert not torch.allclose(out["source"], item["source"])
    assert 0 <= out["source"].min() and out["source"].max() <= 1
