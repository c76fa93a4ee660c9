"""Fitting the face model to tracked meshes (docs/architecture.md, "Data contracts", VividTalk's hybrid prior).

Per frame: the similarity pose P by weighted Procrustes on the vertices that no expression
moves, the expression coefficients beta by ridge-regularised least squares with beta in
[0, 1] (ARKit-style coefficients are one-sided, and the bound is what separates a clip's
neutral identity from its average expression), and the lip residual O_lip that the
blendshapes do not explain. The identity shape of a clip is its neutral estimate; for a
single image the identity prior U_id separates identity from expression.

All computation is in float64 on the CPU or the inputs' device; results are float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import FaceModel
from .pose import apply_pose, invert_pose, procrustes


@dataclass
class FitResult:
    """Fitted parameters of T frames.

    Attributes:
        pose: [T, 7] similarity poses (canonical -> input coordinates).
        beta: [T, K] expression coefficients in [0, 1].
        lip_offsets: [T, L, 3] lip vertex offsets O_lip (canonical units).
        identity: [V, 3] identity (neutral) shape in the canonical frame.
        alpha: [K_id] identity coefficients: the U_id part of ``identity - S``.
        residual: [T] RMS distance (input units, e.g. pixels) between the input and the
            assembled mesh without lip offsets, over all vertices.
        prior_residual: [] RMS distance (input units, at the mean pose scale) between the
            identity shape and its projection S + alpha U_id: how far the person lies
            outside the identity basis (the free part the neutral estimate keeps).
    """

    pose: torch.Tensor
    beta: torch.Tensor
    lip_offsets: torch.Tensor
    identity: torch.Tensor
    alpha: torch.Tensor
    residual: torch.Tensor
    prior_residual: torch.Tensor


def rigid_vertices(model: FaceModel, tol: float = 1e-6) -> torch.Tensor:
    """Indices of the vertices that no expression moves (forehead, nose, temples): the
    anchor set for the pose. Returns int64 [R]."""
    moved = model.exp_basis.norm(dim=-1).amax(0) > tol  # [V]
    moved[model.lip_indices] = True
    return torch.nonzero(~moved).squeeze(1)


def solve_bounded_ridge(
    basis: torch.Tensor,
    targets: torch.Tensor,
    ridge: torch.Tensor | float,
    lower: torch.Tensor | float,
    upper: torch.Tensor | float,
    iters: int = 300,
) -> torch.Tensor:
    """min_x |basis^T x - target|^2 + ridge |x|^2 subject to lower <= x <= upper, per row.

    Accelerated projected gradient (FISTA) on the normal equations, batched over rows.

    Args:
        basis: [K, D] basis vectors (flattened fields).
        targets: [T, D] one problem per row.
        ridge: scalar or [K] per-coefficient ridge weights.
        lower, upper: scalars or [K] bounds (use +-inf for free coefficients).
    Returns:
        [T, K] solutions.
    """
    k = basis.shape[0]
    ridge = torch.as_tensor(ridge, dtype=basis.dtype, device=basis.device).expand(k)
    gram = basis @ basis.T + torch.diag(ridge)
    rhs = targets @ basis.T  # [T, K]
    step = 1.0 / torch.linalg.eigvalsh(gram).max()
    lower = torch.as_tensor(lower, dtype=basis.dtype, device=basis.device)
    upper = torch.as_tensor(upper, dtype=basis.dtype, device=basis.device)
    x = torch.linalg.solve(gram, rhs.T).T.clamp(lower, upper)  # unconstrained start, projected
    y, t = x.clone(), 1.0
    for _ in range(iters):
        x_next = (y - step * (y @ gram - rhs)).clamp(lower, upper)
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        y = x_next + ((t - 1.0) / t_next) * (x_next - x)
        x, t = x_next, t_next
    return x


class FaceFitter:
    """Fits a :class:`FaceModel` to tracked vertices.

    Args:
        model: the face model (its first V vertices must match the tracker's first V).
        expression_ridge: ridge weight on beta (canonical units: face heights squared).
        identity_ridge: ridge weight on alpha.
        iterations: alternations of pose and identity for clips with unknown identity.
        rest_quantile: for clips of at least ``rest_min_frames`` frames, each expression's
            rest value is this quantile of its coefficients over the clip, and is moved into
            the identity (see :meth:`_neutralise`).
        rest_min_frames: shorter inputs (e.g. one photo) keep the prior-based split.
    """

    def __init__(
        self,
        model: FaceModel,
        expression_ridge: float = 3e-3,
        identity_ridge: float = 1e-3,
        iterations: int = 4,
        rest_quantile: float = 0.05,
        rest_min_frames: int = 25,
    ) -> None:
        self.model = model
        self.rest_quantile, self.rest_min_frames = rest_quantile, rest_min_frames
        self.expression_ridge = expression_ridge
        self.identity_ridge = identity_ridge
        self.iterations = iterations
        self.rigid = rigid_vertices(model)

    def _bases(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        cast = lambda t: t.to(device=device, dtype=torch.float64)  # noqa: E731
        return cast(m.mean), cast(m.id_basis).flatten(1), cast(m.exp_basis).flatten(1)

    def fit(self, vertices, identity: torch.Tensor | None = None) -> FitResult:
        """Fit T frames of one person.

        Args:
            vertices: [T, V', 3] (or [V', 3]) tracked points in pixels, V' >= V (the
                tracker's extra points, e.g. irises, are ignored); numpy or torch.
            identity: [V, 3] a known identity shape (canonical frame); estimated if None.
        Returns:
            FitResult (float32, on the inputs' device).
        """
        y = torch.as_tensor(np.asarray(vertices) if not torch.is_tensor(vertices) else vertices)
        y = y.to(torch.float64)
        y = (y[None] if y.ndim == 2 else y)[:, : self.model.num_vertices]
        if torch.isnan(y).any():
            raise ValueError("vertices contain NaN (lost tracking): fit only frames with a face")
        mean, _, _ = self._bases(y.device)
        if identity is None:
            identity = self._estimate_identity(y)
            if len(y) >= self.rest_min_frames:
                identity = self._neutralise(y, identity)
        identity = identity.to(y)
        pose, canonical = self._pose(y, identity)
        beta = self._expressions(canonical - identity)
        return self._result(y, pose, canonical, beta, identity)

    def _neutralise(self, y: torch.Tensor, identity: torch.Tensor, rounds: int = 2) -> torch.Tensor:
        """Move each expression's rest value into the identity.

        The identity basis cannot express every personal trait (lip thickness, brow height),
        so a per-frame split attributes such traits to expressions, as a constant offset. In
        a clip, a face relaxes every shape at some point: the low quantile of each
        coefficient over the clip is its rest value, and the neutral face includes it.
        """
        _, _, u_exp = self._bases(y.device)
        for _ in range(rounds):
            _, canonical = self._pose(y, identity)
            beta = self._expressions(canonical - identity)
            rest = torch.quantile(beta, self.rest_quantile, dim=0)  # [K]
            identity = identity + (rest @ u_exp).view_as(identity)
        return identity

    def _pose(self, y: torch.Tensor, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rigid.to(y.device)
        pose = procrustes(identity[r].expand(len(y), -1, -1), y[:, r])
        return pose, invert_pose(y, pose)

    def _expressions(self, offsets: torch.Tensor) -> torch.Tensor:
        _, _, u_exp = self._bases(offsets.device)
        return solve_bounded_ridge(u_exp, offsets.flatten(1), self.expression_ridge, 0.0, 1.0)

    def _estimate_identity(self, y: torch.Tensor) -> torch.Tensor:
        """Neutral shape of a clip: alternate pose and a joint (alpha, beta) solve per frame;
        identity = S + mean alpha U_id + the mean residual neither basis explains."""
        mean, u_id, u_exp = self._bases(y.device)
        k_id, k = u_id.shape[0], u_exp.shape[0]
        basis = torch.cat([u_id, u_exp])
        ridge = torch.cat([torch.full((k_id,), self.identity_ridge), torch.full((k,), self.expression_ridge)])
        inf = torch.full((k_id,), float("inf"))
        lower, upper = torch.cat([-inf, torch.zeros(k)]), torch.cat([inf, torch.ones(k)])
        identity = mean
        for _ in range(self.iterations):
            _, canonical = self._pose(y, identity)
            offsets = (canonical - mean).flatten(1)
            coeffs = solve_bounded_ridge(basis, offsets, ridge.to(y), lower.to(y), upper.to(y))
            residual = offsets - coeffs @ basis  # [T, 3V]
            explained = mean + (coeffs[:, :k_id].mean(0) @ u_id).view_as(mean)
            identity = explained + residual.mean(0).view_as(mean)
            # Gauge: a rotated identity with counter-rotated poses fits equally well; keep
            # the free residual free of any similarity component.
            r = self.rigid.to(y.device)
            identity = apply_pose(identity, procrustes(identity[r], explained[r]))
        return identity

    def _result(self, y, pose, canonical, beta, identity) -> FitResult:
        mean, u_id, u_exp = self._bases(y.device)
        explained = identity + (beta @ u_exp).view(len(y), -1, 3)
        lips = self.model.lip_indices.to(y.device)
        lip_offsets = (canonical - explained)[:, lips]
        alpha = solve_bounded_ridge(
            u_id, (identity - mean).flatten()[None], self.identity_ridge, -float("inf"), float("inf"), iters=0
        )[0]
        posed = self.model.assemble(beta.float(), identity=identity.float(), pose=pose.float()).double()
        residual = (posed - y).norm(dim=-1).pow(2).mean(-1).sqrt()
        free = identity - mean - (alpha @ u_id).view_as(mean)
        prior_residual = free.norm(dim=-1).pow(2).mean().sqrt() * pose[:, 6].mean()
        f = lambda t: t.float()  # noqa: E731
        return FitResult(
            f(pose), f(beta), f(lip_offsets), f(identity), f(alpha), f(residual), f(prior_residual)
        )

