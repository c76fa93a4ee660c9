"""vividtalk.render: the torch rasterizer against a slow reference, the protocol, helpers.

Outputs and gradients of ``TorchRasterizer`` are checked against ``_raster_reference``
(Python loops, float64); a GPU test checks it against nvdiffrast when both are at hand.
"""

from __future__ import annotations

import pytest
import torch
from _raster_reference import reference_interpolate, reference_rasterize

from vividtalk.benchmarks.render import time_rasterizer
from vividtalk.render import (
    NvdiffrastRasterizer,
    Rasterizer,
    TorchRasterizer,
    get_rasterizer,
    image_to_clip,
    nvdiffrast_unavailable_reason,
    render_attributes,
)


def _pixel_ndc(col: float, row: float, height: int, width: int) -> tuple[float, float]:
    """NDC of a point given in pixel-centre units (pixel (i, j) centre = (j, i))."""
    return 2.0 * (col + 0.5) / width - 1.0, 2.0 * (row + 0.5) / height - 1.0


def _overlap_scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """pos [1, V, 4], tri [F, 3]: overlapping, interpenetrating, both windings, a triangle
    partly off-screen, a shared edge, a degenerate one, one behind the camera (w < 0) and one
    crossing the far plane. Random jitter keeps pixel centres off edges."""
    g = torch.Generator().manual_seed(seed)
    pts = [
        (-0.9, -0.8, 0.2), (0.7, -0.6, 0.2), (-0.2, 0.9, 0.2),      # 0: big, z = 0.2
        (-0.7, 0.6, -0.5), (0.8, 0.5, 0.6), (0.1, -0.9, 0.1),       # 1: interpenetrates 0
        (0.5, -0.2, -0.3), (1.6, -0.4, -0.3), (0.9, 1.5, -0.3),     # 2: partly off-screen
        (-0.95, -0.1, -0.6), (-0.3, -0.1, -0.6), (-0.95, 0.55, -0.6),  # 3: quad half 1
        (-0.3, 0.55, -0.6),                                          # 4: shares edge 10-11
        (-0.5, -0.5, 0.0), (0.0, 0.0, 0.0), (0.5, 0.5, 0.0),        # 5: degenerate (collinear)
        (0.2, 0.2, -0.9), (0.45, 0.3, -0.9), (0.3, 0.6, -0.9),      # 6: small, in front
        (-0.4, -0.9, 0.5), (0.4, -0.9, 0.5), (0.0, -0.3, 1.8),      # 8: crosses the far plane
    ]
    jitter = 0.01 * torch.randn(len(pts), 3, generator=g)
    jitter[13:16] = 0.0  # keep the degenerate triangle exactly collinear
    xyz = torch.tensor(pts) + jitter
    pos = torch.cat([xyz, torch.ones(len(pts), 1)], 1)
    behind = torch.tensor([[0.0, 0.0, 0.0, -1.0], [0.5, 0.0, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]])
    pos = torch.cat([pos, behind])  # vertices 22-24: triangle 7 has w < 0
    tri = torch.tensor([[0, 1, 2], [3, 5, 4], [6, 7, 8], [9, 10, 11], [11, 10, 12],
                        [13, 14, 15], [16, 17, 18], [22, 23, 24], [19, 20, 21]])
    return pos[None], tri


def _grid_mesh(n: int = 6, span: float = 0.8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A perturbed n x n grid (pos [1, n*n, 4], tri [2 (n-1)^2, 3]) with both windings."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-span, span, n)
    y, x = torch.meshgrid(t, t, indexing="ij")
    step = 2 * span / (n - 1)
    jitter = (torch.rand(n * n, 2, generator=g) - 0.5) * 0.4 * step
    xy = torch.stack([x, y], -1).reshape(-1, 2) + jitter
    z = 0.3 * (x ** 2 + y ** 2).reshape(-1, 1) - 0.2
    pos = torch.cat([xy, z, torch.ones(n * n, 1)], 1)[None]
    idx = torch.arange(n * n).view(n, n)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    tri = torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])
    flip = torch.rand(tri.shape[0], generator=g) < 0.5
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return pos, tri


def _compare_with_reference(pos: torch.Tensor, tri: torch.Tensor, resolution, seed: int = 0):
    """Assert rast, interpolation and gradients (pos, attr) match the reference."""
    g = torch.Generator().manual_seed(seed)
    attr = torch.randn(pos.shape[0], pos.shape[1], 3, generator=g)
    height, width = resolution
    weights = torch.randn(pos.shape[0], height, width, 3, generator=g)
    results = []
    for raster, interp in ((TorchRasterizer().rasterize, TorchRasterizer().interpolate),
                           (reference_rasterize, reference_interpolate)):
        p = pos.clone().requires_grad_(True)
        a = attr.clone().requires_grad_(True)
        rast = raster(p, tri, resolution)
        img = interp(a, rast, tri)
        loss = (img * weights).sum() + (rast[..., :3] * weights).sum()
        grad_p, grad_a = torch.autograd.grad(loss, [p, a])
        results.append((rast.detach(), img.detach(), grad_p, grad_a))
    (rast, img, gp, ga), (ref_rast, ref_img, ref_gp, ref_ga) = results
    assert torch.equal(rast[..., 3], ref_rast[..., 3]), "triangle ids differ"
    torch.testing.assert_close(rast, ref_rast, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(img, ref_img, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ga, ref_ga, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gp, ref_gp, atol=2e-3, rtol=1e-3)
    return rast


def test_overlapping_scene_matches_reference():
    pos, tri = _overlap_scene()
    rast = _compare_with_reference(pos, tri, (16, 20))
    ids = set(rast[..., 3].unique().long().tolist())
    # Things the scene is built to exercise really happen on this image.
    assert {1, 2, 3, 4, 5, 7, 9} <= ids, ids
    assert 6 not in ids and 8 not in ids  # degenerate and w < 0 triangles are skipped
    assert 0 in ids  # some pixels stay empty


def test_grid_mesh_matches_reference():
    pos, tri = _grid_mesh(n=6)
    _compare_with_reference(pos, tri.int(), (24, 20), seed=1)


def test_batch_with_different_meshes_matches_reference():
    pos_a, tri = _overlap_scene(seed=1)
    pos_b, _ = _overlap_scene(seed=2)
    pos_b = pos_b * torch.tensor([-0.8, 0.9, -1.0, 1.0])  # mirrored, depth order reversed
    rast = _compare_with_reference(torch.cat([pos_a, pos_b]), tri, (12, 18), seed=2)
    assert not torch.equal(rast[0, ..., 3], rast[1, ..., 3])


def test_perspective_correct_with_varying_w_matches_reference():
    pos, tri = _overlap_scene(seed=3)
    w = torch.linspace(0.5, 3.0, pos.shape[1])[None, :, None]
    pos = torch.cat([pos[..., :3] * w, pos[..., 3:] * w], -1)  # same image, other depths
    pos[0, 22:, 3] = torch.tensor([-1.0, 1.0, 1.0])  # keep triangle 7 behind the camera
    pos[..., 2] *= 0.5
    _compare_with_reference(pos, tri, (16, 20), seed=3)
    # Perspective correction really matters here: u differs from the screen-space weight.
    front = tri[torch.arange(len(tri)) != 7]  # dividing by w would bring 7 in front
    rast = TorchRasterizer().rasterize(pos, front, (16, 20))
    affine = TorchRasterizer().rasterize(pos / pos[..., 3:], front, (16, 20))
    assert torch.equal(rast[..., 3], affine[..., 3])
    assert (rast[..., :2] - affine[..., :2]).abs().max() > 1e-2


def _lattice_triangle(corners, z, height, width) -> torch.Tensor:
    """[3, 4] clip-space vertices at pixel-centre lattice points (exact in float32)."""
    rows = [(*_pixel_ndc(c, r, height, width), z, 1.0) for c, r in corners]
    return torch.tensor(rows)


def test_inclusive_edges_and_exact_ties_match_reference():
    height, width = 16, 32  # powers of two: lattice points and edge tests are exact
    quad = [(2, 2), (20, 2), (2, 12), (20, 12)]
    a = _lattice_triangle([quad[0], quad[1], quad[2]], 0.25, height, width)
    b = _lattice_triangle([quad[2], quad[1], quad[3]], 0.25, height, width)  # shared edge
    dup = _lattice_triangle([quad[0], quad[1], quad[2]], 0.25, height, width)
    pos = torch.cat([b, dup, a])[None]  # triangle 1 duplicates triangle 2 exactly
    tri = torch.arange(9).view(3, 3)
    rast = _compare_with_reference(pos, tri, (height, width))
    ids = rast[0, ..., 3]
    # Pixel centres on the outer edges are drawn (inclusive), both ends included.
    assert ids[2, 2] > 0 and ids[2, 20] > 0 and ids[12, 2] > 0 and ids[12, 20] > 0
    assert ids[1, 2] == 0 and ids[2, 1] == 0 and ids[13, 20] == 0 and ids[12, 21] == 0
    # On the shared diagonal both triangles cover the pixel at equal depth: index 0 wins;
    # where the duplicates overlap, the smaller index (1, id 2) beats its copy (2, id 3).
    assert ids[7, 11] == 1  # (col 11, row 7) lies on the diagonal from (20, 2) to (2, 12)
    assert ids[3, 3] == 2
    assert not (ids == 3).any()


def test_nearer_triangle_wins_and_swapping_depth_swaps_winner():
    height, width = 8, 8
    big = _lattice_triangle([(0, 0), (7, 0), (0, 7)], 0.3, height, width)
    other = _lattice_triangle([(0, 0), (7, 0), (7, 7)], -0.3, height, width)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast = TorchRasterizer().rasterize(torch.cat([big, other])[None], tri, (height, width))
    both = (torch.arange(8)[:, None] <= torch.arange(8)[None, :]) & (
        torch.arange(8)[:, None] + torch.arange(8)[None, :] <= 7)  # under both triangles
    assert (rast[0, ..., 3][both] == 2).all()
    torch.testing.assert_close(rast[0, ..., 2][both], torch.full((int(both.sum()),), -0.3))
    big[:, 2], other[:, 2] = -0.3, 0.3
    rast = TorchRasterizer().rasterize(torch.cat([big, other])[None], tri, (height, width))
    assert (rast[0, ..., 3][both] == 1).all()


def test_empty_pixels_are_zero_and_attributes_broadcast():
    pos, tri = _overlap_scene()
    rast = TorchRasterizer().rasterize(pos, tri, (16, 20))
    empty = rast[..., 3] == 0
    assert empty.any() and (~empty).any()
    assert (rast[empty] == 0).all()
    attr = torch.randn(pos.shape[1], 4) + 5.0  # nonzero everywhere
    img = TorchRasterizer().interpolate(attr, rast, tri)
    assert img.shape == (1, 16, 20, 4)
    assert (img[empty] == 0).all() and (img[~empty] != 0).all()
    torch.testing.assert_close(img, TorchRasterizer().interpolate(attr[None], rast, tri))


def test_interpolate_gradients_wrt_rast_and_attr_match_reference():
    pos, tri = _overlap_scene()
    rast = TorchRasterizer().rasterize(pos, tri, (16, 20)).detach()
    attr = torch.randn(1, pos.shape[1], 2)
    weights = torch.randn(1, 16, 20, 2)
    grads = []
    for interp in (TorchRasterizer().interpolate, reference_interpolate):
        r, a = rast.clone().requires_grad_(True), attr.clone().requires_grad_(True)
        grads.append(torch.autograd.grad((interp(a, r, tri) * weights).sum(), [r, a]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_nothing_visible_gives_zero_image():
    pos = torch.tensor([[[-3.0, -3.0, 0.0, 1.0], [-2.0, -3.0, 0.0, 1.0], [-3.0, -2.0, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]])
    rast = TorchRasterizer().rasterize(pos, tri, (8, 8))
    assert rast.shape == (1, 8, 8, 4) and (rast == 0).all()
    assert (TorchRasterizer().interpolate(torch.ones(3, 2), rast, tri) == 0).all()


def test_rasterize_rejects_bad_pos_shape():
    with pytest.raises(ValueError, match="B, V, 4"):
        TorchRasterizer().rasterize(torch.zeros(3, 4), torch.tensor([[0, 1, 2]]), (4, 4))


def test_get_rasterizer_choices_and_errors():
    assert isinstance(get_rasterizer("torch"), TorchRasterizer)
    assert isinstance(get_rasterizer("auto", "cpu"), TorchRasterizer)
    assert isinstance(get_rasterizer(), Rasterizer)
    assert isinstance(NvdiffrastRasterizer(), Rasterizer)
    with pytest.raises(ValueError, match="auto, torch, nvdiffrast"):
        get_rasterizer("opengl")
    # nvdiffrast never runs on CPU; the message says why (not installed, or no CUDA).
    reason = nvdiffrast_unavailable_reason("cpu")
    assert reason is not None and ("vividtalk[gpu]" in reason or "CUDA" in reason)
    with pytest.raises(RuntimeError, match="unavailable"):
        get_rasterizer("nvdiffrast", "cpu")
    with pytest.raises(ValueError, match="CUDA"):
        NvdiffrastRasterizer().rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), (4, 4))


def test_image_to_clip_and_render_attributes():
    height, width = 16, 24
    verts = torch.tensor([[[0.0, 0.0, -5.0], [24.0, 16.0, 5.0], [12.0, 8.0, 0.0]]])
    pos = image_to_clip(verts, height, width)
    expected = torch.tensor([[[-1.0, -1.0, -5 / 24, 1.0], [1.0, 1.0, 5 / 24, 1.0],
                              [0.0, 0.0, 0.0, 1.0]]])
    torch.testing.assert_close(pos, expected)
    assert image_to_clip(verts[0], height, width, depth_scale=10.0)[0, 0, 2] == -0.5
    # A pixel-aligned rectangle (two triangles) covers exactly its pixel centres (a width
    # of 32 keeps the edges exact in float32).
    width = 32
    quad = torch.tensor([[2.5, 3.5, 0.0], [10.5, 3.5, 0.0], [2.5, 9.5, 0.0], [10.5, 9.5, 0.0]])
    tri = torch.tensor([[0, 1, 2], [2, 1, 3]])
    colors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    image, mask = render_attributes(TorchRasterizer(), quad, tri, colors, height, width)
    assert image.shape == (1, height, width, 2) and mask.shape == (1, height, width, 1)
    expected_mask = torch.zeros(height, width)
    expected_mask[3:10, 2:11] = 1.0
    torch.testing.assert_close(mask[0, ..., 0], expected_mask)
    torch.testing.assert_close(image[..., 0], mask[..., 0])


def test_rasterizer_timing_reports_documented_keys():
    pos, tri = _grid_mesh(n=5)
    verts = torch.stack([(pos[0, :, 0] + 1) * 16, (pos[0, :, 1] + 1) * 16, pos[0, :, 2]], -1)
    result = time_rasterizer(verts, tri, torch.rand(verts.shape[0], 3), resolution=(32, 32),
                             repeats=3, warmup=1, backend="torch", batch_size=2)
    keys = {"benchmark", "backend", "device", "resolution", "batch_size", "num_vertices",
            "num_triangles", "ms_per_frame", "frames_per_second", "torch_threads"}
    assert keys <= set(result)
    assert result["benchmark"] == "render" and result["backend"] == "torch"
    assert result["resolution"] == [32, 32] and result["batch_size"] == 2
    assert result["num_vertices"] == 25 and result["num_triangles"] == 32
    assert result["ms_per_frame"] > 0 and result["frames_per_second"] > 0


@pytest.mark.gpu
def test_torch_matches_nvdiffrast_on_gpu():
    reason = nvdiffrast_unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(reason)
    device = torch.device("cuda")
    pos, tri = _grid_mesh(n=22, span=0.7)
    scene, scene_tri = _overlap_scene()
    # Triangles 7 (w < 0) and 8 (crosses the far plane) are left out: nvdiffrast clips such
    # triangles as polygons, while the torch backend skips or clips them per pixel.
    tri = torch.cat([tri, scene_tri[:7] + pos.shape[1]])
    pos = torch.cat([pos, scene], 1).to(device)
    tri = tri.to(device)
    attr = torch.randn(1, pos.shape[1], 3, device=device)
    weights = torch.randn(1, 256, 256, 3, device=device)
    outputs = []
    for rasterizer in (TorchRasterizer(), NvdiffrastRasterizer()):
        p, a = pos.clone().requires_grad_(True), attr.clone().requires_grad_(True)
        rast = rasterizer.rasterize(p, tri, (256, 256))
        img = rasterizer.interpolate(a, rast, tri)
        outputs.append((p, a, rast, img))
    agree = outputs[0][2][..., 3] == outputs[1][2][..., 3]
    assert (~agree).float().mean() < 0.005, "too many pixels with different triangles"
    covered = agree & (outputs[0][2][..., 3] > 0)
    assert covered.float().mean() > 0.3
    torch.testing.assert_close(outputs[0][2][covered][:, :3], outputs[1][2][covered][:, :3],
                               atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(outputs[0][3][covered], outputs[1][3][covered],
                               atol=1e-3, rtol=1e-3)
    grads = []
    for p, a, _, img in outputs:  # loss only over pixels where the two backends agree
        loss = (img * weights * covered[..., None]).sum()
        grads.append(torch.autograd.grad(loss, [p, a]))
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-2, rtol=1e-3)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=5e-2, rtol=1e-2)
