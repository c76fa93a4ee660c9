"""Render a synthetic talking head by warping one photo with a dense, mesh-driven motion field.

Ground truth of the synthetic corpus is exact because the frames are made from the meshes:
given the photo (a 256 x 256 face crop), its fitted source mesh and a sequence of target
meshes, every frame is a backward warp of the photo,

    frame(p) = photo(src(p)),

with ``src(p)`` built in three parts:

1. Face (pixels the target mesh covers): the mesh with its eye and mouth holes closed by
   fan triangles is rasterized; ``src(p)`` is the barycentric interpolation of the SOURCE
   vertices' (x, y) with the covering triangle's weights, so a surface point moves exactly
   with the mesh (piecewise-affine texture mapping).
2. Outside the face: the backward displacement ``d = src(p) - p`` is extended smoothly: the
   head's rigid 2-D similarity (fit on the model's rigid vertices) plus the face boundary's
   residual carried outward from the nearest face pixel, both fading with the distance to
   the face. Pixels the person (the photo's label mask) moves into or out of take this
   field; other background pixels keep ``d = 0``, except in a thin band around the face
   that keeps the field continuous (no tearing) where the face touches the background.
3. Mouth interior: where the target's inner-lip fan is visible and the mouth is more open
   than in the photo, a procedural interior (dark cavity, upper-teeth band, a hint of tongue
   and lower teeth for wide opening) is painted with soft edges instead of stretching the
   photo's own mouth.

Pixel convention (``vividtalk.render.shading.image_to_clip``): pixel (row i, column j) has
its centre at (x, y) = (j + 0.5, i + 0.5); all positions below are in that continuous frame.

Cost: about 16 ms per 256 x 256 frame on two CPU cores (torch rasterizer ~4 ms, the
per-frame outside field ~10 ms, in chunks of 16 frames).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from vividtalk.face import FaceModel
from vividtalk.face.fitting import rigid_vertices
from vividtalk.face.pose import similarity_2d as _similarity_2d
from vividtalk.face.segmentation import BACKGROUND, FACE, HAIR_TORSO
from vividtalk.face.holes import add_hole_centres, close_holes, hole_loops, loop_width, mouth_opening
from vividtalk.render import Rasterizer, get_rasterizer, image_to_clip


# Mouth interior colours (RGB, 0-255): deep cavity, cavity near the lips, teeth, tongue.
_CAVITY_DEEP = np.array([28.0, 8.0, 12.0], np.float32)
_CAVITY_EDGE = np.array([78.0, 28.0, 32.0], np.float32)
_TEETH = np.array([226.0, 218.0, 200.0], np.float32)
_TONGUE = np.array([165.0, 72.0, 78.0], np.float32)


# ----------------------------------------------------------------------------- geometry
def similarity_displacement(mat: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Displacement ``A p - p`` of an affine map float [2, 3] at pixel centres float32
    [H, W, 2] (a regular grid, so rows and columns broadcast): float32 [H, W, 2]."""
    x, y = grid[0, :, 0][None, :], grid[:, 0, 1][:, None]  # [1, W], [H, 1]
    dx = (mat[0, 0] - 1.0) * x + mat[0, 1] * y + mat[0, 2]
    dy = mat[1, 0] * x + (mat[1, 1] - 1.0) * y + mat[1, 2]
    return np.stack(np.broadcast_arrays(dx, dy), -1).astype(np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Hermite ramp 3x^2 - 2x^3 of x clipped to [0, 1] (flat at both ends: no kink)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ------------------------------------------------------------------------- outside field
def nearest_face_pixel(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean distance to, and position of, the nearest face pixel.

    Args:
        face: bool [H, W], at least one True.
    Returns:
        dist: float32 [H, W] pixels (0 on the face); index: int64 [2, H, W] (row, col) of
        the nearest face pixel (itself on the face).
    """
    dist, index = ndimage.distance_transform_edt(~face, return_indices=True)
    return dist.astype(np.float32), index


def smooth_on_face(field: np.ndarray, face: np.ndarray, sigma: float) -> np.ndarray:
    """Normalized convolution of ``field`` float32 [H, W, C] over the pixels of ``face`` bool
    [H, W] with a Gaussian of ``sigma`` pixels: float32 [H, W, C] (0 where no face is near)."""
    weight = face.astype(np.float32)
    # Zero padding: no face lies beyond the array (it may be a crop around the face).
    num = cv2.GaussianBlur(field * weight[..., None], (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return (num / np.maximum(den, 1e-6)[..., None]).astype(np.float32)


def outside_displacement(face: np.ndarray, face_disp: np.ndarray, sim_disp: np.ndarray,
                         hair_sigma: float, residual_sigma: float, smooth_sigma: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The field hair and torso would follow, continuous with the face's field.

    ``d(p) = g_h(dist) sim(p) + g_r(dist) r(nearest face pixel)``, with Gaussian fades
    g(dist) = exp(-dist^2 / 2 sigma^2): flat at the face boundary (so the field joins the
    face's without a jump or kink) and vanishing far away. The carried residual r is the
    exact ``d_face - sim`` right at the boundary and, a few pixels out, its smoothed
    version: along a silhouette the exact field is jagged (grazing triangles) and would
    leave streaks. The nearest-pixel map of a nearly convex region is continuous.

    Args:
        face: bool [H, W] pixels covered by the target mesh (at least one).
        face_disp: float32 [H, W, 2] backward displacement src - p (valid on ``face``).
        sim_disp: float32 [H, W, 2] displacement of the head's rigid 2-D similarity.
        hair_sigma, residual_sigma: fade lengths in pixels; smooth_sigma: Gaussian sigma
            (pixels) of the smoothed residual.
    Returns:
        disp: float32 [H, W, 2] (equal to ``face_disp`` on the face); dist: float32 [H, W]
        distance to the face in pixels.
    """
    dist, index = nearest_face_pixel(face)
    h, w = face.shape
    # Residuals are only ever read on face pixels: work in the face's bounding box.
    rows, cols = np.nonzero(face.any(1))[0], np.nonzero(face.any(0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    residual = np.where(face[box][..., None], face_disp[box] - sim_disp[box], 0.0).astype(np.float32)
    both = np.concatenate([residual, smooth_on_face(residual, face[box], smooth_sigma)], -1)
    # Carried out from the nearest face pixel (one flat gather of the box's [h * w, 4]).
    flat = (index[0] - rows[0]) * residual.shape[1] + (index[1] - cols[0])
    both = both.reshape(-1, 4).take(flat.ravel(), 0).reshape(h, w, 4)
    out = np.maximum(dist - 1.0, 0.0)  # 0 on the face and on its 4-neighbours
    exact = np.exp(-0.5 * (2.0 * out / max(smooth_sigma, 1e-6)) ** 2)[..., None]
    residual = both[..., 2:] + exact * (both[..., :2] - both[..., 2:])
    g_hair = np.exp(-0.5 * (dist / hair_sigma) ** 2)[..., None]
    g_res = np.exp(-0.5 * (dist / residual_sigma) ** 2)[..., None]
    disp = g_hair * sim_disp + g_res * residual
    return np.where(face[..., None], face_disp, disp), dist


def follow_weight(person: np.ndarray, dist: np.ndarray, band: float) -> np.ndarray:
    """How much of the outside field a pixel takes: float32 [H, W] in [0, 1].

    1 on (warped) hair/torso, 0 on background, except within ``band`` pixels of the face,
    where it ramps smoothly to 1 so the field stays continuous where face meets background.

    Args:
        person: float32 [H, W] soft person mask (where each pixel would come
            from, or is now).
        dist: float32 [H, W] distance to the face in pixels (its 4-neighbours at 1).
        band: ramp width in pixels.
    """
    ramp = 1.0 - smoothstep((dist - 1.0) / max(band, 1e-6))  # 1 next to the face
    return np.maximum(person, ramp).astype(np.float32)


def sample_map(image: np.ndarray, source_xy: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Sample a single-channel map [H, W] (float32 or uint8) at float32 [H', W', 2]
    positions (x, y pixels, centre convention), bilinear or nearest, edges repeated:
    [H', W'] of the map's dtype (cv2.remap: bilinear weights in 1/32 pixel steps)."""
    map_x = np.ascontiguousarray(source_xy[..., 0] - 0.5, dtype=np.float32)  # pixel index space
    map_y = np.ascontiguousarray(source_xy[..., 1] - 0.5, dtype=np.float32)
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(image, map_x, map_y, mode, borderMode=cv2.BORDER_REFLECT_101)


# ------------------------------------------------------------------------ mouth interior
def mouth_coordinates(xy: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> dict:
    """Coordinates of pixels inside the mouth, in the frame of its corners.

    Args:
        xy: float [P, 2] pixel centres (x, y).
        upper, lower: float [n, 2] target inner-lip contours, corner to corner (same corners).
    Returns:
        dict of float64 [P] arrays: ``s`` position from corner (0) to corner (1), ``below``
        pixels below the upper lip, ``above`` pixels above the lower lip, ``gap`` lip gap
        at that column (pixels); and ``width`` (float) corner-to-corner distance.
    """
    c0, c1 = upper[0].astype(np.float64), upper[-1].astype(np.float64)
    width = max(float(np.linalg.norm(c1 - c0)), 1e-6)
    e_u = (c1 - c0) / width
    e_v = np.array([-e_u[1], e_u[0]])  # image y points down, so +v is "down the face"

    def local(points):
        d = np.asarray(points, np.float64) - c0
        return d @ e_u, d @ e_v

    pu, pv = local(xy)
    lip_v = []
    for contour in (upper, lower):
        u, v = local(contour)
        lip_v.append(np.interp(pu, np.maximum.accumulate(u), v))  # np.interp needs sorted u
    return {"s": pu / width, "below": pv - lip_v[0], "above": lip_v[1] - pv,
            "gap": lip_v[1] - lip_v[0], "width": width}


def mouth_colors(c: dict, teeth_px: float) -> np.ndarray:
    """Procedural mouth interior: float32 [P, 3] RGB (0-255) for :func:`mouth_coordinates`.

    Layers, back to front: a dark cavity (darkest away from the lips and at the corners),
    a tongue and lower-teeth hint that grow with the opening, an upper-teeth band hanging
    from the upper lip (``teeth_px`` tall, at most 65% of the gap), shaded toward the
    corners and under the lip, with faint gaps between teeth.
    """
    s, a, b = np.clip(c["s"], 0.0, 1.0), c["below"], c["above"]
    gap = np.maximum(c["gap"], 1e-3)
    t = np.clip(a / gap, 0.0, 1.0)
    across = np.sin(np.pi * s)[:, None]  # 0 at the corners, 1 in the middle
    wide = smoothstep((gap.max() / c["width"] - 0.12) / 0.25)  # open-mouth factor
    depth = (1.0 - np.abs(2.0 * t - 1.0))[:, None]
    rgb = (_CAVITY_EDGE + (_CAVITY_DEEP - _CAVITY_EDGE) * depth) * (0.55 + 0.45 * across)

    q = ((s - 0.5) / 0.3) ** 2 + ((1.0 - t) / 0.5) ** 2  # tongue: ellipse on the lower lip
    tongue = (wide * np.clip((1.0 - q) * 3.0, 0.0, 1.0))[:, None]
    rgb = rgb + (_TONGUE * (0.75 + 0.25 * np.clip(1.0 - q, 0.0, 1.0))[:, None] - rgb) * tongue

    def band(height, half_width):  # soft-edged band profile over the mouth
        return height * np.sqrt(np.clip(1.0 - ((s - 0.5) / half_width) ** 2, 0.0, 1.0))

    low = np.clip(band(0.4 * teeth_px * wide, 0.25) - b + 0.5, 0.0, 1.0)[:, None]
    rgb = rgb + (_TEETH * 0.85 * (0.7 + 0.3 * across) - rgb) * low * (b > 0)[:, None]

    up = np.clip(band(np.minimum(teeth_px, 0.65 * gap), 0.42) - a + 0.5, 0.0, 1.0)[:, None]
    split = np.abs((s - 0.5) * 7.0 - np.round((s - 0.5) * 7.0))  # 0 on a gap between teeth
    shade = (0.7 + 0.3 * across) * (1.0 - 0.3 * np.exp(-a / 1.2))[:, None]
    shade = shade * (1.0 - 0.12 * np.exp(-((split / 0.06) ** 2)))[:, None]
    rgb = rgb + (_TEETH * shade - rgb) * up * (a > 0)[:, None]
    return rgb.astype(np.float32)


def paint_mouth(canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray, upper: np.ndarray,
                lower: np.ndarray, strength: float, teeth_px: float, edge_px: float) -> np.ndarray:
    """Composite the mouth interior over ``canvas`` in place, with soft edges at the lips.

    Args:
        canvas: float32 [H, W, 3] RGB frame (0-255), modified in place.
        rows, cols: int [P] pixels of the visible mouth fan.
        upper, lower: float [n, 2] target inner-lip contours (corner to corner).
        strength: [0, 1] overall opacity (how much more open than the photo's mouth).
        teeth_px: upper-teeth height in pixels; edge_px: width of the soft lip edge.
    Returns:
        alpha: float32 [P] opacity used per pixel.
    """
    c = mouth_coordinates(np.stack([cols + 0.5, rows + 0.5], 1), upper, lower)
    edge = smoothstep(np.minimum(c["below"], c["above"]) / max(edge_px, 1e-6))
    alpha = (strength * edge).astype(np.float32)
    pixels = canvas[rows, cols]
    canvas[rows, cols] = pixels + (mouth_colors(c, teeth_px) - pixels) * alpha[:, None]
    return alpha


# ------------------------------------------------------------------------------ renderer
class PhotoWarper:
    """Warps one face photo to follow target meshes (see the module docstring).

    Args:
        photo: uint8 [S, S, 3] RGB source crop.
        source_vertices: float [V', 3] (V' >= V) the photo's fitted mesh in crop pixels
            (x, y pixels, z depth in pixels, smaller = closer); numpy or torch.
        model: the face model (triangles, regions; its V vertices lead the mesh).
        labels: uint8 [S, S] the photo's labels: 0 background, 1 hair/torso, 2 face.
        hair_sigma: fade length of the head's rigid motion over hair/torso, in source face
            widths (face-oval x extent).
        residual_sigma: fade length of the non-rigid boundary motion (jaw, cheeks), in face
            widths.
        boundary_smoothing: Gaussian sigma (face widths) of the smoothed face-boundary motion
            carried outward (the exact one is used right at the boundary).
        background_band: width of the band around the face where background pixels follow
            the face (keeps the field continuous), in face widths.
        mask_softness: Gaussian sigma (pixels) softening the hair/torso-background edge.
        mouth_ramp: extra lip gap (in face widths) over which the painted mouth interior fades
            in, beyond the photo's own gap (so the photo's mouth is used when not wider).
        teeth_height: upper-teeth height as a fraction of the photo's inner-mouth width.
        mouth_edge: width in pixels of the soft edge of the mouth interior at the lips.
        chunk_size: frames per rasterizer / grid_sample call.
        rasterizer: a ``vividtalk.render`` rasterizer (default: the torch backend).
        device: where the rasterizer runs (e.g. "cuda" with nvdiffrast); the rest of the
            work is numpy on the CPU.
    """

    def __init__(self, photo: np.ndarray, source_vertices, model: FaceModel, labels: np.ndarray,
                 hair_sigma: float = 0.5, residual_sigma: float = 0.12, boundary_smoothing: float = 0.03,
                 background_band: float = 0.05, mask_softness: float = 1.5,
                 mouth_ramp: float = 0.015, teeth_height: float = 0.14, mouth_edge: float = 1.2,
                 chunk_size: int = 16, rasterizer: Rasterizer | None = None,
                 device: str | torch.device = "cpu") -> None:
        photo, labels = np.asarray(photo), np.asarray(labels)
        size = photo.shape[0]
        if photo.shape != (size, size, 3) or photo.dtype != np.uint8 or labels.shape != (size, size):
            raise ValueError(f"photo must be uint8 [S, S, 3] and labels [S, S], got "
                             f"{photo.dtype} {photo.shape} and {labels.shape}")
        self.size, self.model, self.chunk_size = size, model, int(chunk_size)
        self.device = torch.device(device)
        self.rasterizer = rasterizer or get_rasterizer("auto", self.device)
        v = model.num_vertices
        source = torch.as_tensor(np.asarray(source_vertices, np.float32)[:v])
        self.source = source.numpy()
        self.loops = hole_loops(model)
        self.triangles = torch.from_numpy(close_holes(model.triangles.cpu().numpy(), self.loops, v))
        self.triangles = self.triangles.to(self.device)
        n_fan = len(self.loops[2])
        self._mouth_ids = (len(self.triangles) - n_fan + 1, len(self.triangles))  # 1-based ids
        self._source_xy = add_hole_centres(source, self.loops)[:, :2].contiguous().to(self.device)  # [V+3, 2]
        self.rigid = rigid_vertices(model).cpu().numpy()
        face_width = float(np.ptp(self.source[model.regions["face_oval"], 0]))
        self.hair_sigma, self.residual_sigma = hair_sigma * face_width, residual_sigma * face_width
        self.smooth_sigma = boundary_smoothing * face_width
        self.band, self.mouth_ramp = background_band * face_width, mouth_ramp * face_width
        self.source_gap = mouth_opening(self.source, self.loops[2])
        self.teeth_px = teeth_height * loop_width(self.source, self.loops[2])
        self.mouth_edge = mouth_edge
        self.labels = labels.astype(np.uint8)
        person = (self.labels > 0).astype(np.float32)
        self.person_soft = cv2.GaussianBlur(person, (0, 0), mask_softness) if mask_softness > 0 else person
        self._photo = torch.from_numpy(photo).permute(2, 0, 1)[None].float()  # [1, 3, S, S]
        centres = np.arange(size, dtype=np.float32) + 0.5
        self.grid = np.stack(np.meshgrid(centres, centres), -1)  # [S, S, 2] pixel centres (x, y)

    def _targets(self, target_vertices) -> torch.Tensor:
        """float [T, V', 3] or [V', 3] (numpy or torch) -> float32 [T, V, 3] CPU tensor."""
        target = torch.as_tensor(np.asarray(target_vertices, np.float32)
                                 if not torch.is_tensor(target_vertices) else target_vertices)
        target = target.detach().float().cpu()
        target = target[None] if target.dim() == 2 else target
        if (target.dim() != 3 or target.shape[-1] != 3 or target.shape[1] < self.model.num_vertices
                or len(target) == 0):
            raise ValueError(f"target vertices must be [T, V, 3] or [V, 3] with T >= 1, got "
                             f"{tuple(target.shape)}")
        return target[:, : self.model.num_vertices].contiguous()

    def _rasterize(self, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Rasterize target meshes (holes closed) and map covered pixels to the photo.

        Args:
            target: float32 [B, V, 3] image-space target vertices.
        Returns:
            ids: int64 [B, S, S] triangle id + 1 (0 = not face); source_xy: float32
            [B, S, S, 2] barycentric source positions (pixels; 0 off the face).
        """
        verts = add_hole_centres(target, self.loops).to(self.device)
        # Only the depth order matters: centre z per frame so it stays inside the clip range.
        depth = verts[..., 2:] - verts[..., 2:].mean(1, keepdim=True)  # [B, V + 3, 1]
        verts = torch.cat([verts[..., :2], depth], -1)
        pos = image_to_clip(verts, self.size, self.size)
        with torch.no_grad():
            rast = self.rasterizer.rasterize(pos.contiguous(), self.triangles, (self.size, self.size))
            source_xy = self.rasterizer.interpolate(self._source_xy, rast, self.triangles)
        return rast[..., 3].round().long().cpu().numpy(), source_xy.cpu().numpy()

    def _frame_field(self, ids: np.ndarray, face_xy: np.ndarray,
                     target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The full backward map of one frame and its labels.

        Args:
            ids: int64 [S, S] triangle ids (0 = not face); face_xy: float32 [S, S, 2]
            barycentric source positions; target: float32 [V, 3] target vertices.
        Returns:
            source_xy: float32 [S, S, 2] where each pixel samples the photo (pixels);
            labels: uint8 [S, S] 0 background, 1 hair/torso, 2 face.
        """
        face = ids > 0
        if not face.any():  # the face left the frame: nothing drives the rest
            source_xy = self.grid.copy()
        else:
            sim = _similarity_2d(torch.from_numpy(target[self.rigid, :2]).double(),
                                 torch.from_numpy(self.source[self.rigid, :2]).double()).numpy()
            sim_disp = similarity_displacement(sim, self.grid)
            disp, dist = outside_displacement(face, face_xy - self.grid, sim_disp, self.hair_sigma,
                                              self.residual_sigma, self.smooth_sigma)
            # A pixel follows if the person arrives there (it would come from hair/torso) or
            # leaves it (staying would show a ghost of the photo's head; the background
            # beside it fills in instead).
            person = np.maximum(sample_map(self.person_soft, self.grid + disp), self.person_soft)
            weight = follow_weight(person, dist, self.band)
            weight[face] = 1.0
            source_xy = self.grid + weight[..., None] * disp
        labels = np.where(sample_map(self.labels, source_xy, nearest=True) > 0, HAIR_TORSO, BACKGROUND)
        labels[face] = FACE
        return source_xy.astype(np.float32), labels.astype(np.uint8)

    def _paint_mouth(self, canvas: np.ndarray, ids: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Paint the mouth interior of one frame in place where the target mouth is open.

        Args:
            canvas: float32 [S, S, 3] warped frame; ids: int64 [S, S] triangle ids;
            target: float32 [V, 3] target vertices.
        Returns:
            alpha: float32 [S, S] mouth-interior opacity (0 where the photo shows).
        """
        alpha = np.zeros(ids.shape, np.float32)
        excess = mouth_opening(target, self.loops[2]) - self.source_gap
        strength = float(smoothstep(excess / max(self.mouth_ramp, 1e-6)))
        rows, cols = np.nonzero((ids >= self._mouth_ids[0]) & (ids <= self._mouth_ids[1]))
        if strength <= 0.0 or len(rows) == 0:
            return alpha
        regions = self.model.regions
        upper, lower = target[regions["lips_inner_upper"], :2], target[regions["lips_inner_lower"], :2]
        alpha[rows, cols] = paint_mouth(canvas, rows, cols, upper, lower, strength,
                                        self.teeth_px, self.mouth_edge)
        return alpha

    def _render_chunk(self, target: torch.Tensor) -> dict:
        """Render B frames: float32 [B, V, 3] targets -> dict of numpy arrays ``frames`` uint8
        [B, S, S, 3], ``labels`` uint8 [B, S, S], ``source_xy`` float32 [B, S, S, 2] (pixels),
        ``mouth_alpha`` float32 [B, S, S]."""
        ids, face_xy = self._rasterize(target)
        verts = target.numpy()
        per_frame = [self._frame_field(ids[b], face_xy[b], verts[b]) for b in range(len(verts))]
        source_xy = np.stack([f[0] for f in per_frame])
        grid = torch.from_numpy(source_xy) * (2.0 / self.size) - 1.0  # align_corners=False NDC
        photo = self._photo.expand(len(verts), -1, -1, -1)
        # Reflection: hair pulled in from beyond the crop border mirrors rather than smears.
        warped = F.grid_sample(photo, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        canvas = np.ascontiguousarray(warped.permute(0, 2, 3, 1).numpy())  # [B, S, S, 3]
        mouth = np.stack([self._paint_mouth(canvas[b], ids[b], verts[b]) for b in range(len(verts))])
        frames = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return {"frames": frames, "labels": np.stack([f[1] for f in per_frame]),
                "source_xy": source_xy, "mouth_alpha": mouth}

    def warp(self, target_vertices) -> dict:
        """Frames and the motion behind them.

        Args:
            target_vertices: float [T, V', 3] or [V', 3] target meshes in crop pixels.
        Returns:
            dict: ``frames`` uint8 [T, S, S, 3]; ``masks`` uint8 [T, S, S] (0 background,
            1 hair/torso, 2 face incl. closed eyes and mouth interior); ``source_xy``
            float32 [T, S, S, 2] photo position (x, y pixels) each pixel samples: the
            backward motion field is ``source_xy - pixel centre``; ``mouth_alpha`` float32
            [T, S, S] opacity of the painted mouth interior.
        """
        target = self._targets(target_vertices)
        parts = [self._render_chunk(target[i: i + self.chunk_size])
                 for i in range(0, len(target), self.chunk_size)]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out["masks"] = out.pop("labels")
        return out

    def render(self, target_vertices) -> tuple[np.ndarray, np.ndarray]:
        """Render frames for target meshes.

        Args:
            target_vertices: float [T, V', 3] or [V', 3] (numpy or torch) target meshes in
                crop pixels, same convention as the source mesh.
        Returns:
            frames: uint8 [T, S, S, 3] RGB; masks: uint8 [T, S, S] labels (0 background,
            1 hair/torso, 2 face).
        """
        target = self._targets(target_vertices)
        frames, masks = [], []
        for i in range(0, len(target), self.chunk_size):
            part = self._render_chunk(target[i: i + self.chunk_size])
            frames.append(part["frames"])
            masks.append(part["labels"])
        return np.concatenate(frames), np.concatenate(masks)
