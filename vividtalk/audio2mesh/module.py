"""LightningModule of the blendshape / vertex-offset generator (stage 1, non-rigid motion).

The networks are plain ``nn.Module``s passed in (LightningCLI ``class_path`` /
``init_args``); this module owns the loss (L_bsvo), the optimiser and the metrics: lip vertex
error (LVE) and upper-face dynamics deviation (FDD) of autoregressive generation against the
ground truth, and the LVE of the baseline that predicts the neutral face for every frame.
"""

from __future__ import annotations

from typing import Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from ..eval.mesh import face_dynamics_deviation, lip_vertex_error, upper_face_vertices
from ..face.model import FaceModel
from .losses import bsvo_loss, nonrigid_mesh

def adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The paper's optimiser: Adam, learning rate 1e-4."""
    return torch.optim.Adam(params, lr=1e-4)


class Audio2MeshModule(pl.LightningModule):
    """Trains the multi-branch transformer with teacher forcing; validates autoregressively.

    Args:
        network: the multi-branch transformer (``forward(audio, z_style, beta, lip_offsets)``
            and ``generate(audio, z_style)`` returning ``beta`` and ``lip_offsets``).
        style_encoder: identity shape [B, V, 3] -> z_style [B, S].
        audio_encoder: waveform [B, N] -> features [B, T, A]; None when the DataModule serves
            cached features.
        optimizer: a callable params -> optimiser (LightningCLI: ``class_path`` in YAML).
        coeff_weight, mesh_weight: weights of L_bsvo's two terms.
        face_model: path of a face model file; None for the packaged default.
    """

    def __init__(
        self,
        network: nn.Module,
        style_encoder: nn.Module,
        audio_encoder: nn.Module | None = None,
        optimizer: OptimizerCallable = adam,
        coeff_weight: float = 1.0,
        mesh_weight: float = 10.0,
        face_model: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network", "style_encoder", "audio_encoder", "optimizer"])
        self.network, self.style_encoder, self.audio_encoder = network, style_encoder, audio_encoder
        self.optimizer_factory = optimizer
        self.coeff_weight, self.mesh_weight = coeff_weight, mesh_weight
        self.face = FaceModel.load(face_model) if face_model else FaceModel.default()
        self.register_buffer("upper_face", upper_face_vertices(self.face), persistent=False)

    def features(self, batch: dict) -> torch.Tensor:
        """Audio features [B, T, A] of a batch (cached, or encoded from the waveform)."""
        if "features" in batch:
            return batch["features"]
        if self.audio_encoder is None:
            raise ValueError("the batch has no cached 'features' and the module has no audio_encoder")
        return self.audio_encoder(batch["audio"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        z_style = self.style_encoder(batch["identity"])
        pred = self.network(self.features(batch), z_style, beta=batch["beta"], lip_offsets=batch["lip_offsets"])
        losses = bsvo_loss(self.face, pred, batch, self.coeff_weight, self.mesh_weight)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(batch["beta"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict, stage: str) -> None:
        z_style = self.style_encoder(batch["identity"])
        pred = self.network.generate(self.features(batch), z_style)
        losses = bsvo_loss(self.face, pred, batch, self.coeff_weight, self.mesh_weight)
        mesh_pred = nonrigid_mesh(self.face, pred["beta"], pred["lip_offsets"], batch["identity"])
        mesh_true = nonrigid_mesh(self.face, batch["beta"], batch["lip_offsets"], batch["identity"])
        neutral = batch["identity"][:, None].expand_as(mesh_true)
        lips = self.face.lip_indices
        metrics = {
            "loss": losses["loss"],
            "lve": lip_vertex_error(mesh_pred, mesh_true, lips).mean(),
            "lve_neutral_baseline": lip_vertex_error(neutral, mesh_true, lips).mean(),
            "fdd": face_dynamics_deviation(mesh_pred, mesh_true, self.upper_face).mean(),
        }
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=len(batch["beta"]), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
