"""The clip format, manifests and the two DataModules, on tiny generated corpora."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vividtalk.audio import load_audio
from torch.utils.data import DataLoader, DistributedSampler

from vividtalk.data import (
    CLIP_FORMAT_VERSION,
    Clip,
    ClipData,
    ClipError,
    build_manifest,
    list_clips,
    read_manifest,
    remove_incomplete,
    split_clips,
    write_clip,
    write_features,
)
from vividtalk.data.stage1 import AudioMeshDataModule, AudioMeshWindows, PromptedWindows
from vividtalk.data.stage2 import FramePairDataModule, FramePairs

K, L, V, S = 29, 80, 468, 64


def fake_clip(t=60, identity="id0", audio=True, seed=0, size=S) -> ClipData:
    """A small clip whose arrays encode (clip seed, frame) so items can be traced back."""
    rng = np.random.default_rng(seed)
    frame_ids = np.arange(t, dtype=np.float32)
    frames = np.zeros((t, size, size, 3), np.uint8)
    frames[:, :, :, 0] = (frame_ids * 2)[:, None, None].astype(np.uint8)  # frame index in red
    frames[:, :, :, 1] = seed * 20
    beta = np.zeros((t, K), np.float32)
    beta[:, 0], beta[:, 1] = frame_ids, seed
    masks = np.zeros((t, size, size), np.uint8)
    masks[:, 10:50, 10:50], masks[:, 20:40, 20:40] = 1, 2
    arrays = dict(
        vertices=rng.random((t, V, 3)).astype(np.float32) * size, pose=np.tile(frame_ids[:, None], (1, 7)),
        beta=beta, lip_offsets=np.zeros((t, L, 3)), identity=np.full((V, 3), seed, np.float32),
        lip_landmarks=np.zeros((t, 40, 2)), masks=masks,
    )
    wav = np.sin(np.arange(t * 640) * 0.05).astype(np.float32) * 0.3 if audio else None
    return ClipData(frames, wav, arrays, {"source": f"fake{seed}", "identity": identity, "face_model_id": "m"})


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for i in range(8):
        write_clip(root, f"c{i}", fake_clip(t=60 + 5 * i, identity=f"id{i // 2}", seed=i, audio=i != 7))
    build_manifest(root, val_fraction=0.25, test_fraction=0.25, seed=0)
    return root


def test_write_read_round_trip(tmp_path):
    data = fake_clip(t=30, seed=3)
    path = write_clip(tmp_path, "one", data)
    clip = Clip(path)
    assert len(clip) == 30 and clip.identity == "id0" and clip.has_audio
    assert clip.meta["format_version"] == CLIP_FORMAT_VERSION and clip.meta["size"] == S
    frames = clip.frames()
    assert frames.shape == (30, S, S, 3)
    assert np.abs(frames[..., 0].astype(int) - data.frames[..., 0]).mean() < 3  # lossy (JPEG)
    np.testing.assert_array_equal(clip.frames([7, 2]), frames[[7, 2]])  # random access, any order
    np.testing.assert_array_equal(clip.mask(5), data.arrays["masks"][5])  # masks lossless
    for name in ("beta", "pose", "masks", "identity", "vertices"):
        np.testing.assert_array_equal(clip.arrays()[name], data.arrays[name])
    audio = clip.audio()
    assert audio.shape == (30 * 640,) and np.abs(audio - data.audio).max() < 1e-4
    np.testing.assert_array_equal(audio, load_audio(path / "audio.wav"))  # ffmpeg reads the same samples
    np.testing.assert_array_equal(clip.audio(1000, 1500), audio[1000:1500])  # a range read alone
    assert len(clip.audio(30 * 640 - 10, 30 * 640 + 99)) == 10  # shorter at the end
    np.testing.assert_array_equal(clip.rows("vertices", 4, 9), data.arrays["vertices"][4:9])  # rows read alone
    assert clip.rows("beta", 28, 99).shape == (2, K) and clip.rows("identity").shape == (V, 3)


def test_validation_names_the_problem(tmp_path):
    data = fake_clip(t=10)
    data.arrays["beta"] = data.arrays["beta"][:9]
    with pytest.raises(ClipError, match="beta has 9 frames"):
        write_clip(tmp_path, "bad", data)
    data = fake_clip(t=10)
    del data.arrays["masks"]
    with pytest.raises(ClipError, match="missing"):
        write_clip(tmp_path, "bad", data)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_interrupted_write_never_reads_as_a_clip(tmp_path, monkeypatch):
    import vividtalk.data.clip as clip_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing arrays")

    monkeypatch.setattr(clip_module.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_clip(tmp_path, "c0", fake_clip(t=10))
    assert list_clips(tmp_path) == [] and not (tmp_path / "c0").exists()
    # A leftover temp dir from a hard kill is skipped by readers and removed on demand.
    (tmp_path / ".tmp-c1-deadbeef").mkdir()
    assert list_clips(tmp_path) == []
    assert len(remove_incomplete(tmp_path)) == 1 and list(tmp_path.iterdir()) == []


def test_other_format_versions_are_refused(tmp_path):
    path = write_clip(tmp_path, "c0", fake_clip(t=10))
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ClipError, match="format 99"):
        Clip(path)
    with pytest.raises(ClipError, match="format 99 .* newer vividtalk"):
        list_clips(tmp_path)


def test_manifest_splits_never_share_an_identity(corpus):
    manifest = read_manifest(corpus)
    by_split = {s: {manifest["clips"][c]["identity"] for c in ids} for s, ids in manifest["splits"].items()}
    assert all(by_split[s] for s in ("train", "val", "test"))
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert sum(len(v) for v in manifest["splits"].values()) == 8
    again = build_manifest(corpus, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert again["splits"] == manifest["splits"]  # deterministic


def test_stage1_windows_align_audio_and_targets(corpus):
    clips = list_clips(corpus)
    ds = AudioMeshWindows(clips, window=20, stride=10)
    assert all(c.has_audio for c in ds.clips) and len(ds.clips) == 7
    expected = sum((len(c) - 20) // 10 + 1 for c in ds.clips)
    assert len(ds) == expected
    item = ds[3]
    clip, start = ds.clips[item["clip"]], item["start"]
    assert item["audio"].shape == (20 * 640,) and item["beta"].shape == (20, K)
    assert torch.equal(item["beta"][:, 0], torch.arange(start, start + 20).float())  # frame-aligned
    wav = clip.audio()
    np.testing.assert_allclose(item["audio"].numpy(), wav[start * 640 : (start + 20) * 640])
    assert item["identity"].shape == (V, 3) and item["pose"].shape == (20, 7)


def test_stage1_cached_features(corpus):
    clips = list_clips(corpus)
    for p in clips:
        clip = Clip(p)
        if clip.has_audio:
            write_features(p, "toy", np.tile(np.arange(len(clip), dtype=np.float32)[:, None], (1, 5)))
    ds = AudioMeshWindows(clips, window=20, stride=10, features="toy")
    item = ds[2]
    assert item["features"].shape == (20, 5)
    assert torch.equal(item["features"][:, 0], item["beta"][:, 0])
    with pytest.raises(ClipError, match="features must be"):
        write_features(clips[0], "bad", np.zeros((3, 5)))


def test_stage1_prompts_come_from_another_clip_of_the_same_person(corpus):
    """Each window's style prompt is another clip of its identity (clip seed in beta[:, 1],
    frame in beta[:, 0], identity i // 2): random clips and starts in training, fixed ones in
    validation; a clip whose identity has no other clip with audio gives no window."""
    clips = list_clips(corpus)
    torch.manual_seed(0)
    ds = PromptedWindows(clips, window=20, stride=10, prompt=15)
    assert {ds.clips[i].clip_id for i, _ in ds.index} == {f"c{i}" for i in range(6)}  # c6's partner c7 is silent
    starts = set()
    for k in range(len(ds)):
        item = ds[k]
        own, other = int(item["beta"][0, 1]), int(item["prompt_beta"][0, 1])
        assert other != own and other // 2 == own // 2
        assert item["prompt_audio"].shape == (15 * 640,) and item["prompt_pose"].shape == (15, 7)
        first = int(item["prompt_beta"][0, 0])
        assert torch.equal(item["prompt_beta"][:, 0], torch.arange(first, first + 15).float())  # contiguous
        starts.add(first)
    assert len(starts) > 1  # random starts
    fixed = PromptedWindows(clips, window=20, stride=10, prompt=15, random=False)
    twice = [[(int(fixed[k]["prompt_beta"][0, 1]), int(fixed[k]["prompt_beta"][0, 0])) for k in range(len(fixed))]
             for _ in range(2)]
    assert twice[0] == twice[1] and {s for _, s in twice[0]} == {0}
    with pytest.raises(ValueError, match="clips-per-identity"):
        PromptedWindows([clips[0], clips[2]], window=20, stride=10, prompt=15)
    dm = AudioMeshDataModule(corpus, window=20, stride=10, batch_size=2, prompt=15)
    batch = next(iter(dm.val_dataloader()))
    assert batch["prompt_beta"].shape == (2, 15, K) and batch["beta"].shape == (2, 20, K)


def test_stage1_datamodule_and_ddp_shards(corpus):
    dm = AudioMeshDataModule(corpus, window=20, stride=10, batch_size=4, num_workers=2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (4, 20 * 640) and batch["beta"].shape == (4, 20, K)
    ds = dm.dataset("train")
    shards = [set(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert not (shards[0] & shards[1]) and len(shards[0] | shards[1]) == len(ds)


def test_stage2_pairs_come_from_one_clip(corpus):
    clips = list_clips(corpus)
    ds = FramePairs(clips, pairs_per_clip=4)
    items = [ds[k] for k in range(len(ds))]
    assert len(items) == 4 * len(clips) and [i["clip"] for i in items] == [k // 4 for k in range(len(ds))]
    for item in items:
        seed = int(Clip(clips[item["clip"]]).meta["source"][4:])
        # The green channel encodes the clip, red the frame: both frames are from the clip.
        for key, index in (("source", "source_index"), ("driving", "driving_index")):
            img = item[key]
            assert img.shape == (3, S, S) and abs(img[1].mean().item() * 255 - seed * 20) < 6
            assert abs(img[0].mean().item() * 255 - 2 * item[index]) < 5
        assert item["source_vertices"].shape == (V, 3) and item["driving_mask"].dtype == torch.int64
        assert set(item["source_mask"].unique().tolist()) == {0, 1, 2}
        clip = Clip(clips[item["clip"]])
        np.testing.assert_array_equal(item["driving_vertices"].numpy(), clip.rows("vertices")[item["driving_index"]])


def draws(ds) -> list[tuple[int, int]]:
    return [(ds[k]["source_index"], ds[k]["driving_index"]) for k in range(len(ds))]


def test_stage2_training_pairs_differ_by_pass_and_are_reproducible(corpus):
    ds = FramePairs(list_clips(corpus), pairs_per_clip=3)
    torch.manual_seed(0)
    first, second = draws(ds), draws(ds)
    torch.manual_seed(0)
    assert draws(ds) == first and first != second


def test_stage2_fixed_pairs_do_not_follow_the_random_state(corpus):
    """Validation pairs depend on (seed, item) alone: the same under any random state, in a
    worker or not; another seed draws others."""
    ds = FramePairs(list_clips(corpus), pairs_per_clip=3, seed=5, fixed_pairs=True)
    torch.manual_seed(0)
    first = draws(ds)
    torch.manual_seed(1)
    assert draws(ds) == first
    in_workers = [(int(b["source_index"]), int(b["driving_index"]))
                  for b in DataLoader(ds, batch_size=None, num_workers=2)]
    assert in_workers == first
    assert draws(FramePairs(list_clips(corpus), pairs_per_clip=3, seed=6, fixed_pairs=True)) != first


def test_stage2_ranks_get_as_many_items_whatever_the_clips(corpus):
    """Under DDP the distributed sampler gives each rank ceil(N / world) items: 3 clips of
    different lengths over 2 ranks still make equal shards (one item repeated)."""
    ds = FramePairs(list_clips(corpus)[:3], pairs_per_clip=3)
    shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5 and set(shards[0]) | set(shards[1]) == set(range(9))


def test_stage2_datamodule(corpus):
    dm = FramePairDataModule(corpus, pairs_per_clip=2, batch_size=3)
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == (3, 3, S, S) and batch["driving_vertices"].shape == (3, V, 3)
    # Clips of extra corpora (all their splits) join the training split only.
    extra = corpus.parent / "extra"
    for i in range(2):
        write_clip(extra, f"x{i}", fake_clip(t=30, identity=f"x{i}", seed=10 + i, audio=False))
    build_manifest(extra, val_fraction=0.5, test_fraction=0.0, seed=0)
    dm = FramePairDataModule(corpus, extra_train=[str(extra)])
    assert {c.clip_id for c in dm.train_dataloader().dataset.clips} == {
        c.clip_id for c in FramePairDataModule(corpus).train_dataloader().dataset.clips} | {"x0", "x1"}
    assert ([c.clip_id for c in dm.val_dataloader().dataset.clips]
            == [c.clip_id for c in FramePairDataModule(corpus).val_dataloader().dataset.clips])
    shutil.rmtree(corpus / "c0")  # a manifest entry whose clip vanished fails clearly
    with pytest.raises(ClipError):
        FramePairs([corpus / "c0"])


DDP_RUN = Path(__file__).with_name("ddp_run.py")


@pytest.fixture(scope="module")
def uneven_corpus(tmp_path_factory):
    """5 training clips and 3 validation clips of different lengths: neither divides by 2 ranks."""
    root = tmp_path_factory.mktemp("uneven") / "corpus"
    for i in range(8):
        write_clip(root, f"u{i}", fake_clip(t=30 + 7 * i, identity=f"person{i}", seed=i))
    manifest = build_manifest(root, val_fraction=3 / 8, test_fraction=0.0, seed=0)
    assert [len(manifest["splits"][s]) for s in ("train", "val")] == [5, 3]
    return root


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(commands: list[list[str]], envs: list[dict], timeout: float) -> None:
    """Start the processes together; fail (and kill them all) if any is not done in time."""
    import os
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, str(DDP_RUN), *c], env={**os.environ, **e}, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c, e in zip(commands, envs)]
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"DDP run did not finish in {timeout} s (a rank waits in a collective)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)


def check_even_ranks(out: Path, stage: int, corpus: Path) -> list[dict]:
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for e in range(2):
        assert ranks[0]["epochs"][e]["batches"] == ranks[1]["epochs"][e]["batches"] > 0  # even
        assert ranks[0]["epochs"][e]["val"] == ranks[1]["epochs"][e]["val"]  # synced
    seen = {tuple(s) for r in ranks for s in r["epochs"][0]["samples"]}
    if stage == 1:  # the training windows, less at most a partial batch a rank (drop_last)
        ds = AudioMeshWindows(split_clips(corpus, "train"), window=20, stride=10)
        assert seen <= set(ds.index) and len(set(ds.index) - seen) <= 2 * (3 - 1)
    else:  # pairs from every training clip; fresh pairs in the next epoch
        assert {s[0] for s in seen} == set(range(5))
        again = {tuple(s) for r in ranks for s in r["epochs"][1]["samples"]}
        assert again != seen
    # The model is fixed (lr 0): validation must not move between epochs.
    assert ranks[0]["epochs"][0]["val"] == ranks[0]["epochs"][1]["val"]
    return ranks


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_with_uneven_clips_finishes_with_even_ranks(uneven_corpus, tmp_path, stage):
    """Two-process DDP (gloo, Lightning's ddp strategy, a real program) over 5 clips of
    different lengths: every rank runs the same number of batches (else DDP hangs in the
    gradient all-reduce), together they cover the split, and validation of a fixed model gives
    the same value every epoch."""
    run_ranks([["--stage", str(stage), "--corpus", str(uneven_corpus), "--out", str(tmp_path), "--workers", "1"]],
              [{"MASTER_PORT": str(free_port())}], timeout=240)
    check_even_ranks(tmp_path, stage, uneven_corpus)


def test_two_nodes_of_one_process_each(uneven_corpus, tmp_path):
    """The multi-node recipe (``--trainer.num_nodes 2``): two processes started by hand as nodes
    0 and 1 of one device each, meeting over loopback through Lightning's environment variables."""
    port = str(free_port())
    command = ["--stage", "2", "--corpus", str(uneven_corpus), "--out", str(tmp_path), "--devices", "1",
               "--num-nodes", "2"]
    run_ranks([command, command], [{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(n)}
                                   for n in (0, 1)], timeout=240)
    check_even_ranks(tmp_path, 2, uneven_corpus)


def write_format1_clip(root: Path, clip_id: str, data: ClipData) -> Path:
    """A clip as format 1 wrote it: H.264 frames.mp4 and one compressed arrays.npz."""
    from vividtalk.data import write_video
    from vividtalk.data.clip import _write_wav

    path = root / clip_id
    path.mkdir(parents=True)
    write_video(path / "frames.mp4", data.frames, fps=25, preset="veryfast")
    np.savez_compressed(path / "arrays.npz", **data.arrays)
    _write_wav(path / "audio.wav", data.audio)
    meta = {**data.meta, "format_version": 1, "clip_id": clip_id, "num_frames": len(data.frames), "fps": 25,
            "size": data.frames.shape[1], "has_audio": True}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_migration_rewrites_format1_clips_in_place(tmp_path, monkeypatch):
    from vividtalk.data import read_frames
    from vividtalk.data.clip import migrate_corpus

    root = tmp_path / "old"
    for i in range(3):
        write_format1_clip(root, f"c{i}", fake_clip(t=20 + i, identity=f"p{i}", seed=i))
    np.save(root / "c0" / "features-toy.npy", np.ones((20, 4), np.float32))
    old_frames, old_audio = read_frames(root / "c1" / "frames.mp4"), load_audio(root / "c1" / "audio.wav")
    with pytest.raises(ClipError, match="format 1 .*vividtalk-prep migrate"):
        list_clips(root)
    with pytest.raises(ClipError, match="migrate"):
        Clip(root / "c1")
    # A crash between moving the old clip aside and moving the new one in loses nothing.
    real_rename, calls = os.rename, []

    def crash_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-swap")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_second_rename)
    with pytest.raises(KeyboardInterrupt):
        migrate_corpus(root, progress=False)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (root / "c0").exists() and list(root.glob(".old-c0-*"))
    assert migrate_corpus(root, progress=False) == {"migrated": 3, "current": 0}  # c0 put back, then migrated
    assert [p.name for p in list_clips(root)] == ["c0", "c1", "c2"] and not list(root.glob(".*"))
    clip, data = Clip(root / "c1"), fake_clip(t=21, identity="p1", seed=1)
    for name in ("beta", "vertices", "masks", "identity"):
        np.testing.assert_array_equal(clip.arrays()[name], data.arrays[name])
    np.testing.assert_array_equal(clip.audio(), old_audio)  # the samples unchanged
    assert np.abs(clip.frames().astype(int) - old_frames).mean() < 1.0  # the decoded video, as JPEG
    np.testing.assert_array_equal(Clip(root / "c0").features("toy"), np.ones((20, 4)))  # cache kept
    assert migrate_corpus(root, progress=False) == {"migrated": 0, "current": 3}  # resumable, idempotent


def test_migrate_command(tmp_path, capsys):
    from data_prep.__main__ import main

    write_format1_clip(tmp_path / "old", "c0", fake_clip(t=12, identity="p0"))
    assert main(["migrate", str(tmp_path / "old"), "--quiet"]) == 0
    assert "1 clips migrated, 0 already current" in capsys.readouterr().out
    assert [p.name for p in list_clips(tmp_path / "old")] == ["c0"]
    assert main(["migrate", str(tmp_path / "missing")]) == 2  # a clear one-line error
    assert "corpus directory not found" in capsys.readouterr().err
