"""``vividtalk-prep videos`` on a cluster: the Ray engine (``--engine ray``) and job-array
shards (``--shard K/N``) give the corpus one machine gives (same clips, splits, frames and
arrays), resumably.

Four tiny generated videos (the portrait talking with sound, the portrait without sound, a
video without a face, the portrait mirrored and recoloured: three identities, so all three
splits are used) are prepared once on one machine; the other runs are compared with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_prepare_videos import moving, no_face, portrait, tone  # the generated test videos

from data_prep import videos as prep
from data_prep.__main__ import main
from vividtalk.data import Clip, list_clips, read_manifest, write_video

VIDEOS = ("a_talk.mp4", "b_quiet.mov", "c_noface.mp4", "d_mirror.mp4")  # (sorted: shard 0/2 = a, c)
CLIPS = ["a_talk-000", "b_quiet-000", "d_mirror-000"]  # three identities: train, val and test


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """(videos folder, corpus folder) of a plain single-machine run, in this process on one
    thread (as every Ray task and spawned worker runs)."""
    root = tmp_path_factory.mktemp("cluster")
    videos = root / "videos"
    videos.mkdir()
    face = portrait()
    write_video(videos / VIDEOS[0], moving(face, 30), audio=tone(30))
    write_video(videos / VIDEOS[1], moving(face, 30, phase=3))
    write_video(videos / VIDEOS[2], no_face(10, seed=2), audio=tone(10))
    write_video(videos / VIDEOS[3], moving(np.ascontiguousarray(face[:, ::-1, ::-1]), 25), audio=tone(25))
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        report = prep.prepare_videos(videos, root / "single", progress=False, verbose=False)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    assert [e["status"] for e in report["videos"]] == ["ok", "ok", "no_face", "ok"]
    assert sorted(len(v) for v in report["manifest_splits"].values()) == [1, 1, 1]
    return videos, root / "single"


def assert_same_corpus(got: Path, want: Path) -> None:
    """The same clip ids, manifest (splits, identities, frame counts), frames, audio and arrays."""
    ids = [p.name for p in list_clips(got)]
    assert ids == [p.name for p in list_clips(want)] == CLIPS
    assert read_manifest(got)["splits"] == read_manifest(want)["splits"]
    assert read_manifest(got)["clips"] == read_manifest(want)["clips"]
    for clip_id in ids:
        one, two = Clip(got / clip_id).load(), Clip(want / clip_id).load()
        assert one.meta["num_frames"] == two.meta["num_frames"] == len(one.frames) == len(two.frames) >= 25
        assert np.array_equal(one.frames, two.frames)
        assert (one.audio is None) == (two.audio is None)
        assert one.audio is None or np.array_equal(one.audio, two.audio)
        assert one.arrays.keys() == two.arrays.keys()
        for name, value in one.arrays.items():
            np.testing.assert_allclose(value, two.arrays[name], rtol=0, atol=1e-6, err_msg=f"{clip_id}: {name}")


def statuses(report: dict) -> dict:
    return {e["video"]: e["status"] for e in report["videos"]}


def test_ray_engine_gives_the_single_machine_corpus_and_resumes(single, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    videos, want = single
    out = tmp_path / "corpus"
    done = []  # the videos bar advances once per finished video
    monkeypatch.setattr(prep.Bars, "video_done", lambda bars, entry: done.append(entry["video"]))
    ray.init(num_cpus=2, include_dashboard=False)  # a local two-worker cluster (the engine joins it)
    try:
        report = prep.prepare_videos(videos, out, progress=False, verbose=False, engine="ray")
        assert statuses(report) == {VIDEOS[0]: "ok", VIDEOS[1]: "ok", VIDEOS[2]: "no_face", VIDEOS[3]: "ok"}
        assert report["engine"] == "ray" and report["totals"]["workers"] == 2 and sorted(done) == list(VIDEOS)
        assert_same_corpus(out, want)
        assert (out / prep.REPORT).is_file() and read_manifest(out)["splits"] == report["manifest_splits"]
        # Resumed, through the command line: every video skipped, no clip rewritten.
        stamp = {p.name: (p / "meta.json").stat().st_mtime_ns for p in list_clips(out)}
        assert main(["videos", str(videos), str(out), "--engine", "ray", "--no-progress"]) == 0
        again = json.loads((out / prep.REPORT).read_text())
        assert set(statuses(again).values()) == {"skipped_done"}
        assert {p.name: (p / "meta.json").stat().st_mtime_ns for p in list_clips(out)} == stamp
        # An interrupted video (its state never written, a clip's temp dir left): only it is redone.
        quiet = next(j for j in prep.make_jobs(videos, out, "file") if j.rel == VIDEOS[1])
        Path(quiet.state_path).unlink()
        (out / ".tmp-b_quiet-000-deadbeef").mkdir()
        assert main(["videos", str(videos), str(out), "--engine", "ray", "--no-progress"]) == 0
        again = json.loads((out / prep.REPORT).read_text())
        assert statuses(again) == {**dict.fromkeys(VIDEOS, "skipped_done"), VIDEOS[1]: "ok"}
        redone = {c for c, t in stamp.items() if (out / c / "meta.json").stat().st_mtime_ns != t}
        assert redone == {"b_quiet-000"} and not list(out.glob(".tmp-*"))
        assert_same_corpus(out, want)
    finally:
        ray.shutdown()


def test_shards_then_a_plain_run_give_the_single_machine_corpus(single, tmp_path):
    videos, want = single
    out = tmp_path / "corpus"
    args = ["videos", str(videos), str(out), "--no-progress"]
    assert main(args + ["--shard", "1/2"]) == 0
    assert [p.name for p in list_clips(out)] == ["b_quiet-000", "d_mirror-000"]  # only its own videos
    assert not (out / "manifest.json").exists() and not (out / prep.REPORT).exists()
    one = json.loads((out / "prep_report.shard-1-of-2.json").read_text())
    assert statuses(one) == {VIDEOS[1]: "ok", VIDEOS[3]: "ok"}
    assert one["shard"] == "1/2" and one["manifest_splits"] is None
    assert main(args + ["--shard", "0/2"]) == 0
    zero = json.loads((out / "prep_report.shard-0-of-2.json").read_text())
    assert statuses(zero) == {VIDEOS[0]: "ok", VIDEOS[2]: "no_face"}
    assert [p.name for p in list_clips(out)] == CLIPS and not (out / "manifest.json").exists()
    # A shard run again resumes: its videos are done, the other shard's are not its business.
    assert main(args + ["--shard", "0/2"]) == 0
    zero = json.loads((out / "prep_report.shard-0-of-2.json").read_text())
    assert statuses(zero) == {VIDEOS[0]: "skipped_done", VIDEOS[2]: "skipped_done"}
    # The finishing plain run: everything done by the shards, the manifest written.
    assert main(args) == 0
    final = json.loads((out / prep.REPORT).read_text())
    assert set(statuses(final).values()) == {"skipped_done"} and len(final["videos"]) == 4
    assert final["shard"] is None and final["manifest_splits"] == read_manifest(out)["splits"]
    assert_same_corpus(out, want)


@pytest.mark.parametrize(
    "value, message",
    [
        ("2/2", "0 <= K < N"),
        ("0/0", "N >= 1"),
        ("-1/2", "expected K/N"),
        ("1", "expected K/N"),
        ("a/b", "expected K/N"),
        ("1/2/3", "expected K/N"),
    ],
)
def test_bad_shards_are_refused(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["videos", str(tmp_path), str(tmp_path / "out"), f"--shard={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --shard" in err and message in err and value in err, err
    with pytest.raises(ValueError, match="0 <= K < N"):
        prep.prepare_videos(tmp_path, tmp_path / "out", shard=(3, 2), progress=False, verbose=False)


def test_ray_engine_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    """Ray is optional: without it the ray engine stops at once with the install command."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    (tmp_path / "in").mkdir()
    install = r"the ray engine needs Ray: pip install -e '\.\[cluster\]'"
    with pytest.raises(SystemExit, match=install):
        main(["videos", str(tmp_path / "in"), str(tmp_path / "out"), "--engine", "ray"])
    with pytest.raises(ModuleNotFoundError, match=install):
        prep.prepare_videos(tmp_path / "in", tmp_path / "out", engine="ray", progress=False, verbose=False)
