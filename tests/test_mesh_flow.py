"""Stage 2's mesh flow: exact inside the face (against a per-pixel barycentric lookup), rigid
outside it, zero for equal meshes; the motion VAE refining it returns the source for a driving
mesh equal to the source's, before any training, on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk.face.holes import add_hole_centres
from vividtalk.mesh2video.blocks import warp
from vividtalk.mesh2video.discriminator import MultiScaleDiscriminator
from vividtalk.mesh2video.generator import WarpingGenerator
from vividtalk.mesh2video.mesh_flow import MeshFlow
from vividtalk.mesh2video.module import Mesh2VideoModule
from vividtalk.mesh2video.motion_vae import DualBranchMotionVAE
from vividtalk.render import get_rasterizer
from vividtalk.face.prepare import prepare_source

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sources(portrait, talking_frames, face_model):
    """Prepared real crops (256 px): the portrait, its mirror image and two carphone frames."""
    images = [portrait, np.ascontiguousarray(portrait[:, ::-1]), talking_frames[0], talking_frames[60]]
    return [prepare_source(image, face_model) for image in images]


def _batch(sources):
    as_t = lambda a: torch.from_numpy(np.stack(a))  # noqa: E731
    return {"crop": as_t([s.crop for s in sources]).permute(0, 3, 1, 2).float() / 255,
            "vertices": as_t([s.vertices for s in sources]), "labels": as_t([s.masks for s in sources]).long()}


def _deform(vertices: torch.Tensor, seed: int) -> torch.Tensor:
    """A rotated, shifted, smoothly and non-rigidly deformed copy of meshes [B, V, 3]."""
    g = torch.Generator().manual_seed(seed)
    c = vertices[..., :2].mean(1, keepdim=True)
    a = 0.12
    rot = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float32)
    xy = (vertices[..., :2] - c) @ rot.T + c + torch.tensor([5.0, -3.0])
    wobble = torch.sin(vertices[..., 1:2] / 17.0 + torch.rand(1, generator=g) * 6) * 2.5
    return torch.cat([xy + torch.cat([wobble, 0.5 * wobble], -1), vertices[..., 2:]], -1)


def reference_source_positions(flow: MeshFlow, source: np.ndarray, driving: np.ndarray, size: int) -> np.ndarray:
    """Slow reference: for every pixel centre, the nearest (smallest z) hole-closed driving
    triangle that contains it, and the source position of that surface point by barycentric
    interpolation of the source vertices; NaN where no triangle covers the pixel.

    source, driving: float [V, 3] crop pixels -> float64 [S, S, 2]."""
    loops = flow.loops
    src = add_hole_centres(torch.from_numpy(source).double(), loops).numpy()
    drv = add_hole_centres(torch.from_numpy(driving).double(), loops).numpy()
    tri = flow.triangles.numpy()
    a, b, c = drv[tri[:, 0]], drv[tri[:, 1]], drv[tri[:, 2]]  # [F, 3]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    out = np.full((size, size, 2), np.nan)
    for i in range(size):
        for j in range(size):
            px, py = j + 0.5, i + 0.5
            w1 = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (py - a[:, 1]) * (c[:, 0] - a[:, 0])) / area
            w2 = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px - a[:, 0])) / area
            w0 = 1.0 - w1 - w2
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9) & (area != 0)
            if not inside.any():
                continue
            z = w0 * a[:, 2] + w1 * b[:, 2] + w2 * c[:, 2]
            f = np.flatnonzero(inside)[np.argmin(z[inside])]
            k = tri[f]
            out[i, j] = w0[f] * src[k[0], :2] + w1[f] * src[k[1], :2] + w2[f] * src[k[2], :2]
    return out


def _check_against_reference(face_model, sources, rasterizer, device):
    """The mesh flow at 48 px equals the reference on every covered pixel away from triangle
    edges (where the two may legitimately pick different triangles of equal depth)."""
    size, scale = 48, 48 / 256
    flow = MeshFlow(face_model)
    batch = _batch(sources[:2])
    src = batch["vertices"] * scale
    drv = _deform(src, seed=1)
    labels = torch.nn.functional.interpolate(batch["labels"][:, None].float(), size=(size, size))[:, 0].long()
    rendered = flow.render(rasterizer, drv.to(device), size, src.to(device))
    out = flow.flow(rendered, flow.prepare(src.to(device), labels.to(device)), drv.to(device))
    grid = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)  # [S, S, 2] (x, y)
    for k in range(2):
        ref = reference_source_positions(flow, src[k].numpy(), drv[k].numpy(), size)
        covered = rendered["covered"][k, 0].cpu().numpy() > 0
        np.testing.assert_array_equal(covered, ~np.isnan(ref[..., 0]))  # same coverage
        got = out["flow"][k].permute(1, 2, 0).cpu().numpy() * size / 2 + grid  # source positions (pixels)
        err = np.abs(got - ref)[covered].max(-1)
        assert np.median(err) < 1e-3 and np.mean(err < 1e-3) > 0.97, (np.median(err), np.mean(err < 1e-3))


def test_mesh_flow_is_the_barycentric_source_position_inside_the_face(face_model, sources):
    _check_against_reference(face_model, sources, get_rasterizer("torch"), "cpu")


@pytest.mark.gpu
def test_mesh_flow_on_nvdiffrast_matches_the_reference(face_model, sources):
    _check_against_reference(face_model, sources, get_rasterizer("nvdiffrast", "cuda"), "cuda")


def test_equal_meshes_give_zero_flow_and_nothing_to_paint(face_model, sources):
    flow, batch = MeshFlow(face_model), _batch(sources)
    rendered = flow.render(get_rasterizer("torch"), batch["vertices"], 256, batch["vertices"])
    out = flow.flow(rendered, flow.prepare(batch["vertices"], batch["labels"]), batch["vertices"])
    assert out["flow"].abs().max() * 128 < 1e-3  # pixels
    assert out["paint"].max() == 0
    torch.testing.assert_close(warp(batch["crop"], out["flow"]), batch["crop"], atol=1e-4, rtol=0)


def test_rigid_motion_moves_face_and_hair_and_leaves_the_far_background(face_model, sources):
    """A pure 2-D similarity of the mesh: the face follows it exactly, the person next to the
    face follows it, the background far from the face stays."""
    flow, batch = MeshFlow(face_model), _batch(sources[:1])
    src = batch["vertices"]
    c = src[..., :2].mean(1, keepdim=True)
    a = 0.12
    rot = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float32)
    drv = torch.cat([(src[..., :2] - c) @ rot.T + c + torch.tensor([5.0, -3.0]), src[..., 2:]], -1)
    rendered = flow.render(get_rasterizer("torch"), drv, 256, src)
    out = flow.flow(rendered, flow.prepare(src, batch["labels"]), drv)["flow"][0] * 128  # [2, S, S] pixels
    grid = torch.stack(torch.meshgrid(torch.arange(256.0) + 0.5, torch.arange(256.0) + 0.5, indexing="xy"))
    # The inverse similarity's displacement: src = R^T (p - t - c) + c.
    expected = torch.einsum("ij,jhw->ihw", rot.T, grid - torch.tensor([5.0, -3.0])[:, None, None]
                            - c[0, 0, :, None, None]) + c[0, 0, :, None, None] - grid
    covered = rendered["covered"][0, 0] > 0
    assert (out - expected).norm(dim=0)[covered].max() < 0.05
    from scipy.ndimage import distance_transform_edt

    dist = torch.from_numpy(distance_transform_edt(~covered.numpy()))
    labels = batch["labels"][0]
    near_hair = (labels == 1) & (dist > 2) & (dist < 6)
    assert near_hair.any()
    ratio = (out.norm(dim=0)[near_hair] / expected.norm(dim=0)[near_hair]).median()
    assert ratio > 0.9, ratio
    # Background next to the person may follow it (the person moves into it, or out of it).
    from_person = torch.from_numpy(distance_transform_edt(labels.numpy() == 0))
    far_background = (from_person > 12) & (dist > 0.2 * 256)
    assert far_background.any() and out.norm(dim=0)[far_background].max() < 0.05 * expected.norm(dim=0).max()


def test_a_wider_mouth_is_painted_inside_the_lips_only(face_model, sources):
    flow, batch = MeshFlow(face_model), _batch(sources[:1])
    src = batch["vertices"]
    jaw = face_model.expression_names.index("jawOpen")
    beta = torch.zeros(1, face_model.num_expressions)
    beta[0, jaw] = 1.0
    # Open the mouth: the expression's offsets in crop pixels (the face model's canonical unit
    # is a face height; the source's pose scale maps it to pixels).
    offsets = face_model.expression_offsets(beta) * float(sources[0].pose[6])
    drv = src + offsets
    rendered = flow.render(get_rasterizer("torch"), drv, 256, src)
    paint = flow.flow(rendered, flow.prepare(src, batch["labels"]), drv)["paint"]
    assert paint.max() == 1.0 and paint.sum() > 50
    assert (paint[rendered["mouth"] == 0] == 0).all()  # nowhere outside the mouth fan
    closed = flow.flow(flow.render(get_rasterizer("torch"), src, 256, src), flow.prepare(src, batch["labels"]), src)
    assert closed["paint"].max() == 0


def _default_module(mesh_flow: bool = True) -> Mesh2VideoModule:
    torch.manual_seed(0)
    return Mesh2VideoModule(DualBranchMotionVAE(mesh_flow=mesh_flow), WarpingGenerator(),
                            MultiScaleDiscriminator(in_channels=6, channels=8), rasterizer="torch", image_every=0).eval()


def _lips(face_model, vertices: torch.Tensor) -> torch.Tensor:
    return vertices[:, face_model.lip_contour(), :2]


def test_untrained_model_returns_the_source_for_its_own_mesh_on_real_crops(face_model, sources):
    module, batch = _default_module(), _batch(sources)
    lips = _lips(face_model, batch["vertices"])
    with torch.no_grad():
        prepared = module.prepare_source(batch["crop"], batch["labels"], batch["vertices"], lips)
        out = module.animate(prepared, batch["vertices"], lips)
    assert (out["image"] - batch["crop"]).abs().max() < 1e-3
    # Another driving mesh: the source warped by the mesh flow, exactly where nothing is painted.
    drv = _deform(batch["vertices"], seed=2)
    with torch.no_grad():
        moved = module.animate(prepared, drv, _lips(face_model, drv))
    visible = torch.nn.functional.interpolate(moved["occlusion"], size=(256, 256), mode="bilinear") == 1
    assert visible.float().mean() > 0.95
    visible = visible.expand_as(moved["image"])
    torch.testing.assert_close(moved["image"][visible], moved["warped_source"][visible], atol=1e-4, rtol=0)
    assert (moved["image"] - batch["crop"]).abs().mean() > 0.02


def test_the_paper_literal_variant_has_no_mesh_flow(face_model, sources):
    module, batch = _default_module(mesh_flow=False), _batch(sources[:1])
    lips = _lips(face_model, batch["vertices"])
    with torch.no_grad():
        prepared = module.prepare_source(batch["crop"], batch["labels"], batch["vertices"], lips)
        out = module.animate(prepared, _deform(batch["vertices"], 3), lips)
    assert "mesh_flow" not in out and out["flow"].shape == (1, 2, 64, 64)
    assert out["flow"].abs().max() == 0  # from scratch: the identity warp at initialisation
