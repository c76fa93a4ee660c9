"""Stage 1, Audio-to-Mesh: the multi-branch transformer, the style encoder, L_bsvo and the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk.audio import LogMelEncoder
from vividtalk.audio2mesh.losses import bsvo_loss, nonrigid_mesh
from vividtalk.audio2mesh.module import Audio2MeshModule
from vividtalk.audio2mesh.style_encoder import StyleEncoder
from vividtalk.audio2mesh.transformer import MultiBranchTransformer, lip_expression_indices

A, S = 12, 8  # audio feature size, style size


pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: fastest, reproducible


def small_network(**kwargs) -> MultiBranchTransformer:
    args = dict(audio_dim=A, style_dim=S, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0,
                max_frames=64)
    return MultiBranchTransformer(**{**args, **kwargs})


def inputs(batch: int = 2, frames: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, A, generator=g), torch.randn(batch, S, generator=g)


def test_lip_branch_takes_the_jaw_and_mouth_shapes(face_model):
    names = face_model.expression_names
    lip = lip_expression_indices(names)
    assert {names[k] for k in lip} >= {"jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft"}
    assert not {"eyeBlinkLeft", "browInnerUp", "cheekPuff"} & {names[k] for k in lip}
    net = small_network()
    assert net.lip_expressions == lip and sorted(net.lip_expressions + net.other_expressions) == list(range(29))
    with pytest.raises(ValueError, match="distinct indices"):
        small_network(lip_expressions=[0, 0])
    with pytest.raises(ValueError, match="at least one"):
        small_network(num_expressions=3, lip_expressions=[0, 1, 2])


def test_shapes_and_ranges():
    torch.manual_seed(0)
    net = small_network().eval()
    audio, style = inputs()
    with torch.no_grad():
        out = net(audio, style)  # no targets: autoregressive generation
    assert out["beta"].shape == (2, 20, 29) and out["lip_offsets"].shape == (2, 20, 80, 3)
    assert 0 <= out["beta"].min() and out["beta"].max() <= 1
    beta, offsets = torch.rand(2, 20, 29), 0.01 * torch.randn(2, 20, 80, 3)
    tf = net(audio, style, beta=beta, lip_offsets=offsets)
    assert tf["beta"].shape == beta.shape and tf["lip_offsets"].shape == offsets.shape
    with pytest.raises(ValueError, match="max_frames"):
        net(torch.randn(1, 65, A), style[:1])
    with pytest.raises(ValueError, match="both beta and lip_offsets"):
        net(audio, style, beta=beta)
    with pytest.raises(ValueError, match="do not match"):
        net(audio, style, beta=beta[:, :10], lip_offsets=offsets[:, :10])


@pytest.mark.parametrize("lookahead", [0, 2])
def test_cached_decoding_equals_uncached(lookahead):
    torch.manual_seed(1)
    net = small_network(audio_lookahead=lookahead).eval()
    audio, style = inputs(frames=24, seed=1)
    start = {"beta": torch.rand(2, 29), "lip_offsets": 0.01 * torch.randn(2, 80, 3)}
    with torch.no_grad():
        results = []
        for s in (None, start):
            cached, uncached = net.generate(audio, style, start=s), net.generate(audio, style, use_cache=False, start=s)
            for key in cached:
                torch.testing.assert_close(cached[key], uncached[key], rtol=1e-4, atol=1e-5)
            results.append(cached)
    # The start value matters: it is what frame 0 is conditioned on (instead of the learned token).
    assert (results[0]["beta"][:, 0] - results[1]["beta"][:, 0]).abs().max() > 1e-4


def test_teacher_forcing_reproduces_generation():
    """Fed its own generated outputs as targets, the teacher-forced pass gives them back: the
    training path and the inference path are the same function."""
    torch.manual_seed(2)
    net = small_network(audio_lookahead=1).eval()
    audio, style = inputs(frames=16, seed=2)
    with torch.no_grad():
        gen = net.generate(audio, style)
        tf = net(audio, style, beta=gen["beta"], lip_offsets=gen["lip_offsets"])
    for key in gen:
        torch.testing.assert_close(tf[key], gen[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_generation_is_causal_in_the_audio(lookahead):
    torch.manual_seed(3)
    net = small_network(audio_lookahead=lookahead).eval()
    audio, style = inputs(frames=24, seed=3)
    f = 12
    changed = audio.clone()
    changed[:, f + 1 :] = torch.randn(2, 24 - f - 1, A)
    with torch.no_grad():
        a, b = net.generate(audio, style), net.generate(changed, style)
    seen = f - lookahead  # frame g sees the audio of frames <= g + lookahead
    for key in a:
        torch.testing.assert_close(a[key][:, : seen + 1], b[key][:, : seen + 1], rtol=0, atol=1e-6)
        assert (a[key][:, f + 1 :] - b[key][:, f + 1 :]).abs().max() > 1e-4


def test_teacher_forcing_is_causal_in_the_targets():
    torch.manual_seed(4)
    net = small_network().eval()
    audio, style = inputs(frames=20, seed=4)
    beta, offsets = torch.rand(2, 20, 29), 0.01 * torch.randn(2, 20, 80, 3)
    beta2, offsets2 = beta.clone(), offsets.clone()
    beta2[:, 10:], offsets2[:, 10:] = torch.rand(2, 10, 29), 0.01 * torch.randn(2, 10, 80, 3)
    with torch.no_grad():
        a = net(audio, style, beta=beta, lip_offsets=offsets)
        b = net(audio, style, beta=beta2, lip_offsets=offsets2)
    for key in a:  # frame f sees the targets of frames < f only
        torch.testing.assert_close(a[key][:, :11], b[key][:, :11], rtol=0, atol=1e-6)
        assert (a[key][:, 11:] - b[key][:, 11:]).abs().max() > 1e-4


def test_gradients_reach_every_branch_the_style_and_the_audio_front_end(face_model):
    torch.manual_seed(5)
    net = small_network(dropout=0.1)
    style_encoder = StyleEncoder(style_dim=S, hidden_dim=16)
    audio_encoder = LogMelEncoder(n_mels=20, out_dim=A, hidden_dim=16)
    wav = 0.1 * torch.randn(2, 20 * 640)
    identity = face_model.mean + 0.01 * torch.randn(2, 468, 3)
    target = {"beta": torch.rand(2, 20, 29), "lip_offsets": 0.005 * torch.randn(2, 20, 80, 3), "identity": identity}
    pred = net(audio_encoder(wav), style_encoder(identity), beta=target["beta"], lip_offsets=target["lip_offsets"])
    bsvo_loss(face_model, pred, target)["loss"].backward()
    modules = {f"branch {name}": branch for name, branch in net.branches.items()}
    modules.update({"audio layers": net.audio_layers, "style encoder": style_encoder, "front end": audio_encoder})
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_style_encoder(face_model):
    torch.manual_seed(6)
    encoder = StyleEncoder(style_dim=S, hidden_dim=16, num_layers=3)
    shapes = face_model.mean + 0.01 * torch.randn(3, 468, 3)
    z = encoder(shapes)
    assert z.shape == (3, S)
    assert (z[0] - z[1]).abs().max() > 1e-3  # different identities, different styles
    assert "mean_shape" not in encoder.state_dict()  # rebuilt from the face model
    with pytest.raises(ValueError, match=r"\[B, 468, 3\]"):
        encoder(shapes[:, :100])
    with pytest.raises(ValueError, match="num_vertices"):
        StyleEncoder(num_vertices=100)


def test_bsvo_loss(face_model):
    g = torch.Generator().manual_seed(7)
    identity = face_model.mean + 0.01 * torch.randn(2, 468, 3, generator=g)
    target = {"beta": torch.rand(2, 5, 29, generator=g), "lip_offsets": 0.01 * torch.randn(2, 5, 80, 3, generator=g),
              "identity": identity}
    same = bsvo_loss(face_model, target, target)
    assert same["loss"] == 0
    moved = {**target, "lip_offsets": target["lip_offsets"] + 0.01}  # only the lips' offsets differ
    out = bsvo_loss(face_model, moved, target, coeff_weight=1.0, mesh_weight=10.0)
    assert out["coeff"] == 0 and out["mesh"] > 0
    # The mesh term is the mean |dM| over all vertices and axes: the lips are 80 of 468 vertices.
    torch.testing.assert_close(out["mesh"], torch.tensor(0.01 * 80 / 468), rtol=1e-3, atol=0)
    torch.testing.assert_close(out["loss"], 10.0 * out["mesh"])
    mesh = nonrigid_mesh(face_model, target["beta"], target["lip_offsets"], identity)
    assert mesh.shape == (2, 5, 468, 3)


def test_lip_gap_term_and_closure_recall(face_model):
    """The lip-gap term is the L1 of the inner-lip gaps (reference: the mouth-hole polygon's
    area over its width, computed here with numpy); closure recall counts closed targets."""
    from vividtalk.audio2mesh.losses import lip_gap
    from vividtalk.audio2mesh.module import closure_recall
    from vividtalk.face.holes import hole_loops

    identity = face_model.mean[None]
    jaw = face_model.expression_names.index("jawOpen")
    closed = torch.zeros(1, 4, 29)
    opened = closed.clone()
    opened[0, 2:, jaw] = 0.4  # frames 2, 3 open
    none = torch.zeros(1, 4, 80, 3)
    target, pred = ({"beta": b, "lip_offsets": none, "identity": identity} for b in (closed, opened))
    out = bsvo_loss(face_model, pred, target, gap_weight=10.0)
    mesh = nonrigid_mesh(face_model, opened, none, identity)[0].numpy()

    def gap(v):  # shoelace area / width of the mouth loop
        p = v[hole_loops(face_model)[-1], :2]
        area = 0.5 * abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - p[:, 1] * np.roll(p[:, 0], -1)))
        return area / np.linalg.norm(p - p[0], axis=1).max()

    expected = np.mean([abs(gap(mesh[t]) - gap(mesh[0])) for t in range(4)])
    torch.testing.assert_close(out["gap"], torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out["loss"], out["coeff"] + 10.0 * out["mesh"] + 10.0 * out["gap"])
    assert bsvo_loss(face_model, pred, target)["loss"] == out["coeff"] + 10.0 * out["mesh"]  # default: the paper's
    torch.testing.assert_close(lip_gap(face_model, torch.from_numpy(mesh))[1], torch.tensor(gap(mesh[1])))
    truth = nonrigid_mesh(face_model, closed, none, identity)
    assert closure_recall(face_model, truth, truth, identity) == 1.0
    half = nonrigid_mesh(face_model, opened, none, identity)
    assert closure_recall(face_model, half, truth, identity) == 0.5  # frames 0, 1 of 4 closed


def test_closure_term_charges_only_lips_left_open_where_the_target_closes(face_model):
    """Reference: an explicit loop over frames with the polygon gap of the test above. Target
    frames 0-2 closed (neutral), 3-5 open; the prediction opens frames 1 and 4 wider, closes 5."""
    from vividtalk.audio2mesh.losses import lip_gap

    identity = face_model.mean[None]
    jaw = face_model.expression_names.index("jawOpen")
    target_beta = torch.zeros(1, 6, 29)
    target_beta[0, 3:, jaw] = 0.3
    pred_beta = target_beta.clone()
    pred_beta[0, 1, jaw], pred_beta[0, 4, jaw], pred_beta[0, 5, jaw] = 0.2, 0.5, 0.0
    none = torch.zeros(1, 6, 80, 3)
    target, pred = ({"beta": b, "lip_offsets": none, "identity": identity} for b in (target_beta, pred_beta))
    out = bsvo_loss(face_model, pred, target, closure_weight=7.0)
    gaps = [lip_gap(face_model, nonrigid_mesh(face_model, b, none, identity))[0] for b in (pred_beta, target_beta)]
    neutral, height = float(lip_gap(face_model, identity)[0]), float(identity[0, :, 1].max() - identity[0, :, 1].min())
    shortfalls = [max(float(gaps[0][t] - gaps[1][t]), 0.0) for t in range(6) if gaps[1][t] <= neutral + 0.005 * height]
    assert len(shortfalls) == 3 and shortfalls[1] > 0 and shortfalls[0] == shortfalls[2] == 0  # only frame 1 counts
    torch.testing.assert_close(out["closure"], torch.tensor(np.mean(shortfalls), dtype=torch.float32))
    torch.testing.assert_close(out["loss"], out["coeff"] + 10.0 * out["mesh"] + 7.0 * out["closure"])
    assert bsvo_loss(face_model, target, target, closure_weight=7.0)["closure"] == 0


def test_module_rejects_mismatched_audio_sizes():
    with pytest.raises(ValueError, match="audio_dim"):
        Audio2MeshModule(small_network(), StyleEncoder(style_dim=S), LogMelEncoder(out_dim=A + 1))
    with pytest.raises(ValueError, match="feature_dropout"):
        Audio2MeshModule(small_network(), StyleEncoder(style_dim=S), LogMelEncoder(out_dim=A), feature_dropout=1.0)


def test_feature_dropout_zeroes_training_features_only():
    """In a training step the network sees the features dropped and rescaled (inverted dropout)."""
    seen = []
    module = Audio2MeshModule(small_network(), StyleEncoder(style_dim=S), None, feature_dropout=0.5)
    forward = module.network.forward
    module.network.forward = lambda audio, *a, **k: (seen.append(audio.detach().clone()), forward(audio, *a, **k))[1]
    features = torch.rand(2, 8, A) + 1.0
    batch = {"features": features, "beta": torch.rand(2, 8, 29), "lip_offsets": torch.zeros(2, 8, 80, 3),
             "identity": module.face.mean.expand(2, -1, -1)}
    module.training_step(batch, 0)
    zero = seen[0] == 0
    assert 0.3 < zero.float().mean() < 0.7  # about half dropped
    torch.testing.assert_close(seen[0][~zero], 2.0 * features[~zero])  # the rest scaled by 1 / (1 - p)


def test_a_few_hundred_steps_overfit_one_window(face_model):
    """L_bsvo falls by a large factor on one window, and generation then follows the targets."""
    torch.manual_seed(8)
    net, style_encoder = small_network(), StyleEncoder(style_dim=S, hidden_dim=16)
    audio, _ = inputs(batch=1, frames=20, seed=8)
    t = torch.arange(20, dtype=torch.float32)
    beta = torch.zeros(1, 20, 29)
    beta[0, :, face_model.expression_names.index("jawOpen")] = 0.5 + 0.4 * torch.sin(t / 3)
    target = {"beta": beta, "lip_offsets": 0.003 * torch.sin(t / 2)[None, :, None, None].expand(1, 20, 80, 3),
              "identity": face_model.mean[None]}
    params = list(net.parameters()) + list(style_encoder.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    losses = []
    for _ in range(300):
        pred = net(audio, style_encoder(target["identity"]), beta=target["beta"], lip_offsets=target["lip_offsets"])
        loss = bsvo_loss(face_model, pred, target)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    with torch.no_grad():
        gen = net.eval().generate(audio, style_encoder(target["identity"]))
    assert (gen["beta"] - beta).abs().mean() < 0.05


def test_input_dropout_acts_only_in_teacher_forced_training():
    torch.manual_seed(9)
    net = small_network(input_dropout=0.5)
    audio, style = inputs(frames=16, seed=9)
    beta, offsets = torch.rand(2, 16, 29), 0.01 * torch.randn(2, 16, 80, 3)
    clean = small_network(input_dropout=0.0)
    clean.load_state_dict(net.state_dict())
    with torch.no_grad():
        dropped = net.train()(audio, style, beta=beta, lip_offsets=offsets)
        reference = clean.train()(audio, style, beta=beta, lip_offsets=offsets)  # dropout=0 in small_network
        assert (dropped["beta"] - reference["beta"]).abs().max() > 1e-4
        # Eval mode (generation and validation): no input dropout, the same function as without it.
        same = net.eval()(audio, style, beta=beta, lip_offsets=offsets)
        torch.testing.assert_close(same["beta"], clean.eval()(audio, style, beta=beta, lip_offsets=offsets)["beta"])
    with pytest.raises(ValueError, match="input_dropout"):
        small_network(input_dropout=1.0)
