"""Fitting: known pose/expression/identity are recovered from noisy meshes; real faces fit
with small residuals; the bounded ridge solver matches a reference solver."""

import math

import numpy as np
import pytest
import torch

from vividtalk.face import FaceFitter, MediaPipeTracker, apply_pose, procrustes
from vividtalk.face.fitting import solve_bounded_ridge

# Antagonists (left/right, blink/wide, ...) are never active together in real motion; the
# synthetic clip respects that, as a tracker's data would.
EXCLUSIVE = [
    ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"), ("eyeBlinkLeft", "eyeWideLeft"),
    ("eyeBlinkRight", "eyeWideRight"), ("browDownLeft", "browOuterUpLeft"),
    ("browDownRight", "browOuterUpRight"), ("mouthFunnel", "mouthPress"),
    ("mouthPucker", "mouthPress"), ("jawOpen", "jawForward"),
]


def synthetic_clip(model, frames=60, noise_px=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = model.expression_names
    alpha = torch.randn(model.num_identity, generator=g)
    beta = torch.rand(frames, model.num_expressions, generator=g)
    beta *= torch.rand(frames, model.num_expressions, generator=g) < 0.3
    for a, b in EXCLUSIVE:
        first = torch.rand(frames, generator=g) < 0.5
        beta[first, names.index(b)] = 0
        beta[~first, names.index(a)] = 0
    angles = (torch.rand(frames, 3, generator=g) - 0.5) * 0.5  # +-14 degrees
    trans = torch.tensor([128.0, 128.0, 0.0]) + torch.randn(frames, 3, generator=g) * 5
    scale = 150.0 + torch.randn(frames, 1, generator=g) * 5
    pose = torch.cat([angles, trans, scale], 1)
    lips = torch.randn(frames, model.num_lip_vertices, 3, generator=g) * 0.003
    identity = model.identity_shape(alpha)
    clean = model.assemble(beta, identity=identity, lip_offsets=lips, pose=pose)
    noisy = clean + torch.randn(clean.shape, generator=g) * noise_px
    return dict(vertices=noisy, clean=clean, alpha=alpha, beta=beta, pose=pose, lips=lips, identity=identity)


@pytest.fixture(scope="module")
def clip(face_model):
    return synthetic_clip(face_model)


@pytest.fixture(scope="module")
def clip_fit(face_model, clip):
    return FaceFitter(face_model).fit(clip["vertices"])


def test_round_trip_recovers_pose(clip, clip_fit):
    """Tolerances: rotation 0.5 deg, translation 0.5 px; scale within 3% (identity size and
    pose scale trade off: the face-width/length/depth modes are close to a uniform scale)."""
    err_deg = (clip_fit.pose[:, :3] - clip["pose"][:, :3]).abs().max() * 180 / math.pi
    assert err_deg < 0.5
    assert (clip_fit.pose[:, 3:6] - clip["pose"][:, 3:6]).abs().max() < 0.5
    assert ((clip_fit.pose[:, 6] / clip["pose"][:, 6]) - 1).abs().max() < 0.03


def test_round_trip_recovers_expressions_and_lips(face_model, clip, clip_fit):
    """Tolerances: mean |beta error| 0.05 (coefficients in [0, 1]); the assembled mesh with
    lip offsets lies within the noise (0.5 px per axis) of the clean mesh."""
    assert (clip_fit.beta - clip["beta"]).abs().mean() < 0.05
    jaw = face_model.expression_names.index("jawOpen")
    assert (clip_fit.beta[:, jaw] - clip["beta"][:, jaw]).abs().max() < 0.05
    assert clip_fit.beta.min() >= 0 and clip_fit.beta.max() <= 1
    mesh = face_model.assemble(
        clip_fit.beta, identity=clip_fit.identity, lip_offsets=clip_fit.lip_offsets, pose=clip_fit.pose
    )
    err = (mesh - clip["clean"]).norm(dim=-1)
    assert err.mean() < 0.6
    lips = face_model.lip_indices
    assert err[:, lips].mean() < 0.9  # fine lip detail recovered by O_lip


def test_round_trip_recovers_identity(face_model, clip, clip_fit):
    """Identity shape within 0.3% of the face height after removing the similarity gauge."""
    pose = procrustes(clip_fit.identity.double(), clip["identity"].double())
    aligned = apply_pose(clip_fit.identity.double(), pose)
    assert (aligned - clip["identity"]).norm(dim=-1).mean() < 0.003
    assert torch.corrcoef(torch.stack([clip_fit.alpha, clip["alpha"]]))[0, 1] > 0.9


def test_known_identity_is_used(face_model, clip):
    fit = FaceFitter(face_model).fit(clip["vertices"], identity=clip["identity"])
    assert torch.equal(fit.identity, clip["identity"].float())
    assert (fit.beta - clip["beta"]).abs().mean() < 0.04


def test_portrait_fit_residual_is_small(face_model, portrait_landmarks):
    """The real portrait: the tracked mesh is explained by pose + identity modes +
    blendshapes to within 1.5% of the face height (RMS, before the free identity residual);
    and the fit sees her smile."""
    fit = FaceFitter(face_model).fit(portrait_landmarks)
    face_height_px = fit.pose[0, 6]  # the mean shape has unit height
    assert fit.prior_residual / face_height_px < 0.015
    assert fit.residual[0] < 0.5
    names = face_model.expression_names
    smile = fit.beta[0, names.index("mouthSmileLeft")] + fit.beta[0, names.index("mouthSmileRight")]
    assert smile > 0.6
    assert fit.beta[0, names.index("eyeBlinkLeft")] < 0.2


def test_talking_clip_fit_residual_is_small(face_model, talking_frames):
    """A real talking clip with one shared identity: per-frame residual (RMS over all 468
    vertices, without lip offsets) 1% of the face height on average, 3% at worst."""
    tracks = MediaPipeTracker().track_video(talking_frames[::3])
    fit = FaceFitter(face_model).fit(tracks)
    rel = fit.residual / fit.pose[:, 6]
    assert rel.mean() < 0.01 and rel.max() < 0.03
    jaw = fit.beta[:, face_model.expression_names.index("jawOpen")]
    assert jaw.max() - jaw.min() > 0.05  # he talks: the jaw moves


def test_nan_frames_are_rejected(face_model, clip):
    v = clip["vertices"].clone()
    v[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        FaceFitter(face_model).fit(v)


def test_bounded_ridge_matches_reference_solver():
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 40))
    basis[1] = basis[0] * 0.9 + basis[1] * 0.1  # ill-conditioned pair
    targets = rng.normal(size=(5, 40)) * 2
    ridge = 0.05
    got = solve_bounded_ridge(torch.from_numpy(basis), torch.from_numpy(targets), ridge, 0.0, 1.0, iters=3000)
    a = np.concatenate([basis.T, np.sqrt(ridge) * np.eye(6)])
    for t in range(5):
        ref = lsq_linear(a, np.concatenate([targets[t], np.zeros(6)]), bounds=(0.0, 1.0), tol=1e-12).x
        np.testing.assert_allclose(got[t].numpy(), ref, atol=1e-4)
