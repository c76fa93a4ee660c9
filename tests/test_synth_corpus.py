"""The synthetic corpus command: clips in the clip format with consistent exact ground truth,
deterministic for a seed, resumable, and clear about unusable face photos."""

import json

import cv2
import numpy as np
import pytest
import torch

from data_prep.__main__ import main
from vividtalk.data import Clip, list_clips, read_manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    args = ["synth", str(out), "--clips", "3", "--seed", "5", "--clips-per-identity", "1",
            "--min-seconds", "1.5", "--max-seconds", "3"]
    assert main(args) == 0
    return out, args


def test_clips_hold_consistent_ground_truth(corpus, face_model):
    out, _ = corpus
    clips = [Clip(p) for p in list_clips(out)]
    assert [c.clip_id for c in clips] == ["synth-00000", "synth-00001", "synth-00002"]
    for clip in clips:
        a = clip.arrays()
        t = len(clip)
        # Targets 1.5-3 s; one sentence (4-7 words at least) may overrun.
        assert 1.2 * 25 <= t <= 4.5 * 25 and clip.has_audio and len(clip.audio()) == t * 640
        # The vertices are exactly the face model assembled from the stored parameters.
        mesh = face_model.assemble(torch.from_numpy(a["beta"]), identity=torch.from_numpy(a["identity"]),
                                   lip_offsets=torch.from_numpy(a["lip_offsets"]), pose=torch.from_numpy(a["pose"]))
        np.testing.assert_allclose(mesh.numpy(), a["vertices"], atol=1e-3)
        np.testing.assert_allclose(a["lip_landmarks"], a["vertices"][:, face_model.lip_contour().numpy(), :2])
        assert set(np.unique(a["masks"])) == {0, 1, 2}
        assert clip.meta["synthetic"] and clip.meta["text"] and clip.meta["phonemes"]
        # Lips move with the speech: the jaw opens during phonemes, stays shut in silence.
        jaw = a["beta"][:, face_model.expression_names.index("jawOpen")]
        assert jaw.max() > 0.2 and jaw[0] < 0.05
    identities = {c.identity for c in clips}
    assert len(identities) == 3
    manifest = read_manifest(out)
    assert sum(len(v) for v in manifest["splits"].values()) == 3


def test_frames_follow_the_mesh(corpus, face_model):
    """The face in the frames is where the stored mesh says (mask and mesh agree)."""
    clip = Clip(list_clips(corpus[0])[0])
    a = clip.arrays()
    from vividtalk.face.segmentation import face_region

    for f in (0, len(clip) // 2, len(clip) - 1):
        region = face_region(a["vertices"][f], face_model, 256, 256)
        face = a["masks"][f] == 2
        assert (region & face).sum() / (region | face).sum() > 0.9


def test_deterministic_and_resumable(corpus, tmp_path):
    out, args = corpus
    again = tmp_path / "again"
    assert main(["synth", str(again), *args[2:]]) == 0
    for a, b in zip(list_clips(out), list_clips(again)):
        for key in ("beta", "pose", "vertices", "masks"):
            np.testing.assert_array_equal(Clip(a).arrays()[key], Clip(b).arrays()[key])
        np.testing.assert_array_equal(Clip(a).audio(), Clip(b).audio())
    # Resume: a removed clip is written again, the others are kept untouched.
    import shutil

    stamp = (again / "synth-00000" / "meta.json").stat().st_mtime_ns
    shutil.rmtree(again / "synth-00001")
    assert main(["synth", str(again), *args[2:]]) == 0
    assert (again / "synth-00000" / "meta.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(Clip(again / "synth-00001").arrays()["beta"],
                                  Clip(out / "synth-00001").arrays()["beta"])


def test_unusable_photos_are_reported(tmp_path, capsys, portrait):
    faces = tmp_path / "faces"
    faces.mkdir()
    cv2.imwrite(str(faces / "noise.png"), np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))
    (faces / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["synth", str(out), "--clips", "1", "--faces", str(faces)]) == 2
    err = capsys.readouterr().err
    assert "no usable face photo" in err and "no face found" in err and "cannot read" in err
    assert not out.exists() or list_clips(out) == []
    cv2.imwrite(str(faces / "person.png"), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    assert main(["synth", str(out), "--clips", "1", "--faces", str(faces), "--min-seconds", "1.5",
                 "--max-seconds", "2.5"]) == 0
    printed = capsys.readouterr().out
    assert "skipped photo" in printed and "noise.png" in printed
    assert Clip(out / "synth-00000").identity.startswith("person-")
    assert json.loads((out / "manifest.json").read_text())["clips"]


def test_bad_arguments(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--clips", "0"]) == 2
    assert "--clips" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--faces", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
