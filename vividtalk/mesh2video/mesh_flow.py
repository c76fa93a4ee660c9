"""Mesh flow: the backward motion that a source and a driving mesh imply (docs/architecture.md, stage 2).

Source and driving meshes share one topology, so the motion of every visible face pixel is
known exactly. The driving mesh, its eye and mouth holes closed by fans
(:mod:`vividtalk.face.holes`), is rasterised once with two vertex attributes: its NCC colour
(the projected texture ``PT_in``) and the *source* mesh's image position. For each driving
pixel p the second one is where that surface point lies in the source frame, ``src(p)``:
the backward flow ``src(p) - p``, exact inside the rendered face.

Outside the face the flow is extended smoothly (cf. the synthetic corpus' photo warper):

    d(p) = follow(p) * (g_h(p) * sim(p) + g_r(p) * r(p))

with ``sim`` the displacement of the 2-D similarity that maps the driving mesh's rigid
vertices onto the source's (hair, ears and neck follow the head), ``r`` the face's non-rigid
boundary residual ``d_face - sim`` carried outward by normalised convolution, ``g_h`` and
``g_r`` Gaussian fades with the distance to the face (1 at the boundary, vanishing far away)
and ``follow`` 1 on the source's person (hair/torso/face labels) and, on the background,
only in a thin band around the face. The smooth part is computed at a low resolution (cheap)
and upsampled.

Where the driving mouth opens wider than the source's, the pixels of the mouth fan are
marked as to be painted (``paint``): the occlusion prior of the motion VAE.

Sizes are fractions of the crop side: crops are a fixed margin around the face, so they are
fractions of the face size too.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..face.fitting import rigid_vertices
from ..face.holes import add_hole_centres, close_holes, hole_loops, mouth_gap
from ..face.model import FaceModel
from ..face.pose import similarity_2d
from ..render import Rasterizer, image_to_clip
from .blocks import resize_bilinear


class MeshFlow:
    """Renders driving meshes (NCC texture, coverage, mouth interior) and their mesh flow.

    Args:
        face: the face model (topology, regions, NCC colours).
        hair_sigma: fade length of the head's rigid motion outside the face (crop sides).
        residual_sigma: fade length of the non-rigid boundary motion (crop sides).
        background_band: background within this distance of the face follows it (crop sides).
        mouth_ramp: extra inner-lip gap (crop sides) over which the mouth interior turns from
            the source's own pixels to painted.
        smooth_size: resolution of the smooth outside field.
    """

    def __init__(self, face: FaceModel, hair_sigma: float = 0.25, residual_sigma: float = 0.06,
                 background_band: float = 0.03, mouth_ramp: float = 0.008, smooth_size: int = 32) -> None:
        self.loops = hole_loops(face)
        v, f = face.num_vertices, len(face.triangles)
        self.triangles = torch.from_numpy(close_holes(face.triangles.cpu().numpy(), self.loops, v))
        self.num_mesh_triangles = f
        self.mouth_first_id = len(self.triangles) - len(self.loops[2]) + 1  # 1-based ids of the mouth fan
        self.rigid = rigid_vertices(face).cpu()
        self.ncc = add_hole_centres(face.ncc_colors().cpu(), self.loops)  # [V + 3, 3]
        self.hair_sigma, self.residual_sigma, self.band = hair_sigma, residual_sigma, background_band
        self.mouth_ramp, self.smooth_size = mouth_ramp, smooth_size

    def render(self, rasterizer: Rasterizer, vertices: torch.Tensor, size: int,
               source_vertices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One z-buffered rasterisation of the hole-closed meshes.

        Args:
            rasterizer: any :class:`~vividtalk.render.Rasterizer` backend.
            vertices: float [B, V, 3] crop-space meshes (x, y pixels, z depth, smaller = closer).
            size: side of the square output.
            source_vertices: float [B, V, 3] source meshes whose (x, y) to interpolate, or None.
        Returns:
            dict of float [B, C, S, S] on ``vertices``' device: ``ncc`` (C = 3, zero off the
            face), ``face`` (1 where a mesh triangle covers the pixel, holes excluded),
            ``covered`` (holes included), ``mouth`` (the mouth fan) and, with
            ``source_vertices``, ``source_xy`` (C = 2, pixels, zero where not covered).
        """
        device, b = vertices.device, len(vertices)
        tri = self.triangles.to(device)
        verts = add_hole_centres(vertices.float(), self.loops)  # [B, V + 3, 3]
        depth = verts[..., 2:] - verts[..., 2:].mean(1, keepdim=True)  # only the depth order matters
        pos = image_to_clip(torch.cat([verts[..., :2], depth], -1), size, size)
        attr = [self.ncc.to(device)[None].expand(b, -1, -1)]
        if source_vertices is not None:
            attr.append(add_hole_centres(source_vertices[..., :2].float(), self.loops))
        rast = rasterizer.rasterize(pos.contiguous(), tri, (size, size))
        values = rasterizer.interpolate(torch.cat(attr, -1).contiguous(), rast, tri).permute(0, 3, 1, 2)
        ids = rast[..., 3:].permute(0, 3, 1, 2).round()  # [B, 1, S, S] triangle id + 1
        out = {"ncc": values[:, :3] * (ids <= self.num_mesh_triangles), "face": ((ids > 0) &
               (ids <= self.num_mesh_triangles)).float(), "covered": (ids > 0).float(),
               "mouth": (ids >= self.mouth_first_id).float()}
        if source_vertices is not None:
            out["source_xy"] = values[:, 3:5]
        return out

    def prepare(self, source_vertices: torch.Tensor, source_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """What :meth:`flow` needs of the source, computed once per video.

        Args:
            source_vertices: float [B, V, 3] crop-space meshes.
            source_labels: int [B, S, S] the source's labels (0 background, 1 hair/torso, 2 face).
        Returns:
            dict: ``vertices``, ``rigid_xy`` [B, R, 2], ``gap`` [B] (inner-lip gap, pixels) and
            ``person`` [B, 1, s, s] (the person's share of each low-resolution pixel).
        """
        person = (source_labels[:, None] > 0).float()
        r = max(1, person.shape[-1] // self.smooth_size)
        return {"vertices": source_vertices, "rigid_xy": source_vertices[:, self.rigid.to(source_vertices.device), :2],
                "gap": mouth_gap(source_vertices, self.loops[2]),
                "person": F.avg_pool2d(person, r) if r > 1 else person}

    def flow(self, rendered: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
             driving_vertices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mesh flow and the mouth-interior prior of rendered driving meshes.

        Args:
            rendered: :meth:`render` of the driving meshes with the source's vertices.
            source: :meth:`prepare` of the source (batch size B or 1).
            driving_vertices: float [B, V, 3] crop-space meshes.
        Returns:
            dict: ``flow`` float [B, 2, S, S], backward offsets in normalised units (see
            ``blocks.warp``): output pixel p samples the source at p + flow(p); ``paint``
            float [B, 1, S, S] in [0, 1], the mouth interior to be painted.
        """
        covered, size = rendered["covered"], rendered["covered"].shape[-1]
        b = len(driving_vertices)
        d = rendered["source_xy"] - _pixel_centres(size, covered.device)  # [B, 2, S, S] pixels (valid if covered)
        sim = similarity_2d(driving_vertices[:, self.rigid.to(covered.device), :2],
                            source["rigid_xy"].expand(b, -1, -1))  # [B, 2, 3]
        sim = sim - torch.eye(2, 3, device=sim.device, dtype=sim.dtype)  # displacement A p + t - p
        outside = self._outside(covered, d * covered, sim, source["person"])
        # covered is exactly 0 or 1, where lerp returns outside or d exactly; a broadcast
        # torch.where over [B, 1] vs [B, 2] channels costs 15x more on a CPU.
        flow = torch.lerp(outside, d, covered).mul_(2.0 / size)
        gap = mouth_gap(driving_vertices, self.loops[2]) - source["gap"]  # [B]
        strength = _smoothstep(gap / (self.mouth_ramp * size))
        return {"flow": flow, "paint": rendered["mouth"] * strength[:, None, None, None]}

    def _outside(self, covered: torch.Tensor, inside: torch.Tensor, sim: torch.Tensor,
                 person: torch.Tensor) -> torch.Tensor:
        """The smooth outside displacement [B, 2, S, S] (pixels), computed at the low resolution.

        Args:
            covered: [B, 1, S, S]; inside: [B, 2, S, S] the exact displacement on covered pixels;
            sim: [B, 2, 3] the similarity's displacement map (A - [I 0]); person: [B or 1, 1, s, s].
        """
        size = covered.shape[-1]
        r = max(1, size // self.smooth_size)
        share = F.avg_pool2d(covered, r) if r > 1 else covered  # [B, 1, s, s] face share
        low = share.shape[-1]
        grid = _pixel_centres(low, covered.device) * r  # low-resolution pixel centres in full-size pixels
        sim_disp = torch.einsum("bij,jhw->bihw", sim[:, :, :2], grid[0]) + sim[:, :, 2, None, None]  # [B, 2, s, s]
        residual = (F.avg_pool2d(inside, r) if r > 1 else inside) - sim_disp * share  # displacement mean - rigid
        dist = _distance_to(share[:, 0] > 0) / low  # [B, 1, s, s] crop sides
        fade = lambda sigma: torch.exp(-0.5 * (dist / sigma) ** 2)  # noqa: E731
        near = _blur(torch.cat([share, residual], 1), self.residual_sigma * low / 2)  # normalised convolution
        carried = near[:, 1:] / near[:, :1].clamp_min(1e-6) * fade(self.residual_sigma)
        follow = torch.maximum(person, fade(self.band / 2))
        outside = follow * (fade(self.hair_sigma) * sim_disp + carried)  # [B, 2, s, s]
        return resize_bilinear(outside, size)


def _distance_to(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels) from each pixel centre to the nearest True pixel of bool
    [B, s, s] (brute force, cheap at a low resolution): float [B, 1, s, s]; a mask with no True
    pixel gives a large distance everywhere."""
    b, h, w = mask.shape
    axis_y = torch.arange(h, device=mask.device, dtype=torch.float32)
    axis_x = torch.arange(w, device=mask.device, dtype=torch.float32)
    points = torch.stack(torch.meshgrid(axis_y, axis_x, indexing="ij"), -1).view(-1, 2)  # [s*s, 2]
    out = torch.full((b, h * w), 1e3, device=mask.device)
    for k in range(b):
        targets = points[mask[k].view(-1)]  # [n, 2]
        if len(targets):
            out[k] = torch.cdist(points, targets).amin(-1)
    return out.view(b, 1, h, w)


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    """float32 [1, 2, S, S]: (x, y) pixel centres, (j + 0.5, i + 0.5) (cached: read only)."""
    axis = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y])[None]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of float [B, C, H, W] with zero padding (no face beyond the crop), as two
    products with a banded Gaussian matrix: far cheaper on a CPU than a depthwise convolution."""
    rows = _gaussian_matrix_cached(x.shape[-2], float(sigma), x.device, x.dtype)
    cols = _gaussian_matrix_cached(x.shape[-1], float(sigma), x.device, x.dtype)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=32)
def _gaussian_matrix_cached(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _gaussian_matrix(n, sigma, torch.empty(0, device=device, dtype=dtype))


def _gaussian_matrix(n: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """float [n, n], row i the normalised Gaussian kernel of ``sigma`` centred on i, truncated at
    3 sigma and at the borders (zero padding)."""
    t = torch.arange(n, device=like.device, dtype=like.dtype)
    d = t[:, None] - t[None, :]
    radius = max(1, int(3.0 * sigma + 0.5))
    full = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    norm = torch.exp(-0.5 * (full / max(sigma, 1e-6)) ** 2).sum()
    return torch.exp(-0.5 * (d / max(sigma, 1e-6)) ** 2) * (d.abs() <= radius) / norm


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    """3x^2 - 2x^3 of x clipped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
