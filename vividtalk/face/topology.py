"""The MediaPipe Face Mesh topology: triangles, loops and semantic regions.

Everything here is *derived* from the connection sets that ship inside ``mediapipe==0.10.14``
(``mediapipe.python.solutions.face_mesh_connections``). The results are frozen into the face
model asset by ``python -m data_prep face-model``; at run time the library reads the asset
and needs none of this. Tests re-derive and compare.

Conventions: 468 mesh vertices (the 10 iris points 468..477 of the refined tracker are not
part of the mesh). "Left" is the subject's left, as in MediaPipe and ARKit, i.e. the image's
right side for a face looking at the camera.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

NUM_VERTICES = 468


def _connections():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    return fmc


def undirected_edges(connections) -> np.ndarray:
    """Unique undirected edges of a MediaPipe connection set.

    Returns:
        int64 [E, 2], each row (a, b) with a < b, sorted.
    """
    edges = {(min(a, b), max(a, b)) for a, b in connections if a != b}
    return np.array(sorted(edges), dtype=np.int64)


def triangles_from_edges(edges: np.ndarray) -> np.ndarray:
    """Recover the triangles of a triangulated surface from its edge graph.

    Every 3-cycle of the graph is a candidate. A few 3-cycles are not faces: they are
    spanned by edges that already bound two real faces. Such a spurious cycle is the only
    kind whose three edges are all over-used (in three cycles), so dropping exactly those
    leaves a surface in which every edge bounds at most two triangles.

    Args:
        edges: int [E, 2] undirected edges.
    Returns:
        int64 [F, 3] triangles (vertex order not yet oriented).
    """
    adjacency = defaultdict(set)
    for a, b in edges:
        adjacency[int(a)].add(int(b))
        adjacency[int(b)].add(int(a))
    cycles = set()
    for a, b in edges:
        for c in adjacency[int(a)] & adjacency[int(b)]:
            cycles.add(tuple(sorted((int(a), int(b), c))))
    use = Counter(e for t in cycles for e in _tri_edges(t))
    faces = [t for t in sorted(cycles) if not all(use[e] > 2 for e in _tri_edges(t))]
    return np.array(faces, dtype=np.int64)


def _tri_edges(t):
    a, b, c = t
    return ((min(a, b), max(a, b)), (min(b, c), max(b, c)), (min(a, c), max(a, c)))


def orient_consistently(triangles: np.ndarray) -> np.ndarray:
    """Flip triangles so that neighbours traverse their shared edge in opposite directions.

    Breadth-first over the dual graph from triangle 0 (one connected surface assumed).

    Args:
        triangles: int [F, 3].
    Returns:
        int64 [F, 3], consistently oriented (the global sign is fixed by the caller).
    """
    tris = [list(map(int, t)) for t in triangles]
    by_edge = defaultdict(list)
    for i, t in enumerate(tris):
        for e in _tri_edges(t):
            by_edge[e].append(i)
    done = [False] * len(tris)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            i = queue.pop()
            directed = _directed_edges(tris[i])
            for e in _tri_edges(tris[i]):
                for j in by_edge[e]:
                    if done[j]:
                        continue
                    # A neighbour must use the shared edge in the opposite direction.
                    if _directed_edges(tris[j]) & directed:
                        tris[j] = [tris[j][0], tris[j][2], tris[j][1]]
                    done[j] = True
                    queue.append(j)
    return np.array(tris, dtype=np.int64)


def _directed_edges(t):
    return {(t[0], t[1]), (t[1], t[2]), (t[2], t[0])}


def ordered_loops(edges: np.ndarray) -> list[np.ndarray]:
    """Split a set of edges forming disjoint simple cycles into ordered vertex loops.

    Args:
        edges: int [E, 2]; every vertex must have degree 2.
    Returns:
        list of int64 [n] loops, each starting at its smallest vertex.
    """
    adjacency = defaultdict(list)
    for a, b in edges:
        adjacency[int(a)].append(int(b))
        adjacency[int(b)].append(int(a))
    bad = [v for v, n in adjacency.items() if len(n) != 2]
    if bad:
        raise ValueError(f"edges are not disjoint cycles: vertices {bad[:5]} have degree != 2")
    loops, seen = [], set()
    for start in sorted(adjacency):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        while True:
            seen.add(cur)
            nxt = [n for n in adjacency[cur] if n != prev][0] if prev is not None else adjacency[cur][0]
            if nxt == start:
                break
            loop.append(nxt)
            prev, cur = cur, nxt
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def split_loop_at_extremes(loop: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a closed contour (lips, eyelids) into its upper and lower halves.

    The two corners are the loop's leftmost and rightmost points (image x); each half runs
    from corner to corner and includes both corners.

    Args:
        loop: int [n] ordered vertex loop.
        points: float [V, 2 or 3] positions with image axes (x right, y down).
    Returns:
        (upper, lower): int64 index arrays, ordered from the smaller-x corner to the larger.
    """
    x = points[loop, 0]
    i0, i1 = int(np.argmin(x)), int(np.argmax(x))
    n = len(loop)
    path_a = [loop[(i0 + k) % n] for k in range((i1 - i0) % n + 1)]
    path_b = [loop[(i0 - k) % n] for k in range((i0 - i1) % n + 1)]
    mean_y = lambda p: points[np.array(p[1:-1]), 1].mean()  # noqa: E731 (tiny key)
    upper, lower = (path_a, path_b) if mean_y(path_a) < mean_y(path_b) else (path_b, path_a)
    return np.array(upper, dtype=np.int64), np.array(lower, dtype=np.int64)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test in 2-D.

    Args:
        points: float [N, 2]; polygon: float [n, 2] ordered vertices.
    Returns:
        bool [N].
    """
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (x < x_at)).sum(axis=1) % 2) == 1


def fill_polygon(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre (j + 0.5, i + 0.5) is inside a polygon (even-odd rule): bool [H, W].

    The same answer as :func:`points_in_polygon` on every pixel centre, by scanlines: each
    edge crossing of a row toggles the pixels to its left, so the cost is O(H (E + W)).

    Args:
        polygon: float [n, 2] ordered vertices (x, y) in pixels.
    """
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(height)[:, None] + 0.5  # [H, 1]
    crosses = (y0 > yc) != (y1 > yc)  # [H, E]
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
    rows, edges = np.nonzero(crosses)
    # Pixel j is left of the crossing iff j + 0.5 < x_at, i.e. j < ceil(x_at - 0.5).
    k = np.clip(np.ceil(x_at[rows, edges] - 0.5), 0, width).astype(np.int64)
    hist = np.zeros((height, width + 1), np.int64)
    np.add.at(hist, (rows, k), 1)
    left_of = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # crossings with k > j
    return (left_of % 2) == 1


def mediapipe_triangles() -> np.ndarray:
    """Triangles of the 468-vertex mesh derived from ``FACEMESH_TESSELATION``.

    Returns:
        int64 [F, 3], consistently oriented (global sign not yet fixed: see
        :func:`orient_towards_camera`).
    """
    edges = undirected_edges(_connections().FACEMESH_TESSELATION)
    return orient_consistently(triangles_from_edges(edges))


def orient_towards_camera(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Fix the global orientation: normals of a frontal face point to the camera (-z).

    With image axes (x right, y down, z away from the camera), a triangle whose normal
    ``(v1 - v0) x (v2 - v0)`` has negative z faces the camera.
    """
    v = vertices[triangles]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    weights = np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    if (np.sign(normal_z) * weights).sum() > 0:
        triangles = triangles[:, [0, 2, 1]]
    return triangles


def semantic_regions(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Named vertex sets from MediaPipe's connection sets, completed geometrically.

    Keys: ``lips`` (every vertex inside or on the outer lip contour, for the lip offsets),
    ``lips_outer_upper``/``lips_outer_lower``/``lips_inner_upper``/``lips_inner_lower``
    (ordered contours, corner to corner), ``left_eye_upper``/``left_eye_lower`` and the same
    for ``right_eye`` (ordered eyelid contours), ``left_eyebrow``, ``right_eyebrow``,
    ``face_oval`` (ordered loop), ``nose``.

    Args:
        vertices: float [468, 3] a frontal face in image axes (x right, y down).
    Returns:
        dict name -> int64 index array.
    """
    fmc = _connections()
    lip_loops = ordered_loops(undirected_edges(fmc.FACEMESH_LIPS))
    # The outer lip contour is the one enclosing the larger area.
    lip_loops.sort(key=lambda lp: -_polygon_area(vertices[lp, :2]))
    outer, inner = lip_loops
    regions = {}
    regions["lips_outer_upper"], regions["lips_outer_lower"] = split_loop_at_extremes(outer, vertices)
    regions["lips_inner_upper"], regions["lips_inner_lower"] = split_loop_at_extremes(inner, vertices)
    inside = points_in_polygon(vertices[:NUM_VERTICES, :2], vertices[outer, :2])
    regions["lips"] = np.union1d(np.nonzero(inside)[0], np.union1d(outer, inner)).astype(np.int64)
    for side in ("left", "right"):
        (eye,) = ordered_loops(undirected_edges(getattr(fmc, f"FACEMESH_{side.upper()}_EYE")))
        regions[f"{side}_eye_upper"], regions[f"{side}_eye_lower"] = split_loop_at_extremes(eye, vertices)
        brow = undirected_edges(getattr(fmc, f"FACEMESH_{side.upper()}_EYEBROW"))
        regions[f"{side}_eyebrow"] = np.unique(brow)
    (oval,) = ordered_loops(undirected_edges(fmc.FACEMESH_FACE_OVAL))
    regions["face_oval"] = oval
    regions["nose"] = np.unique(undirected_edges(fmc.FACEMESH_NOSE))
    return regions


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def mesh_edges(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges of a triangle list: int64 [E, 2] with a < b."""
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)
