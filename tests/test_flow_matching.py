"""MimicTalk's in-context motion model: codec, infilling masks, CFM loss, guidance, ODE, chunks."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from vividtalk.audio2mesh.flow_matching import (
    cfm_loss,
    guided_velocity,
    infill_mask,
    ot_path,
    sample,
    sample_chunked,
    solve_ode,
)
from vividtalk.audio2mesh.flow_transformer import FlowMatchingTransformer
from vividtalk.audio2mesh.motion_codec import MotionCodec


def _network(seed=0, **kw):
    torch.manual_seed(seed)
    net = FlowMatchingTransformer(motion_dim=6, audio_dim=5, d_model=32, num_layers=2, num_heads=2, ffn_dim=64,
                                  dropout=0.0, max_frames=128, **kw).eval()
    for p in net.out.parameters():  # away from the zero field it starts as
        nn.init.normal_(p, std=0.3)
    return net


def test_codec_round_trip_and_normalisation():
    g = torch.Generator().manual_seed(0)
    n, k, lips = 400, 7, 10
    latent = torch.randn(n, 4, generator=g)  # offsets on a 4-dimensional subspace: 4 components suffice
    basis = torch.randn(4, lips * 3, generator=g)
    beta = torch.rand(n, k, generator=g) * 0.5
    offsets = (latent @ basis).reshape(n, lips, 3) * 0.01 + 0.002
    pose = torch.randn(n, 3, generator=g) * 5
    codec = MotionCodec.fit(beta, offsets, pose, lip_components=4)
    x = codec.encode(beta, offsets, pose)
    assert x.shape == (n, k + 4 + 3)
    assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4)
    assert torch.allclose(x.std(0), torch.ones(x.shape[1]), atol=1e-3)
    back = codec.decode(x)
    assert torch.allclose(back["beta"], beta, atol=1e-5) and torch.allclose(back["pose"], pose, atol=1e-4)
    assert torch.allclose(back["lip_offsets"], offsets, atol=1e-5)
    # a state dict carries the statistics into a fresh codec of the same sizes
    fresh = MotionCodec(k, lips, 4, 3)
    fresh.load_state_dict(codec.state_dict())
    assert torch.equal(fresh.encode(beta, offsets, pose), x)
    with pytest.raises(ValueError, match="pose"):
        codec.encode(beta, offsets)


def test_infill_masks():
    g = torch.Generator().manual_seed(1)
    mask = infill_mask(2000, 50, g, min_target=0.3, max_target=0.9, max_segments=2, drop_prompt=0.1)
    full = mask.all(1)
    assert 0.07 < full.float().mean() < 0.13  # the unconditional share
    rest = mask[~full]
    share = rest.float().mean(1)
    assert share.min() >= 0.28 and share.max() <= 0.92 and (~rest).any(1).all() and rest.any(1).all()
    starts = (rest[:, 1:] & ~rest[:, :-1]).sum(1) + rest[:, 0].long()  # contiguous target segments
    assert starts.min() >= 1 and starts.max() <= 2 and (starts == 2).any()
    again = infill_mask(2000, 50, torch.Generator().manual_seed(1), 0.3, 0.9, 2, 0.1)
    assert torch.equal(mask, again)


def test_cfm_loss_is_taken_on_the_target_frames():
    """A field that returns the true OT velocity on target frames has zero loss, whatever it
    does on the context frames; the loss is the mean squared error there otherwise."""
    x1 = torch.randn(3, 20, 6)
    audio = torch.randn(3, 20, 5)
    target = infill_mask(3, 20, torch.Generator().manual_seed(2), drop_prompt=0.0)

    class Oracle(nn.Module):
        def forward(self, x_t, t, audio, context, known):  # knows x1, recovers x0 from x_t
            x0 = (x_t - t[:, None, None] * x1) / (1 - t[:, None, None])
            u = x1 - x0
            return torch.where(known[..., None], torch.full_like(u, 99.0), u)

    out = cfm_loss(Oracle(), x1, audio, target, torch.Generator().manual_seed(3))
    assert out["loss"].item() < 1e-8
    assert torch.allclose(out["x1_hat"][target], x1[target], atol=1e-4)  # the one-step estimate is exact
    zero = cfm_loss(lambda *a: torch.zeros_like(a[0]), x1, audio, target, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t, x0 = torch.rand(3, generator=g), torch.randn(x1.shape, generator=g)
    _, u = ot_path(x0, x1, t)
    assert zero["loss"].item() == pytest.approx((u[target] ** 2).mean().item(), rel=1e-5)


def test_guidance_matches_two_explicit_passes():
    net = _network()
    b, n = 2, 30
    audio, context, x = torch.randn(b, n, 5), torch.randn(b, n, 6), torch.randn(b, n, 6)
    known = torch.zeros(b, n, dtype=torch.bool)
    known[:, :12] = True
    prompt = torch.zeros_like(known)
    prompt[:, :8] = True  # frames 8-11 are a previous chunk: kept by both passes
    t = torch.full((b,), 0.3)
    with torch.no_grad():
        v = guided_velocity(net, audio, context, known, prompt, cfg_scale=2.0)(x, t)
        cond = net(x, t, audio, context, known)
        uncond = net(x, t, audio, context, known & ~prompt)
    assert torch.allclose(v, cond + 2.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the prompt does reach the output
    with torch.no_grad():
        assert torch.allclose(guided_velocity(net, audio, context, known, prompt, 0.0)(x, t), cond, atol=1e-6)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2)])
def test_ode_solver_order_on_a_linear_field(method, order):
    a = torch.tensor([[-1.0, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=torch.float64)
    exact = x0 @ torch.linalg.matrix_exp(a).T

    def error(steps):
        return (solve_ode(lambda x, t: x @ a.T, x0, steps, method) - exact).abs().max().item()

    ratio = error(20) / error(40)
    assert ratio == pytest.approx(2 ** order, rel=0.1)
    with pytest.raises(ValueError):
        solve_ode(lambda x, t: x, x0, 0, method)


def test_sample_keeps_the_context_and_depends_on_the_prompt():
    net = _network(seed=1)
    b, n = 1, 40
    audio = torch.randn(b, n, 5)
    context = torch.randn(b, n, 6)
    known = torch.zeros(b, n, dtype=torch.bool)
    known[:, :15] = True
    out = sample(net, audio, context, known, known, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :15], context[:, :15])
    other = context.clone()
    other[:, :15] = torch.randn(1, 15, 6)
    out2 = sample(net, audio, other, known, known, steps=4, generator=torch.Generator().manual_seed(0))
    assert (out2[:, 15:] - out[:, 15:]).abs().mean() > 1e-3  # another prompt, other motion


class _ZeroField(nn.Module):
    motion_dim, max_frames = 6, 128

    def forward(self, x_t, t, audio, context, known):
        return torch.zeros_like(x_t)


def test_temperature_scales_the_starting_noise():
    audio, context = torch.randn(2, 30, 5), torch.randn(2, 30, 6)
    known = torch.zeros(2, 30, dtype=torch.bool)
    known[:, :10] = True
    noise = torch.randn(context.shape, generator=torch.Generator().manual_seed(3))
    for temperature in (1.0, 0.5):  # the zero field keeps x_0: the output is the scaled noise
        out = sample(_ZeroField(), audio, context, known, known, steps=3,
                     generator=torch.Generator().manual_seed(3), temperature=temperature)
        assert torch.allclose(out[:, 10:], temperature * noise[:, 10:])
    net = _network(seed=2)
    runs = [sample_chunked(net, audio[:1], chunk=12, overlap=4, steps=2, temperature=0.0,
                           generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(runs[0], runs[1])  # no noise: the seed does not matter
    hot = sample_chunked(net, audio[:1], chunk=12, overlap=4, steps=2, generator=torch.Generator().manual_seed(1))
    assert (hot - runs[0]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="temperature"):
        sample(net, audio, context, known, known, temperature=-1.0)


class _TrackingField(nn.Module):
    """A known field: every unknown frame flows to a target that is the last known frame's value
    plus the running sum of the audio since it (a smooth function of the audio and the context),
    so a correctly stitched chunked sample equals the one-shot sample of the whole sequence."""

    motion_dim, max_frames = 2, 64

    def forward(self, x_t, t, audio, context, known):
        target = torch.zeros_like(x_t)
        for b in range(x_t.shape[0]):
            last = int(known[b].nonzero().max()) if known[b].any() else -1
            base = context[b, last] if last >= 0 else torch.zeros(x_t.shape[-1])
            steps = torch.cumsum(audio[b, :, :2], 0)
            target[b] = base + steps - (steps[last] if last >= 0 else 0)
        tt = t[:, None, None].clamp(max=1 - 1e-6)
        return (target - x_t) / (1 - tt)  # reaches target at t = 1 from any x_t


def test_chunk_borders_are_continuous():
    field = _TrackingField()
    audio = torch.randn(1, 150, 5) * 0.1
    prompt_audio, prompt_motion = torch.randn(1, 10, 5), torch.randn(1, 10, 2)
    chunked = sample_chunked(field, audio, prompt_audio, prompt_motion, chunk=40, overlap=8, steps=4, method="euler")
    whole = torch.cumsum(audio[0, :, :2], 0) + prompt_motion[0, -1]
    assert chunked.shape == (1, 150, 2)
    assert torch.allclose(chunked[0], whole, atol=1e-4)  # no jump at frames 40, 80, 120
    jumps = (chunked[0, 1:] - chunked[0, :-1]).abs().max()
    assert jumps <= audio[0, :, :2].abs().max() + 1e-4
    with pytest.raises(ValueError, match="max_frames"):
        sample_chunked(field, audio, prompt_audio, prompt_motion, chunk=60, overlap=8)


def test_network_shapes_and_zero_start():
    torch.manual_seed(0)
    net = FlowMatchingTransformer(6, 5, d_model=32, num_layers=1, num_heads=2, ffn_dim=64, max_frames=16)
    x = torch.randn(2, 16, 6)
    v = net(x, torch.rand(2), torch.randn(2, 16, 5), x, torch.zeros(2, 16, dtype=torch.bool))
    assert v.shape == (2, 16, 6) and v.abs().max() == 0  # zero-initialised output: the zero field
    with pytest.raises(ValueError, match="max_frames"):
        net(torch.randn(1, 17, 6), torch.rand(1), torch.randn(1, 17, 5), torch.randn(1, 17, 6),
            torch.zeros(1, 17, dtype=torch.bool))


def test_chunks_re_anchor_relative_channels_without_a_prompt():
    """Channel 1 is measured from the window's first frame (as the head pose is): the field
    returns each window's motion relative to its own first known frame, and the re-anchored
    chunks join into one continuous, correctly offset track."""

    class RelativeField(_TrackingField):
        def forward(self, x_t, t, audio, context, known):
            assert torch.allclose(context[:, 0, 1][known[:, 0]], torch.zeros(1)) or not known[:, 0].any()
            return super().forward(x_t, t, audio, context, known)

    audio = torch.randn(1, 120, 5) * 0.1
    anchor = lambda m: torch.stack([torch.zeros_like(m[:, 0, 0]), m[:, 0, 1]], -1)[:, None]  # noqa: E731
    chunked = sample_chunked(RelativeField(), audio, chunk=30, overlap=6, steps=2, method="euler", anchor=anchor)
    whole = torch.cumsum(audio[0, :, :2], 0)
    assert torch.allclose(chunked[0], whole, atol=1e-4)


def _prompted_module(**kw):
    from vividtalk.audio2mesh.in_context_module import InContextMotionModule

    torch.manual_seed(0)
    net = FlowMatchingTransformer(51, 4, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0, max_frames=64)
    nn.init.normal_(net.out.weight, std=0.1)
    return InContextMotionModule(net, **kw).eval()


def _takes(module, b, t, prefix=""):
    g = torch.Generator().manual_seed(len(prefix) + t)
    face = module.face
    pose = torch.tensor([0.0, 0.0, 0.0, 128.0, 128.0, 0.0, 200.0]) + torch.randn(b, t, 7, generator=g)
    return {f"{prefix}beta": torch.rand(b, t, face.num_expressions, generator=g) * 0.3,
            f"{prefix}lip_offsets": torch.randn(b, t, face.num_lip_vertices, 3, generator=g) * 1e-3,
            f"{prefix}pose": pose, f"{prefix}features": torch.randn(b, t, 4, generator=g)}


def test_prompted_batches_train_as_prompts_are_used():
    """A batch with prompts (another clip of the person) is one infilling problem [prompt |
    window]: a prompt is known unless dropped (then every frame is generated), the window is
    generated, with some of its own frames known (as a later chunk's tail) about half the time."""
    module = _prompted_module(drop_prompt=0.25)
    batch = {**_takes(module, 200, 12), **_takes(module, 200, 8, "prompt_")}
    batch["identity"] = module.face.assemble(torch.zeros(200, module.face.num_expressions))
    torch.manual_seed(0)
    x1, audio, target = module.sequence(batch)
    prompt = module.motion({k: batch[f"prompt_{k}"] for k in ("beta", "lip_offsets", "pose")})
    assert torch.equal(x1[:, :8], prompt) and torch.equal(x1[:, 8:], module.motion(batch))
    assert torch.equal(audio, torch.cat([batch["prompt_features"], batch["features"]], 1))
    dropped = target[:, :8].all(1)
    assert torch.equal(target[:, :8].any(1), dropped)  # a prompt is known or generated as a whole
    assert target[dropped].all() and 0.15 < dropped.float().mean() < 0.35
    window = target[~dropped, 8:]
    assert window.any(1).all() and 0.35 < window.all(1).float().mean() < 0.65
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)


def test_generate_uses_the_first_max_prompt_frames_of_a_prompt():
    module = _prompted_module(max_prompt=6, chunk=10, overlap=4, steps=2)
    take = _takes(module, 1, 20)
    long = module.prompt(take["features"], take["beta"], take["lip_offsets"], take["pose"])
    short = {k: v[:, :6] for k, v in long.items()}
    audio = torch.randn(1, 25, 4, generator=torch.Generator().manual_seed(3))
    runs = [module.generate(audio, p, generator=torch.Generator().manual_seed(0)) for p in (long, short, None)]
    assert torch.equal(runs[0]["beta"], runs[1]["beta"]) and runs[0]["beta"].shape == (1, 25, 29)
    assert not torch.allclose(runs[0]["beta"], runs[2]["beta"])


def _person_takes(module, styles, t, generator, prefix=""):
    """Takes of people who differ in their resting mouth: ``styles`` [B] scale one fixed offset
    of their blendshapes and lips (a smile, say) on top of motion linear in 8-channel audio
    features (as the network sees them: layer-normalised per frame)."""
    face, b = module.face, len(styles)
    g = torch.Generator().manual_seed(7)
    mix, smile = torch.randn(8, face.num_expressions, generator=g) * 0.1, torch.rand(face.num_expressions, generator=g) * 0.3
    lips, lip_smile = torch.randn(8, face.num_lip_vertices * 3, generator=g) * 1e-3, torch.randn(face.num_lip_vertices * 3, generator=g) * 3e-3
    audio = torch.randn(b, t, 8, generator=generator)
    heard, s = nn.functional.layer_norm(audio, (8,)), styles[:, None, None]
    return {f"{prefix}features": audio, f"{prefix}beta": heard @ mix + s * smile,
            f"{prefix}lip_offsets": (heard @ lips + s * lip_smile).reshape(b, t, face.num_lip_vertices, 3),
            f"{prefix}pose": torch.tensor([0.0, 0.0, 0.0, 128.0, 128.0, 0.0, 200.0]).expand(b, t, 7)}


def test_a_same_person_prompt_lowers_the_lve_of_a_trained_model():
    """Trained by prompted infilling on people who differ in their resting mouth (a smile),
    the model reads a new person's style from their prompt: the LVE against their real motion
    is lower with their own prompt than with none or with another person's."""
    from vividtalk.audio2mesh.in_context_module import InContextMotionModule
    from vividtalk.audio2mesh.losses import nonrigid_mesh
    from vividtalk.eval.mesh import lip_vertex_error

    torch.manual_seed(0)
    net = FlowMatchingTransformer(51, 8, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0, max_frames=64)
    module = InContextMotionModule(net, max_prompt=16, chunk=24, overlap=4, steps=4, cfg_scale=0.0, temperature=0.0,
                                   feature_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    sample_styles = lambda n: 2 * torch.rand(n, generator=g) - 1  # noqa: E731
    fit = _person_takes(module, sample_styles(400), 16, g)
    fitted = MotionCodec.fit(fit["beta"].flatten(0, 1), fit["lip_offsets"].flatten(0, 1),
                             torch.zeros(400 * 16, module.codec.pose_dim), module.codec.lip_components)
    module.codec.load_state_dict(fitted.state_dict())
    optimizer = torch.optim.Adam(module.network.parameters(), lr=3e-3)
    identity = module.face.assemble(torch.zeros(32, module.face.num_expressions))
    module.train()
    torch.manual_seed(0)
    for _ in range(600):
        styles = sample_styles(32)
        batch = {**_person_takes(module, styles, 16, g), **_person_takes(module, styles, 16, g, "prompt_"),
                 "identity": identity}
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()
    module.eval()
    styles = torch.tensor([-0.9, -0.6, 0.6, 0.9])  # new people, away from the average
    drive, own = _person_takes(module, styles, 20, g), _person_takes(module, styles, 16, g)
    other = _person_takes(module, styles.flip(0), 16, g)

    face, ident = module.face, identity[:1]

    def lve(prompt_of):
        errors = []
        for i in range(len(styles)):
            prompt = None if prompt_of is None else module.prompt(
                *(prompt_of[k][i:i + 1] for k in ("features", "beta", "lip_offsets", "pose")))
            out = module.generate(drive["features"][i:i + 1], prompt)
            pred = nonrigid_mesh(face, out["beta"], out["lip_offsets"], ident)
            real = nonrigid_mesh(face, drive["beta"][i:i + 1], drive["lip_offsets"][i:i + 1], ident)
            errors.append(lip_vertex_error(pred, real, face.lip_indices).mean())
        return float(torch.stack(errors).mean())

    same, none, wrong = lve(own), lve(None), lve(other)
    assert same < 0.7 * none and same < 0.7 * wrong, (same, none, wrong)
