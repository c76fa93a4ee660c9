"""The MediaPipe topology: derived triangles form a valid, consistently oriented 2-manifold
with boundary, and the packaged model uses exactly them."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from vividtalk.face import topology


@pytest.fixture(scope="module")
def derived():
    return topology.mediapipe_triangles()


def directed_edges(tris):
    return [(int(t[i]), int(t[(i + 1) % 3])) for t in tris for i in range(3)]


def test_triangles_cover_exactly_the_tessellation_edges(derived):
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    tess = {tuple(e) for e in topology.undirected_edges(FACEMESH_TESSELATION)}
    mesh = {tuple(e) for e in topology.mesh_edges(derived)}
    assert mesh == tess
    assert derived.min() == 0 and derived.max() == topology.NUM_VERTICES - 1


def test_every_edge_in_at_most_two_triangles_and_orientation_consistent(derived):
    undirected = Counter(tuple(sorted(e)) for e in directed_edges(derived))
    assert max(undirected.values()) == 2
    directed = Counter(directed_edges(derived))
    # Consistent orientation: no directed edge is used twice; interior edges once each way.
    assert max(directed.values()) == 1
    for (a, b), n in undirected.items():
        if n == 2:
            assert directed[(a, b)] == 1 and directed[(b, a)] == 1


def test_vertex_links_are_single_fans(derived):
    """Manifold at every vertex: the triangles around it form one fan (path or cycle)."""
    around = defaultdict(list)
    for t in derived:
        for i in range(3):
            around[int(t[i])].append((int(t[(i + 1) % 3]), int(t[(i + 2) % 3])))
    for v, link in around.items():
        nxt = dict(link)
        assert len(nxt) == len(link), f"vertex {v} has a repeated link edge"
        starts = set(nxt) - set(nxt.values())
        assert len(starts) <= 1, f"vertex {v} has a link of several pieces"
        start = starts.pop() if starts else link[0][0]
        cur, seen = start, 0
        while cur in nxt and seen <= len(link):
            cur = nxt[cur]
            seen += 1
            if cur == start:  # a closed fan (interior vertex)
                break
        assert seen == len(link), f"vertex {v}: fan does not cover all its triangles"


def test_boundary_is_oval_mouth_and_two_eyes(derived):
    undirected = Counter(tuple(sorted(e)) for e in directed_edges(derived))
    boundary = np.array([e for e, n in undirected.items() if n == 1])
    loops = topology.ordered_loops(boundary)
    assert len(loops) == 4
    v, e, f = topology.NUM_VERTICES, len(undirected), len(derived)
    assert v - e + f == 2 - len(loops)  # a sphere with 4 holes


def test_spurious_cycles_are_dropped():
    # Two triangles sharing edge (0, 2), plus a third face (1, 2, 3)... and the 3-cycle
    # (0, 1, 3) made only of edges that already bound two faces is not a face.
    faces = [(0, 1, 2), (0, 2, 3), (1, 2, 3), (0, 1, 4), (1, 3, 5), (0, 3, 6)]
    edges = topology.mesh_edges(np.array(faces))
    found = {tuple(t) for t in topology.triangles_from_edges(edges)}
    assert found == {tuple(sorted(t)) for t in faces}


def test_packaged_model_uses_the_derived_triangles(derived, face_model):
    packaged = {tuple(sorted(t)) for t in face_model.triangles.tolist()}
    assert packaged == {tuple(sorted(t)) for t in derived.tolist()}
    # Fixed global sign: a frontal face's triangles face the camera (-z).
    v = face_model.mean.numpy()[face_model.triangles.numpy()]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    assert (normal_z < 0).mean() > 0.9


def test_regions(face_model):
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LEFT_EYE, FACEMESH_LIPS

    r, y = face_model.regions, face_model.mean.numpy()[:, 1]
    assert set(np.unique(list(FACEMESH_LIPS)).tolist()) <= set(r["lips"].tolist())
    assert np.array_equal(np.sort(face_model.lip_indices.numpy()), np.sort(r["lips"]))
    assert y[r["lips_outer_upper"][1:-1]].mean() < y[r["lips_outer_lower"][1:-1]].mean()
    assert y[r["left_eye_upper"][1:-1]].mean() < y[r["left_eye_lower"][1:-1]].mean()
    assert set(r["left_eye_upper"]) | set(r["left_eye_lower"]) == set(np.unique(list(FACEMESH_LEFT_EYE)))
    x = face_model.mean.numpy()[:, 0]
    assert x[r["left_eye_upper"]].mean() > 0 > x[r["right_eye_upper"]].mean()  # subject's left = +x
    assert len(r["face_oval"]) == 36 and 60 <= len(r["lips"]) <= 100


def test_scanline_fill_equals_the_per_pixel_polygon_test():
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:50, 0:55]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    for _ in range(30):
        poly = rng.random((int(rng.integers(3, 40)), 2)) * 60 - 5
        poly = np.round(poly * 2) / 2  # vertices on pixel centres and edges: the tie cases
        ref = topology.points_in_polygon(centres, poly).reshape(50, 55)
        assert np.array_equal(topology.fill_polygon(poly, 50, 55), ref)
