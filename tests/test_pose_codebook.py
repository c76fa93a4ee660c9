"""Head-pose codebook (VividTalk stage 1): pose features, the VQ-VAE, the codebook and the mapper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vividtalk.audio2mesh.codebook import Codebook, nearest_codes
from vividtalk.audio2mesh.pose_mapper import PoseMapper, generate_codes, generate_pose, map_to_pose
from vividtalk.audio2mesh.pose_repr import features_to_pose, pose_statistics, pose_to_features
from vividtalk.audio2mesh.pose_vqvae import PoseVQVAE

DEG = math.pi / 180


pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: fastest, reproducible


def synthetic_poses(batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth head motion [batch, frames, 7] at 25 fps: each angle (and the zoom) a sum of three
    random 0.1-1 Hz sinusoids of a few degrees; the translation follows yaw and pitch."""
    t = torch.arange(frames, dtype=torch.float32) / 25.0
    freq = torch.rand(batch, 3, 4, generator=generator) * 0.9 + 0.1
    phase = torch.rand(batch, 3, 4, generator=generator) * 2 * math.pi
    waves = torch.sin(2 * math.pi * freq[..., None] * t + phase[..., None]).sum(1) / 3  # [B, 4, T]
    pitch, yaw, roll, zoom = waves.unbind(1)
    pose = [4 * DEG * pitch, 6 * DEG * yaw, 3 * DEG * roll, 128 + 10 * yaw, 128 - 8 * pitch]
    pose += [torch.full_like(yaw, 500.0), 150 * (1 + 0.03 * zoom)]
    return torch.stack(pose, dim=-1)


def synthetic_features(batch: int, frames: int, seed: int) -> torch.Tensor:
    """Pose features [batch, frames, 6] relative to each sequence's first frame."""
    pose = synthetic_poses(batch, frames, torch.Generator().manual_seed(seed))
    return pose_to_features(pose, pose[:, 0])


# ----------------------------------------------------------------------------- pose features


def test_pose_features_round_trip_and_reference_is_zero():
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(2, 3, 20, 7, generator=g, dtype=torch.float64)
    pose[..., :3] *= 0.2
    pose[..., 3:6] *= 20.0
    pose[..., 6] = 150 + 20 * pose[..., 6]
    reference = pose[:, :, 5].clone()  # [2, 3, 7]: frame 5 is the reference
    reference[..., 5] = 123.0  # tz of the reference only (pose's frame 5 keeps its own tz)
    feats = pose_to_features(pose, reference)
    assert feats.shape == (2, 3, 20, 6)
    back = features_to_pose(feats, reference)
    expect = pose.clone()
    expect[..., 5] = 123.0  # tz comes from the reference
    torch.testing.assert_close(back, expect, rtol=0, atol=1e-12)
    assert feats[:, :, 5].abs().max() == 0  # the reference frame maps to zeros
    torch.testing.assert_close(pose_to_features(back, reference), feats, rtol=0, atol=1e-12)


def test_pose_features_units():
    ref = torch.tensor([0.1, -0.2, 0.0, 100.0, 50.0, 7.0, 200.0], dtype=torch.float64)
    pose = ref + torch.tensor([0.05, 0.01, -0.02, 20.0, -10.0, 3.0, 200.0], dtype=torch.float64)
    feats = pose_to_features(pose[None, None], ref[None])[0, 0]
    expect = torch.tensor([0.05, 0.01, -0.02, 0.1, -0.05, math.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(feats, expect)


def test_pose_statistics_static_smooth_jittery():
    t = torch.arange(100, dtype=torch.float32)[None, :, None] / 25.0
    static = torch.zeros(1, 100, 6)
    smooth = 0.05 * torch.sin(2 * math.pi * 0.5 * t).expand(1, 100, 6)
    jitter = smooth + 0.01 * torch.randn(1, 100, 6, generator=torch.Generator().manual_seed(0))
    s0, s1, s2 = (pose_statistics(x) for x in (static, smooth, jitter))
    assert s0["std"].max() == 0 and s0["jerk"].max() == 0
    assert s1["std"].min() > 0.03
    assert (s1["jerk_ratio"] < 0.01).all() and (s2["jerk_ratio"] > 0.3).all()
    assert s1["velocity"].shape == (6,)


# ----------------------------------------------------------------------------- codebook


@pytest.mark.parametrize("normalize_codes", [False, True])
def test_quantisation_picks_nearest_code(normalize_codes):
    torch.manual_seed(0)
    book = Codebook(24, 5, normalize_codes=normalize_codes).eval()
    book.weight.data.normal_()
    z = torch.randn(3, 7, 5)
    out = book(z)
    codes = F.normalize(book.weight, dim=-1) if normalize_codes else book.weight
    vecs = F.normalize(z, dim=-1) if normalize_codes else z
    for b in range(3):
        for t in range(7):  # brute force
            best = min(range(24), key=lambda k: float(((vecs[b, t] - codes[k]) ** 2).sum()))
            assert out["indices"][b, t] == best
            torch.testing.assert_close(out["quantized"][b, t], codes[best])
    torch.testing.assert_close(out["z_q"], out["quantized"])  # straight-through: same values
    assert nearest_codes(vecs.reshape(-1, 5), codes).tolist() == out["indices"].flatten().tolist()
    assert 1.0 <= out["perplexity"] <= out["codes_used"] <= 21


def test_codebook_eval_mode_does_not_update():
    book = Codebook(8, 4, usage_decay=0.5).eval()
    book.usage.fill_(0.0)  # every code "dead"
    before = book.weight.detach().clone()
    book(torch.randn(10, 4))
    assert torch.equal(book.weight, before) and book.usage.max() == 0


# ----------------------------------------------------------------------------- VQ-VAE


def small_vqvae(**kwargs) -> PoseVQVAE:
    args = dict(hidden_dim=32, code_dim=8, codebook_size=64, downsample=4, num_layers=1)
    return PoseVQVAE(**{**args, **kwargs})


def test_vqvae_shapes_and_decode_indices():
    torch.manual_seed(0)
    model = small_vqvae().eval()
    x = synthetic_features(3, 24, seed=1)
    out = model(x)
    assert out["reconstruction"].shape == (3, 24, 6)
    assert out["indices"].shape == (3, 6) and out["indices"].dtype == torch.int64
    assert out["z_e"].shape == out["z_q"].shape == (3, 6, 8)
    for key in ("reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity", "loss"):
        assert out[key].dim() == 0 and torch.isfinite(out[key])
    torch.testing.assert_close(model.decode(out["indices"]), out["reconstruction"])
    torch.testing.assert_close(model.decode(out["z_q"]), out["reconstruction"])
    with pytest.raises(ValueError, match="multiple of downsample"):
        model(x[:, :22])


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("normalize_codes", [False, True])
def test_vqvae_gradient_paths(normalize_codes):
    torch.manual_seed(0)
    model = small_vqvae(normalize_codes=normalize_codes)
    x = synthetic_features(4, 16, seed=2)
    model.set_normalization(x)

    model(x)["reconstruction_loss"].backward()  # straight-through: decoder -> encoder
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.encoder))
    assert all(g is not None for g in _grads(model.decoder))
    assert model.codebook.weight.grad is None

    model.zero_grad(set_to_none=True)
    model(x)["codebook_loss"].backward()  # ||sg(z_e) - q||^2 moves only the codes
    assert model.codebook.weight.grad.abs().sum() > 0
    assert all(g is None for g in _grads(model.encoder) + _grads(model.decoder))

    model.zero_grad(set_to_none=True)
    model(x)["commitment_loss"].backward()  # ||z_e - sg(q)||^2 moves only the encoder
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.encoder))
    assert model.codebook.weight.grad is None


def test_straight_through_copies_the_gradient():
    """d L / d z_e equals d L / d z_q exactly (plain codebook: the identity Jacobian)."""
    torch.manual_seed(0)
    model = small_vqvae(normalize_codes=False).eval()
    x = synthetic_features(2, 16, seed=3)
    z_e = model.encode(x)
    z_e.retain_grad()
    vq = model.quantize(z_e)
    vq["z_q"].retain_grad()
    model.decode_normalized(vq["z_q"]).pow(2).sum().backward()
    assert z_e.grad.abs().sum() > 0
    torch.testing.assert_close(z_e.grad, vq["z_q"].grad, rtol=0, atol=0)


def _train(model: PoseVQVAE, data: torch.Tensor, steps: int, lr: float, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(0, data.shape[0], (32,))]
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("reset", [True, False])
def test_dead_code_reset_revives_a_collapsed_codebook(reset):
    torch.manual_seed(0)
    model = small_vqvae(usage_decay=0.9, dead_code_threshold=0.05 if reset else 0.0)
    data = synthetic_features(512, 16, seed=4)
    model.set_normalization(data)
    model.codebook.weight.data[:] = -10.0  # all codes identical and far away: one code used
    test = synthetic_features(64, 16, seed=5)
    with torch.no_grad():
        assert model.eval()(test)["codes_used"] == 1
    _train(model, data, steps=120, lr=3e-3, seed=0)
    with torch.no_grad():
        used = model(test)["codes_used"].item()
    if reset:
        assert used > 20, used
    else:
        assert used <= 3, used


def test_vqvae_learns_smooth_reconstructions():
    torch.manual_seed(0)
    model = small_vqvae(hidden_dim=64, codebook_size=128)
    data = synthetic_features(1024, 32, seed=6)
    test = synthetic_features(64, 32, seed=7)
    model.set_normalization(data)
    with torch.no_grad():
        before = model.eval()(test)["reconstruction_loss"].item()
    _train(model, data, steps=500, lr=3e-3, seed=1)
    with torch.no_grad():
        out = model(test)
    after = out["reconstruction_loss"].item()
    assert after < before / 5, (before, after)
    # Smooth: the reconstruction is far less jerky than the truth plus white noise of the same
    # error, and close to the truth's own jerk.
    noise = (out["reconstruction"] - test).std(dim=(0, 1)) * torch.randn(test.shape)
    jerk = pose_statistics(out["reconstruction"])["jerk"]
    assert (jerk < 0.1 * pose_statistics(test + noise)["jerk"]).all(), jerk
    assert (jerk < 10 * pose_statistics(test)["jerk"]).all(), jerk
    assert out["perplexity"] > 20


def test_codebook_under_torch_distributed(tmp_path):
    """The distributed path (all-reduced counts, codes broadcast from rank 0) with one rank."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        book = Codebook(16, 4, usage_decay=0.5).train()
        book.weight.data[:] = 5.0
        for _ in range(8):
            out = book(torch.randn(64, 4))
        assert out["codes_used"] > 8
        assert torch.isclose(book.usage.sum(), torch.tensor(1.0), atol=0.2)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- mapper


def small_mapper(audio_dim: int = 20) -> PoseMapper:
    return PoseMapper(audio_dim, style_dim=12, code_dim=8, downsample=4, d_model=32, num_layers=2, num_heads=4)


def codes_of(vqvae: PoseVQVAE, batch: int, steps: int, seed: int) -> torch.Tensor:
    """Random code vectors [batch, steps, code_dim] of the codebook (the mapper's ``previous``)."""
    g = torch.Generator().manual_seed(seed)
    return vqvae.codebook.codes()[torch.randint(0, vqvae.codebook.num_codes, (batch, steps), generator=g)].detach()


def test_mapper_shapes_conditioning_and_causality():
    torch.manual_seed(0)
    mapper, vqvae = small_mapper().eval(), small_vqvae()
    audio, style, pose0 = torch.randn(2, 40, 20), torch.randn(2, 12), torch.randn(2, 6)
    previous = codes_of(vqvae, 2, 10, seed=0)
    with torch.no_grad():
        latents = mapper(audio, style, pose0, previous)["latents"]
        assert latents.shape == (2, 10, 8)
        for changed in (
            mapper(torch.randn(2, 40, 20), style, pose0, previous),
            mapper(audio, torch.randn(2, 12), pose0, previous),
            mapper(audio, style, torch.zeros(2, 6), previous),
            mapper(audio, style, pose0, codes_of(vqvae, 2, 10, seed=1)),
        ):
            assert (changed["latents"] - latents).abs().mean() > 1e-3
        # Step k sees the codes of steps < k only (row k of previous is step k - 1's code).
        later = previous.clone()
        later[:, 6:] = codes_of(vqvae, 2, 4, seed=2)
        other = mapper(audio, style, pose0, later)["latents"]
        torch.testing.assert_close(other[:, :6], latents[:, :6], rtol=0, atol=1e-6)
        assert (other[:, 6:] - latents[:, 6:]).abs().max() > 1e-4
        # A prefix of the steps gives the same latents as the whole sequence.
        torch.testing.assert_close(mapper(audio, style, pose0, previous[:, :4])["latents"], latents[:, :4],
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of downsample"):
        mapper(audio[:, :38], style, pose0, previous)


def test_map_to_pose_trains_mapper_only():
    torch.manual_seed(0)
    vqvae = small_vqvae()
    data = synthetic_features(64, 30, seed=8)
    vqvae.set_normalization(data)
    vqvae.requires_grad_(False).train()  # frozen; train mode must still not touch the codebook
    codes, usage = vqvae.codebook.weight.clone(), vqvae.codebook.usage.clone()
    mapper = small_mapper()
    audio, style = torch.randn(4, 30, 20), torch.randn(4, 12)
    out = map_to_pose(mapper, vqvae, audio, style, torch.zeros(4, 6), target=data[:4])
    assert out["features"].shape == (4, 30, 6)  # T = 30 is padded to 32 and cropped back
    assert out["indices"].shape == out["target_indices"].shape == (4, 8) and out["latents"].shape == (4, 8, 8)
    # The targets are the codes the frozen encoder gives the real poses.
    padded = torch.cat([data[:4], data[:4, -1:].expand(4, 2, 6)], dim=1)
    assert torch.equal(out["target_indices"], vqvae.eval().quantize(vqvae.encode(padded))["indices"])
    out["loss"].backward()
    grads = [p.grad for p in mapper.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert mapper.audio_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vqvae.parameters())
    assert torch.equal(vqvae.codebook.weight, codes) and torch.equal(vqvae.codebook.usage, usage)


def test_map_to_pose_fits_a_target():
    """A few steps of L_map through the frozen codebook and decoder lower the loss and teach
    the mapper the target's codes."""
    torch.manual_seed(0)
    vqvae = small_vqvae()
    data = synthetic_features(256, 32, seed=9)
    vqvae.set_normalization(data)
    _train(vqvae, data, steps=100, lr=3e-3, seed=2)
    vqvae.requires_grad_(False)
    mapper = small_mapper()
    opt = torch.optim.Adam(mapper.parameters(), lr=3e-3)
    audio, style, target = torch.randn(8, 32, 20), torch.randn(8, 12), data[:8]
    losses = []
    for _ in range(80):
        out = map_to_pose(mapper, vqvae, audio, style, torch.zeros(8, 6), target=target)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert min(losses[-5:]) < 0.5 * losses[0], losses
    assert out["code_accuracy"] > 0.5
    # Greedy generation now follows the memorised codes.
    indices = generate_codes(mapper.eval(), vqvae, audio, style, torch.zeros(8, 6), temperature=0.0)
    assert (indices == out["target_indices"]).float().mean() > 0.5


def test_generation_samples_reproducibly_and_greedy_is_nearest():
    torch.manual_seed(1)
    mapper, vqvae = small_mapper().eval(), small_vqvae().eval()
    audio, style, pose0 = torch.randn(2, 30, 20), torch.randn(2, 12), torch.zeros(2, 6)
    out = generate_pose(mapper, vqvae, audio, style, pose0, generator=torch.Generator().manual_seed(0))
    assert out["features"].shape == (2, 30, 6) and out["indices"].shape == (2, 8)
    again = generate_pose(mapper, vqvae, audio, style, pose0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["indices"], again["indices"])
    torch.testing.assert_close(out["features"], vqvae.decode(out["indices"])[:, :30])
    # temperature 0: each step's code is the nearest to the mapper's latent given the codes so far.
    greedy = generate_codes(mapper, vqvae, F.pad(audio.transpose(1, 2), (0, 2), mode="replicate").transpose(1, 2),
                            style, pose0, temperature=0.0)
    codes = vqvae.codebook.codes()
    previous = torch.cat([torch.zeros(2, 1, 8), codes[greedy[:, :-1]]], dim=1)
    latents = mapper(F.pad(audio.transpose(1, 2), (0, 2), mode="replicate").transpose(1, 2), style, pose0,
                     previous)["latents"]
    assert torch.equal(vqvae.quantize(latents, update=False)["indices"], greedy)


def test_perplexity_is_exp_entropy_of_the_histogram():
    from scipy.stats import entropy

    from vividtalk.audio2mesh.codebook import perplexity

    assert perplexity(torch.tensor([0.0, 7.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(torch.full((16,), 3.0)).item() == pytest.approx(16.0)
    counts = torch.tensor([5.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    assert perplexity(counts).item() == pytest.approx(math.exp(entropy(counts.numpy())))
