"""Stage-1 losses (VividTalk section 3.2 and the head-pose codebook's two training stages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..face.holes import lip_gap
from ..face.model import FaceModel


def nonrigid_mesh(face: FaceModel, beta: torch.Tensor, lip_offsets: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """M_nr = S + alpha U_id + beta U_exp + O_lip in the canonical frame (P_ref = identity).

    Args:
        beta: [B, T, K]; lip_offsets: [B, T, L, 3]; identity: [B, V, 3].
    Returns:
        [B, T, V, 3].
    """
    return face.assemble(beta, identity=identity[:, None], lip_offsets=lip_offsets)


def bsvo_loss(
    face: FaceModel,
    pred: dict,
    target: dict,
    coeff_weight: float = 1.0,
    mesh_weight: float = 10.0,
    gap_weight: float = 0.0,
) -> dict:
    """L_bsvo = |beta - beta^|_1 + |M_nr - M^_nr|_1 (the mesh term sees the lip offsets), plus
    optionally our lip-gap term |gap(M_nr) - gap(M^_nr)|_1: the mesh term spreads over all
    vertices, so a lip closure missed by a few thousandths of a face height costs it almost
    nothing, while the eye sees lips that never touch.

    Args:
        pred: ``beta`` [B, T, K], ``lip_offsets`` [B, T, L, 3].
        target: the same plus ``identity`` [B, V, 3].
        gap_weight: weight of the lip-gap term (0: the paper's loss).
    Returns:
        dict: ``loss`` (weighted sum), ``coeff``, ``mesh`` and ``gap`` terms (means).
    """
    coeff = F.l1_loss(pred["beta"], target["beta"])
    mesh_pred = nonrigid_mesh(face, pred["beta"], pred["lip_offsets"], target["identity"])
    mesh_true = nonrigid_mesh(face, target["beta"], target["lip_offsets"], target["identity"])
    mesh = F.l1_loss(mesh_pred, mesh_true)
    gap = F.l1_loss(lip_gap(face, mesh_pred), lip_gap(face, mesh_true))
    loss = coeff_weight * coeff + mesh_weight * mesh + gap_weight * gap
    return {"loss": loss, "coeff": coeff, "mesh": mesh, "gap": gap}
