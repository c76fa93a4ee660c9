"""Stage-1 losses (VividTalk section 3.2 and the head-pose codebook's two training stages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
) -> dict:
    """L_bsvo = |beta - beta^|_1 + |M_nr - M^_nr|_1 (the mesh term sees the lip offsets).

    Args:
        pred: ``beta`` [B, T, K], ``lip_offsets`` [B, T, L, 3].
        target: the same plus ``identity`` [B, V, 3].
    Returns:
        dict: ``loss`` (weighted sum), ``coeff`` and ``mesh`` terms (means).
    """
    coeff = F.l1_loss(pred["beta"], target["beta"])
    mesh_pred = nonrigid_mesh(face, pred["beta"], pred["lip_offsets"], target["identity"])
    mesh_true = nonrigid_mesh(face, target["beta"], target["lip_offsets"], target["identity"])
    mesh = F.l1_loss(mesh_pred, mesh_true)
    return {"loss": coeff_weight * coeff + mesh_weight * mesh, "coeff": coeff, "mesh": mesh}
