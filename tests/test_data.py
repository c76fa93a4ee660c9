"""The clip format, manifests and the two DataModules, on tiny generated corpora."""

import json
import shutil

import numpy as np
import pytest
import torch
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
    write_clip,
    write_features,
)
from vividtalk.data.stage1 import AudioMeshDataModule, AudioMeshWindows
from vividtalk.data.stage2 import FramePairDataModule, FramePairs, shard_of

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
    assert np.abs(frames[..., 0].astype(int) - data.frames[..., 0]).mean() < 3  # lossy video
    for name in ("beta", "pose", "masks", "identity", "vertices"):
        np.testing.assert_array_equal(clip.arrays()[name], data.arrays[name])
    audio = clip.audio()
    assert audio.shape == (30 * 640,) and np.abs(audio - data.audio).max() < 1e-3


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

    monkeypatch.setattr(clip_module.np, "savez_compressed", crash)
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
    assert list_clips(tmp_path) == []


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


def test_stage1_datamodule_and_ddp_shards(corpus):
    dm = AudioMeshDataModule(corpus, window=20, stride=10, batch_size=4, num_workers=2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (4, 20 * 640) and batch["beta"].shape == (4, 20, K)
    ds = dm.dataset("train")
    shards = [set(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert not (shards[0] & shards[1]) and len(shards[0] | shards[1]) == len(ds)


def test_stage2_pairs_come_from_one_clip(corpus):
    clips = list_clips(corpus)
    ds = FramePairs(clips, pairs_per_clip=4, shuffle_buffer=8, rank=0, world=1)
    items = list(ds)
    assert len(items) == 4 * len(clips)
    for item in items:
        seed = int(Clip(clips[item["clip"]]).meta["source"][4:])
        # The green channel encodes the clip, red the frame: both frames are from the clip.
        for key, index in (("source", "source_index"), ("driving", "driving_index")):
            img = item[key]
            assert img.shape == (3, S, S) and abs(img[1].mean().item() * 255 - seed * 20) < 6
            assert abs(img[0].mean().item() * 255 - 2 * item[index]) < 5
        assert item["source_vertices"].shape == (V, 3) and item["driving_mask"].dtype == torch.int64
        assert set(item["source_mask"].unique().tolist()) == {0, 1, 2}


def test_stage2_shards_and_workers(corpus):
    clips = list_clips(corpus)
    assert shard_of(8, 0, 2, 0, 1) == [0, 2, 4, 6] and shard_of(8, 1, 2, 1, 2) == [3, 7]
    seen = []
    for rank in (0, 1):
        ds = FramePairs(clips, pairs_per_clip=2, rank=rank, world=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        seen.append({item["clip"] for item in loader})
    assert not (seen[0] & seen[1]) and seen[0] | seen[1] == set(range(len(clips)))


def test_stage2_passes_differ_and_are_reproducible(corpus):
    clips = list_clips(corpus)
    ds = FramePairs(clips, pairs_per_clip=3, rank=0, world=1)
    torch.manual_seed(0)
    first, second = [(i["clip"], i["source_index"]) for i in ds], [(i["clip"], i["source_index"]) for i in ds]
    torch.manual_seed(0)
    again = [(i["clip"], i["source_index"]) for i in ds]
    assert first == again and first != second


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
    assert {p.name for p in dm.train_dataloader().dataset.clips} == {
        p.name for p in FramePairDataModule(corpus).train_dataloader().dataset.clips} | {"x0", "x1"}
    assert dm.val_dataloader().dataset.clips == FramePairDataModule(corpus).val_dataloader().dataset.clips
    shutil.rmtree(corpus / "c0")  # a manifest entry whose clip vanished fails clearly
    with pytest.raises(ClipError):
        list(FramePairs([corpus / "c0"], rank=0, world=1))


class RecordingModule(__import__("pytorch_lightning").LightningModule):
    """Records which samples each DDP rank trains on (a stand-in for a real stage)."""

    def __init__(self, out_dir: str, key: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.out_dir, self.key, self.seen = out_dir, key, []

    def training_step(self, batch, batch_idx):
        ids = batch["clip"] * 1000 + batch[self.key]
        self.seen.extend(ids.tolist())
        return self.layer(torch.ones(1, 1)).sum() * 0.0

    def on_train_epoch_end(self) -> None:
        path = f"{self.out_dir}/rank{self.global_rank}.json"
        with open(path, "w") as f:
            json.dump(self.seen, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_ranks_see_their_own_shards(corpus, tmp_path, stage):
    """A real two-process DDP run (gloo on CPU): each rank trains on different samples."""
    import pytorch_lightning as pl

    if stage == 1:
        dm, key = AudioMeshDataModule(corpus, window=20, stride=10, batch_size=2), "start"
    else:
        dm, key = FramePairDataModule(corpus, pairs_per_clip=2, batch_size=2), "source_index"
    model = RecordingModule(str(tmp_path), key)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] and seen[1]
    if stage == 1:
        assert not set(seen[0]) & set(seen[1])  # the distributed sampler's disjoint shards
    else:
        clips = [{s // 1000 for s in rank} for rank in seen]
        assert not clips[0] & clips[1]  # each rank decodes its own clips
