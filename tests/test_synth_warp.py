"""data_prep.synth.warp: the photo warper of the synthetic corpus.

The face must follow the mesh exactly, the rest of the person smoothly, the background must
stay, the field must be continuous at the face boundary and open mouths get an interior.
Checked on the scikit-image portrait (tracked, cropped and fitted once) and on a synthetic
photo with coloured dots painted at known vertices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt

from data_prep.synth.warp import (
    BACKGROUND,
    FACE,
    HAIR_TORSO,
    PhotoWarper,
)
from vividtalk.face.holes import close_holes, hole_loops
from vividtalk.face.pose import similarity_2d
from vividtalk.face import FaceFitter, clip_crop_box, crop_image
from vividtalk.face.segmentation import face_region, label_masks, person_mask
from vividtalk.face.topology import mesh_edges, points_in_polygon


@pytest.fixture(scope="module")
def scene(portrait, portrait_landmarks, face_model) -> dict:
    """The portrait cropped to 256 x 256, its fit, fitted mesh [468, 3], labels and warper."""
    box = clip_crop_box(portrait_landmarks)
    crop = crop_image(portrait, box)
    fit = FaceFitter(face_model).fit(box.to_crop(portrait_landmarks))
    source = face_model.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets,
                                 pose=fit.pose)[0]
    labels = label_masks(person_mask(crop), source.numpy(), face_model)
    return {"crop": crop, "fit": fit, "source": source, "labels": labels,
            "warper": PhotoWarper(crop, source, face_model, labels)}


def _posed(scene, face_model, beta: dict | None = None, pose_delta=None, lips: bool = True):
    """A target mesh [468, 3]: the portrait's fit with some coefficients / pose changed."""
    fit = scene["fit"]
    coeffs = fit.beta.clone()
    for name, value in (beta or {}).items():
        coeffs[0, face_model.expression_names.index(name)] = value
    pose = fit.pose + torch.tensor(pose_delta or [0.0] * 7)
    return face_model.assemble(coeffs, identity=fit.identity, pose=pose,
                               lip_offsets=fit.lip_offsets if lips else None)[0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _neighbour_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """(rows_a, cols_a, rows_b, cols_b) of 4-neighbour pixel pairs with a pixel of ``a`` and
    one of ``b`` (bool [H, W] masks)."""
    h, w = a.shape
    pairs = []
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        r, c = np.nonzero(a)
        rb, cb = r + dr, c + dc
        ok = (rb >= 0) & (rb < h) & (cb >= 0) & (cb < w)
        r, c, rb, cb = r[ok], c[ok], rb[ok], cb[ok]
        ok = b[rb, cb]
        pairs.append((r[ok], c[ok], rb[ok], cb[ok]))
    return tuple(np.concatenate(k) for k in zip(*pairs, strict=True))


def _jumps(disp: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|disp(p) - disp(q)| over 4-neighbour pairs p in ``a``, q in ``b``: float [N]."""
    ra, ca, rb, cb = _neighbour_pairs(a, b)
    return np.linalg.norm(disp[ra, ca] - disp[rb, cb], axis=-1)


# ------------------------------------------------------------------------------ helpers
def test_hole_fans_leave_only_the_oval_as_boundary(face_model):
    loops = hole_loops(face_model)
    tri = close_holes(face_model.triangles.numpy(), loops, face_model.num_vertices)
    assert tri.shape[0] == face_model.triangles.shape[0] + sum(len(lp) for lp in loops)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), 1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2  # still a manifold
    boundary = np.unique(unique[counts == 1])
    assert set(boundary.tolist()) == set(face_model.regions["face_oval"].tolist())
    assert len(mesh_edges(tri)) == len(unique)


def test_similarity_2d_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(2, 20, 2)) * 30
    angle, scale, shift = 0.3, 1.2, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    mat = similarity_2d(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    assert np.allclose(mat[:, :, :2], rot, atol=1e-9) and np.allclose(mat[:, :, 2], shift, atol=1e-9)


# ----------------------------------------------------------------------------- portrait
def test_identity_reproduces_the_photo(scene):
    out = scene["warper"].warp(scene["source"])
    frame, mask, labels = out["frames"][0].astype(int), out["masks"][0], scene["labels"]
    diff = np.abs(frame - scene["crop"]).mean(-1)
    assert diff[labels == FACE].mean() < 2.0
    assert diff[labels == HAIR_TORSO].mean() < 2.0
    assert diff[labels == BACKGROUND].max() <= 1.0
    for label in (BACKGROUND, HAIR_TORSO, FACE):
        assert _iou(mask == label, labels == label) > 0.95
    assert out["mouth_alpha"].max() == 0.0  # the photo's own mouth is kept
    np.testing.assert_allclose(out["source_xy"][0], scene["warper"].grid, atol=1e-3)


def test_translation_moves_the_face_and_keeps_the_background(scene):
    dx, dy = 7, -4
    target = scene["source"] + torch.tensor([dx, dy, 0.0])
    frames, masks = scene["warper"].render(target)
    crop, labels, frame = scene["crop"].astype(int), scene["labels"], frames[0].astype(int)
    shifted_face = np.roll(labels == FACE, (dy, dx), (0, 1))
    assert _iou(masks[0] == FACE, shifted_face) > 0.97
    # Face interior (away from its edge): the photo shifted by (dx, dy).
    interior = binary_erosion(shifted_face, iterations=4)
    expected = np.roll(crop, (dy, dx), (0, 1))
    assert np.abs(frame - expected).mean(-1)[interior].mean() < 1.0
    # Background far from the person is untouched.
    far = distance_transform_edt(labels == BACKGROUND) > 20
    assert far.sum() > 2000
    assert np.abs(frame - crop).max(-1)[far].max() <= 1
    # Hair next to the face (not at its soft edge with the background) follows it fully.
    hair_near = (labels == HAIR_TORSO) & (distance_transform_edt(labels != FACE) < 8)
    hair_near &= distance_transform_edt(labels != BACKGROUND) > 4
    hair_near &= np.roll(hair_near, (dy, dx), (0, 1))
    hair_disp = scene["warper"].warp(target)["source_xy"][0] - scene["warper"].grid
    assert hair_near.sum() > 300
    assert np.abs(hair_disp[np.roll(hair_near, (dy, dx), (0, 1))] - [-dx, -dy]).max() < 0.5


def test_motion_field_is_continuous_at_the_face_boundary(scene, face_model):
    warper = scene["warper"]
    targets = torch.stack([
        scene["source"] + torch.tensor([6.0, 3.0, 0.0]),
        _posed(scene, face_model, pose_delta=[0.0, 0.0, 0.12, 4.0, 0.0, 0.0, 0.0]),
        _posed(scene, face_model, beta={"jawOpen": 0.6}, pose_delta=[0.1, 0.1, 0.0, 0, 0, 0, 3.0]),
    ])
    out = warper.warp(targets)
    for source_xy, mask in zip(out["source_xy"], out["masks"], strict=True):
        disp, face = source_xy - warper.grid, mask == FACE
        edge = face & ~binary_erosion(face)
        across = _jumps(disp, edge, ~face)  # face edge -> outside neighbour
        within = _jumps(disp, edge, face)  # face edge -> face neighbour: the mesh's own field
        assert np.linalg.norm(disp[face], axis=-1).mean() > 2.0  # the face really moved
        assert across.mean() < 0.4 and np.percentile(across, 95) < 1.0, (across.mean(), across.max())
        # No rougher across the boundary than the mesh's own field along it (grazing
        # triangles at the silhouette make that one steep).
        assert np.percentile(across, 95) <= np.percentile(within, 95) + 0.1


def test_open_jaw_paints_a_mouth_interior(scene, face_model):
    zero = {name: 0.0 for name in face_model.expression_names}
    opened = _posed(scene, face_model, beta={**zero, "jawOpen": 1.0}, lips=False)
    closed = _posed(scene, face_model, beta=zero, lips=False)
    out = scene["warper"].warp(torch.stack([opened, closed]))
    regions = face_model.regions
    inside_open = 0
    for k, verts in enumerate((opened, closed)):
        loop = np.concatenate([regions["lips_inner_upper"], regions["lips_inner_lower"][::-1][1:-1]])
        h, w = out["masks"].shape[1:]
        centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), -1).reshape(-1, 2)
        inside = points_in_polygon(centres, verts.numpy()[loop, :2]).reshape(h, w)
        luma = out["frames"][k].astype(float) @ [0.299, 0.587, 0.114]
        if k == 0:
            inside_open = inside.sum()
            assert inside_open > 300  # a wide opening
            assert (out["masks"][0][inside] == FACE).all()
            assert (out["mouth_alpha"][0][inside] > 0.5).mean() > 0.8
            face_luma = luma[(out["masks"][0] == FACE) & ~inside].mean()
            assert luma[inside].mean() < face_luma - 30  # a dark cavity...
            assert (luma[inside] < 60).mean() > 0.25
            assert (luma[inside] > 170).sum() > 20  # ...with teeth
        else:
            # The neutral mouth is not wider open than the photo's: no painted cavity.
            assert out["mouth_alpha"][1].max() == 0.0 and inside.sum() < 0.25 * inside_open


def test_blink_stretches_the_lids_over_the_eyes(scene, face_model):
    blink = _posed(scene, face_model, beta={"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0})
    out = scene["warper"].warp(blink)
    frame, mask = out["frames"][0].astype(float), out["masks"][0]
    h, w = mask.shape
    centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), -1).reshape(-1, 2)
    for loop in hole_loops(face_model)[:2]:
        eye = points_in_polygon(centres, scene["source"].numpy()[loop, :2]).reshape(h, w)
        assert eye.sum() > 100 and (mask[eye] == FACE).all()
        # The open eye (white sclera, dark iris) is covered by the smoother lid.
        photo_luma = scene["crop"].astype(float) @ [0.299, 0.587, 0.114]
        assert (frame @ [0.299, 0.587, 0.114])[eye].std() < 0.7 * photo_luma[eye].std()


# -------------------------------------------------------------------- synthetic dots photo
# Vertices inside the face (not on its outer edge), one distinct colour each.
DOTS = {1: (255, 0, 0), 175: (0, 255, 0), 105: (0, 0, 255), 334: (255, 255, 0),
        50: (255, 0, 255), 280: (0, 255, 255), 17: (255, 128, 0)}


def _dot_photo(source: np.ndarray, size: int = 256, radius: float = 1.6) -> np.ndarray:
    """A grey photo with a disc of each DOTS colour centred on its source vertex."""
    photo = np.full((size, size, 3), 110, np.uint8)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for vertex, color in DOTS.items():
        x, y = source[vertex, :2]
        photo[(xs - x) ** 2 + (ys - y) ** 2 <= radius**2] = color
    return photo


def _dot_centre(frame: np.ndarray, color) -> tuple[np.ndarray, float]:
    """Weighted centroid (x, y pixels) of a dot colour in a frame, and the total weight.

    A pixel's weight is how far it lies from the grey towards the colour (bilinear blends
    with grey count in part); pixels off that grey-to-colour line (other dots) are ignored.
    """
    grey = np.full(3, 110.0)
    direction = np.asarray(color, float) - grey
    offset = frame.astype(float) - grey
    t = offset @ direction / (direction @ direction)  # [H, W]
    off_line = np.linalg.norm(offset - t[..., None] * direction, axis=-1)
    weight = np.where((t > 0.2) & (off_line < 0.25 * t * np.linalg.norm(direction) + 8), np.minimum(t, 1), 0)
    rows, cols = np.nonzero(weight)
    wsum = weight[rows, cols].sum()
    return np.array([(cols + 0.5) @ weight[rows, cols], (rows + 0.5) @ weight[rows, cols]]) / wsum, wsum


def test_painted_vertices_land_on_the_target_vertices(face_model):
    pose = torch.tensor([0.0, 0.0, 0.0, 128.0, 138.0, 0.0, 160.0])
    beta = torch.zeros(face_model.num_expressions)
    source = face_model.assemble(beta, pose=pose)
    names = face_model.expression_names
    for name, value in (("jawOpen", 0.4), ("mouthSmileLeft", 0.6), ("browInnerUp", 0.8)):
        beta[names.index(name)] = value
    target = face_model.assemble(beta, pose=pose + torch.tensor([0.1, 0.15, 0.2, 6, -4, 0, 8]))
    photo = _dot_photo(source.numpy())
    labels = np.where(face_region(source.numpy(), face_model, 256, 256), FACE, HAIR_TORSO).astype(np.uint8)
    warper = PhotoWarper(photo, source, face_model, labels)
    frame = warper.render(target)[0][0]
    assert not set(DOTS) & set(face_model.regions["face_oval"].tolist())
    for vertex, color in DOTS.items():
        centre, weight = _dot_centre(frame, color)
        assert weight > 3.0, vertex
        err = np.linalg.norm(centre - target[vertex, :2].numpy())
        assert err < 1.0, (vertex, err)


def test_rendering_is_deterministic_and_independent_of_chunking(scene, face_model):
    targets = torch.stack([
        _posed(scene, face_model, beta={"jawOpen": a}, pose_delta=[0, a / 4, 0, 0, 0, 0, 0])
        for a in (0.0, 0.3, 0.7)
    ])
    first = scene["warper"].render(targets)
    second = scene["warper"].render(targets.numpy())
    chunked = PhotoWarper(scene["crop"], scene["source"], face_model, scene["labels"],
                          chunk_size=2).render(targets)
    for a, b, c in zip(first, second, chunked, strict=True):
        assert a.dtype == np.uint8 and a.shape[0] == 3
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_bad_inputs_are_rejected(scene, face_model):
    with pytest.raises(ValueError, match="uint8"):
        PhotoWarper(scene["crop"].astype(np.float32), scene["source"], face_model, scene["labels"])
    with pytest.raises(ValueError, match="target vertices"):
        scene["warper"].render(torch.zeros(2, 10, 3))
