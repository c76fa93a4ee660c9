"""The audio-motion sync expert: offset scores against an explicit loop, and learning a sync."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from vividtalk.audio2mesh.sync_expert import SyncExpert
from vividtalk.audio2mesh.sync_module import SyncExpertModule, offset_scores


def test_offset_scores_match_an_explicit_loop():
    torch.manual_seed(0)
    expert = SyncExpert(lip_dim=6, audio_dim=4, hidden=8, embed_dim=5, window=5).eval()
    lips, audio = torch.randn(2, 30, 6), torch.randn(2, 30, 4)
    k = 3
    with torch.no_grad():
        fast = offset_scores(expert, lips, audio, k)
        ref = torch.zeros(2, 2 * k + 1)
        w = 30 - 5 + 1
        for b in range(2):
            for j, off in enumerate(range(-k, k + 1)):
                sims = []
                for t in range(k, w - k):
                    el = expert.embed_lips(lips[b:b + 1, t:t + 5])[0, 0]
                    ea = expert.embed_audio(audio[b:b + 1, t + off:t + off + 5])[0, 0]
                    sims.append(torch.dot(el, ea))
                ref[b, j] = torch.stack(sims).mean()
    assert torch.allclose(fast, ref, atol=1e-5)


class _Pairs(torch.utils.data.Dataset):
    """Audio features of smooth random speech-like tracks and 'lips' that follow them at offset 0."""

    def __init__(self, n: int, frames: int = 40, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        raw = torch.randn(n, frames + 4, 4, generator=g)
        self.audio = (raw[:, :-4] + raw[:, 1:-3] + raw[:, 2:-2]) / 3  # [n, T, 4] smooth
        mix = torch.randn(4, 6, generator=torch.Generator().manual_seed(99))  # one mapping for all sets
        self.lips = torch.tanh(self.audio @ mix) * 0.02  # [n, T, 6] in face-height units

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.audio[i], "lips": self.lips[i]}


class _ToyModule(SyncExpertModule):
    def lips(self, batch: dict) -> torch.Tensor:  # the toy data gives lip motion directly
        return batch["lips"]


def test_the_expert_learns_to_detect_the_offset():
    """Trained contrastively, the expert finds offset 0 on held-out pairs and the shift of
    audio that was moved by 4 frames."""
    torch.manual_seed(0)
    module = _ToyModule(SyncExpert(lip_dim=6, audio_dim=4, hidden=32, embed_dim=16, window=5),
                        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), max_offset=6)
    train = torch.utils.data.DataLoader(_Pairs(256), batch_size=16, shuffle=True)
    pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module, train)
    test = _Pairs(32, seed=1)
    module.eval()
    with torch.no_grad():
        aligned = offset_scores(module.expert, test.lips, test.audio, 6).argmax(-1) - 6
        late = torch.roll(test.audio, 4, dims=1)  # audio[t + 4] now holds what the lips do at t
        shifted = offset_scores(module.expert, test.lips, late, 6).argmax(-1) - 6
    assert (aligned == 0).float().mean() > 0.9
    assert (shifted == 4).float().mean() > 0.9


def _in_context(sync_weight: float):
    from vividtalk.audio2mesh.flow_transformer import FlowMatchingTransformer
    from vividtalk.audio2mesh.in_context_module import InContextMotionModule

    torch.manual_seed(0)
    net = FlowMatchingTransformer(51, 4, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_frames=64)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    expert = SyncExpert(lip_dim=240, audio_dim=4, hidden=8, embed_dim=8, window=5)
    return InContextMotionModule(net, sync_expert=expert, sync_weight=sync_weight)


def _batch(module, b=2, t=20):
    g = torch.Generator().manual_seed(1)
    face = module.face
    identity = face.assemble(torch.zeros(b, face.num_expressions))
    pose = torch.tensor([0.0, 0.0, 0.0, 128.0, 128.0, 0.0, 200.0]).repeat(b, t, 1)
    return {"beta": torch.rand(b, t, face.num_expressions, generator=g) * 0.3,
            "lip_offsets": torch.randn(b, t, face.num_lip_vertices, 3, generator=g) * 1e-3,
            "pose": pose, "identity": identity, "features": torch.randn(b, t, 4, generator=g)}


def test_sync_loss_trains_the_motion_model_not_the_expert():
    module = _in_context(sync_weight=0.5)
    batch = _batch(module)
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is None for p in module.sync_expert.parameters())
    assert module.network.motion_proj.weight.grad.abs().sum() > 0
    assert not module.sync_expert.training  # frozen: stays in eval mode


def test_sync_loss_is_one_minus_the_agreement_on_target_windows():
    from vividtalk.audio2mesh.sync_expert import lip_motion

    module = _in_context(sync_weight=0.5).eval()
    batch = _batch(module)
    x1 = module.motion(batch)
    target = torch.zeros(2, 20, dtype=torch.bool)
    target[:, 8:] = True
    t = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        got = module.sync_loss(module.lips(x1, batch["identity"]), batch["features"], target, t)
        pred = module.codec.decode(x1)
        agree = module.sync_expert(lip_motion(module.face, pred["beta"], pred["lip_offsets"], batch["identity"]),
                                   batch["features"])  # [2, 16]: window i centred on frame i + 2
        weight = torch.stack([(torch.arange(16) + 2 >= 8).float() * w for w in t])
        expected = ((1 - agree) * weight).sum() / weight.sum()
    assert torch.allclose(got, expected, atol=1e-6)


def test_lip_loss_is_the_lips_error_over_their_spread_on_target_frames():
    module = _in_context(sync_weight=0.0)
    batch = _batch(module)
    real = module.lips(module.motion(batch), batch["identity"])  # [2, 20, 240]
    target = torch.zeros(2, 20, dtype=torch.bool)
    target[0, 5:] = True
    target[1, :3] = True
    frames = real[target]  # [18, 240] the target frames only
    mean = frames.mean(0)
    assert torch.allclose(module.lip_loss(real, real, target), torch.tensor(0.0))
    assert torch.allclose(module.lip_loss(mean.expand_as(real), real, target), torch.tensor(1.0), atol=1e-5)
    noisy = real + 0.1 * torch.randn_like(real)
    noisy[~target] = 100.0  # context frames do not count
    expected = ((noisy[target] - frames) ** 2).mean() / ((frames - mean) ** 2).mean()
    assert torch.allclose(module.lip_loss(noisy, real, target), expected, rtol=1e-5)


def test_lip_loss_trains_the_network():
    module = _in_context(sync_weight=0.0)
    module.hparams.lip_weight = 1.0
    module.train()
    batch = _batch(module)
    torch.manual_seed(0)
    with_lips = module.training_step(batch, 0)
    module.hparams.lip_weight = 0.0
    torch.manual_seed(0)
    without = module.training_step(batch, 0)
    assert with_lips > without  # the same noise and masks, plus a positive term
    module.hparams.lip_weight = 1.0
    module.training_step(batch, 0).backward()
    assert module.network.motion_proj.weight.grad.abs().sum() > 0


def test_a_pipeline_saves_no_sync_expert(tmp_path):
    from vividtalk.pretrained import _load_state, build_stage, external_prefixes, inference_spec

    spec = {"class_path": "vividtalk.audio2mesh.in_context_module.InContextMotionModule", "init_args": {
        "network": {"class_path": "vividtalk.audio2mesh.flow_transformer.FlowMatchingTransformer",
                    "init_args": {"motion_dim": 51, "audio_dim": 4, "d_model": 16, "num_layers": 1, "num_heads": 2,
                                  "ffn_dim": 32}},
        "sync_expert": {"class_path": "vividtalk.audio2mesh.sync_expert.SyncExpert",
                        "init_args": {"lip_dim": 240, "audio_dim": 4, "hidden": 8, "embed_dim": 8}},
        "sync_checkpoint": "/somewhere/sync.ckpt", "sync_weight": 0.5}}
    clean = inference_spec(spec)
    assert clean["init_args"]["sync_expert"] is None and clean["init_args"]["sync_checkpoint"] is None
    trained = build_stage({**spec, "init_args": {**spec["init_args"], "sync_checkpoint": None}})
    served = build_stage(clean)
    _load_state(served, trained.state_dict(), "in_context")  # the expert's keys are not asked for
    assert not external_prefixes(served) and served.sync_expert is None
