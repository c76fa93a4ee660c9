"""The dlib identity metric: known answers on real faces (the portrait, the carphone man)."""

import numpy as np
import pytest

from vividtalk.eval.identity import SAME_PERSON_THRESHOLD, DlibIdentity


@pytest.fixture(scope="module")
def dlib_identity():
    return DlibIdentity()


def test_identity_distance_separates_people_and_keeps_a_person(dlib_identity, portrait, talking_frames):
    a = np.ascontiguousarray(portrait[:300, 80:380])  # the astronaut's head
    brighter = np.clip(a.astype(int) * 1.15 + 10, 0, 255).astype(np.uint8)
    man = talking_frames[10]
    assert dlib_identity.distance(a[None], a)["identity_distance"] == pytest.approx(0.0, abs=1e-6)
    same = dlib_identity.distance(np.stack([brighter, a[:, ::-1]]), a)
    assert same["identity_distance"] < 0.35 and same["same_identity_rate"] == 1.0
    other = dlib_identity.distance(np.stack([man]), np.stack([a[: man.shape[0], : man.shape[1]]]))
    assert other["frames_without_face"] == 0 and other["identity_distance"] > SAME_PERSON_THRESHOLD
    # Frames of one man are the same person; a frame with no face is counted, not scored.
    blank = np.zeros_like(man)
    run = dlib_identity.distance(np.stack([talking_frames[50], talking_frames[100], blank]), man)
    assert run["frames_without_face"] == 1 and run["identity_distance"] < SAME_PERSON_THRESHOLD


def test_identity_rejects_bad_input(dlib_identity, tmp_path):
    with pytest.raises(ValueError, match="RGB uint8"):
        dlib_identity.embed(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="references"):
        dlib_identity.distance(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="dlib model not found"):
        DlibIdentity(models_dir=str(tmp_path))
