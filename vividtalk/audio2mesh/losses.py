"""Stage-1 losses (VividTalk section 3.2 and the head-pose codebook's two training stages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..eval.speech_sync import CLOSED_MARGIN
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
    closure_weight: float = 0.0,
    closure_margin: float = CLOSED_MARGIN,
) -> dict:
    """L_bsvo = |beta - beta^|_1 + |M_nr - M^_nr|_1 (the mesh term sees the lip offsets), plus
    optionally our lip-gap term |gap(M_nr) - gap(M^_nr)|_1: the mesh term spreads over all
    vertices, so a lip closure missed by a few thousandths of a face height costs it almost
    nothing, while the eye sees lips that never touch.

    And optionally our one-sided closure term: on the frames whose target lips are closed (gap
    within ``closure_margin`` face heights of the identity's neutral gap), the mean of how far
    the predicted gap stays above the target's. Where the audio leaves a closure uncertain (an
    unfamiliar voice), a symmetric loss settles on lips that stop short of touching; this one
    charges only the lips left open, so the network closes them when it hears a closure.

    Args:
        pred: ``beta`` [B, T, K], ``lip_offsets`` [B, T, L, 3].
        target: the same plus ``identity`` [B, V, 3] (the neutral mesh of each identity).
        gap_weight: weight of the lip-gap term (0: the paper's loss).
        closure_weight: weight of the closure term (0: none).
    Returns:
        dict: ``loss`` (weighted sum), ``coeff``, ``mesh``, ``gap`` and ``closure`` terms (means).
    """
    coeff = F.l1_loss(pred["beta"], target["beta"])
    mesh_pred = nonrigid_mesh(face, pred["beta"], pred["lip_offsets"], target["identity"])
    mesh_true = nonrigid_mesh(face, target["beta"], target["lip_offsets"], target["identity"])
    mesh = F.l1_loss(mesh_pred, mesh_true)
    gap_pred, gap_true = lip_gap(face, mesh_pred), lip_gap(face, mesh_true)  # [B, T]
    gap = F.l1_loss(gap_pred, gap_true)
    closure = closure_shortfall(face, gap_pred, gap_true, target["identity"], closure_margin)
    loss = coeff_weight * coeff + mesh_weight * mesh + gap_weight * gap + closure_weight * closure
    return {"loss": loss, "coeff": coeff, "mesh": mesh, "gap": gap, "closure": closure}


def closure_shortfall(face: FaceModel, gap_pred: torch.Tensor, gap_true: torch.Tensor, identity: torch.Tensor,
                      margin: float = CLOSED_MARGIN) -> torch.Tensor:
    """Mean of relu(gap_pred - gap_true) over the frames whose target lips are closed (0 when none).

    Args:
        gap_pred, gap_true: inner-lip gaps [B, T] (mesh units); identity: neutral meshes [B, V, 3].
        margin: closed means a target gap within ``margin`` face heights of the neutral gap.
    """
    closed = closed_lips(face, gap_true, identity, margin).to(gap_pred.dtype)
    return (F.relu(gap_pred - gap_true) * closed).sum() / closed.sum().clamp(min=1.0)


def closed_lips(face: FaceModel, gap: torch.Tensor, identity: torch.Tensor, margin: float = CLOSED_MARGIN) -> torch.Tensor:
    """Bool [B, T]: inner-lip gaps [B, T] within ``margin`` face heights of the neutral gap of
    each identity (neutral meshes [B, V, 3]): the evaluation's "closed"."""
    height = identity[..., 1].amax(-1) - identity[..., 1].amin(-1)  # [B]
    return gap <= (lip_gap(face, identity) + margin * height)[:, None]
