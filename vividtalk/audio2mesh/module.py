"""LightningModule of the blendshape / vertex-offset generator (stage 1, non-rigid motion).

The networks are plain ``nn.Module``s passed in (LightningCLI ``class_path`` /
``init_args``); this module owns the loss (L_bsvo), the optimiser and the metrics: lip vertex
error (LVE) and upper-face dynamics deviation (FDD) of autoregressive generation against the
ground truth, and the LVE of two baselines: the neutral face for every frame, and the mean
face (the training targets' mean coefficients and lip offsets on each clip's identity).
"""

from __future__ import annotations

from typing import Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from ..eval.mesh import face_dynamics_deviation, lip_vertex_error, upper_face_vertices
from ..face.model import FaceModel
from ..face.holes import lip_gap
from .losses import CLOSED_MARGIN, bsvo_loss, closed_lips, nonrigid_mesh


def adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The paper's optimiser: Adam, learning rate 1e-4."""
    return torch.optim.Adam(params, lr=1e-4)


def load_submodule(module: nn.Module, checkpoint: str, prefix: str) -> None:
    """Load into ``module`` the weights another run's Lightning checkpoint holds under
    ``prefix.`` (e.g. the pose VQ-VAE of stage A, the sync expert); tensors only, no code runs."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})


class Audio2MeshModule(pl.LightningModule):
    """Trains the multi-branch transformer with teacher forcing; validates autoregressively.

    Args:
        network: the multi-branch transformer (``forward(audio, z_style, beta, lip_offsets)``
            and ``generate(audio, z_style)`` returning ``beta`` and ``lip_offsets``).
        style_encoder: identity shape [B, V, 3] -> z_style [B, S].
        audio_encoder: waveform [B, N] -> features [B, T, A]; None when the DataModule serves
            cached features.
        optimizer: a callable params -> optimiser (LightningCLI: ``class_path`` in YAML).
        lr_scheduler: optional callable optimiser -> scheduler, stepped once per epoch.
        coeff_weight, mesh_weight: weights of L_bsvo's two terms; gap_weight: of the lip-gap
            term (:func:`~vividtalk.audio2mesh.losses.bsvo_loss`; 0: the paper's loss);
            closure_weight: of the one-sided closure term (lips left open where the target closes).
        feature_dropout: dropout on the audio features in training (a regulariser against
            learning the few synthetic voices of a corpus by heart).
        face_model: path of a face model file; None for the packaged default.
    """

    def __init__(
        self,
        network: nn.Module,
        style_encoder: nn.Module,
        audio_encoder: nn.Module | None = None,
        optimizer: OptimizerCallable = adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        coeff_weight: float = 1.0,
        mesh_weight: float = 10.0,
        face_model: str | None = None,
        gap_weight: float = 0.0,
        feature_dropout: float = 0.0,
        closure_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network", "style_encoder", "audio_encoder", "optimizer", "lr_scheduler"])
        self.network, self.style_encoder, self.audio_encoder = network, style_encoder, audio_encoder
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.coeff_weight, self.mesh_weight, self.gap_weight = coeff_weight, mesh_weight, gap_weight
        self.closure_weight = closure_weight
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {feature_dropout}")
        self.feature_dropout = feature_dropout
        self.face = FaceModel.load(face_model) if face_model else FaceModel.default()
        _check_audio_dim(network, audio_encoder)
        self.register_buffer("upper_face", upper_face_vertices(self.face), persistent=False)
        # Running sums of the training targets, for the mean-face baseline (under DDP, which
        # broadcasts buffers before every forward, those of rank 0's samples).
        k, lips = self.face.num_expressions, self.face.num_lip_vertices
        self.register_buffer("target_beta_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("target_offset_sum", torch.zeros(lips, 3, dtype=torch.float64))
        self.register_buffer("target_frames", torch.zeros((), dtype=torch.float64))

    def features(self, batch: dict) -> torch.Tensor:
        """Audio features [B, T, A] of a batch (cached, or encoded from the waveform)."""
        if "features" in batch:
            return batch["features"]
        if self.audio_encoder is None:
            raise ValueError("the batch has no cached 'features' and the module has no audio_encoder")
        return self.audio_encoder(batch["audio"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        z_style = self.style_encoder(batch["identity"])
        features = torch.nn.functional.dropout(self.features(batch), self.feature_dropout, training=True)
        pred = self.network(features, z_style, beta=batch["beta"], lip_offsets=batch["lip_offsets"])
        losses = self._losses(pred, batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(batch["beta"]))
        with torch.no_grad():
            self.target_beta_sum += batch["beta"].double().sum((0, 1))
            self.target_offset_sum += batch["lip_offsets"].double().sum((0, 1))
            self.target_frames += batch["beta"].shape[0] * batch["beta"].shape[1]
        return losses["loss"]

    def _losses(self, pred: dict, batch: dict) -> dict:
        return bsvo_loss(self.face, pred, batch, self.coeff_weight, self.mesh_weight, self.gap_weight,
                         self.closure_weight)

    def mean_face(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """The mean-face baseline for a batch: the mean training coefficients [B, T, K] and lip
        offsets [B, T, L, 3] for every frame; None before any training step."""
        if self.target_frames <= 0:
            return None
        shape = batch["beta"].shape[:2]
        beta = (self.target_beta_sum / self.target_frames).to(batch["beta"].dtype)
        offsets = (self.target_offset_sum / self.target_frames).to(batch["beta"].dtype)
        return {"beta": beta.expand(*shape, -1), "lip_offsets": offsets.expand(*shape, -1, -1)}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Autoregressive generation: ``beta`` [B, T, K], ``lip_offsets`` [B, T, L, 3] and the
        non-rigid meshes ``vertices`` [B, T, V, 3] (canonical frame), with the batch's ids."""
        pred = self.network.generate(self.features(batch), self.style_encoder(batch["identity"]))
        vertices = nonrigid_mesh(self.face, pred["beta"], pred["lip_offsets"], batch["identity"])
        return {**pred, "vertices": vertices, "clip": batch["clip"], "start": batch["start"]}

    def _evaluate(self, batch: dict, stage: str) -> None:
        z_style = self.style_encoder(batch["identity"])
        pred = self.network.generate(self.features(batch), z_style)
        losses = self._losses(pred, batch)
        mesh_pred = nonrigid_mesh(self.face, pred["beta"], pred["lip_offsets"], batch["identity"])
        mesh_true = nonrigid_mesh(self.face, batch["beta"], batch["lip_offsets"], batch["identity"])
        neutral = batch["identity"][:, None].expand_as(mesh_true)
        lips = self.face.lip_indices
        metrics = {
            "loss": losses["loss"],
            "lve": lip_vertex_error(mesh_pred, mesh_true, lips).mean(),
            "lve_neutral_baseline": lip_vertex_error(neutral, mesh_true, lips).mean(),
            "fdd": face_dynamics_deviation(mesh_pred, mesh_true, self.upper_face).mean(),
            "gap_error": losses["gap"],
            "closure_recall": closure_recall(self.face, mesh_pred, mesh_true, batch["identity"]),
        }
        mean = self.mean_face(batch)
        if mean is not None:
            mesh_mean = nonrigid_mesh(self.face, mean["beta"], mean["lip_offsets"], batch["identity"])
            metrics["lve_mean_baseline"] = lip_vertex_error(mesh_mean, mesh_true, lips).mean()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=len(batch["beta"]), sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def closure_recall(face: FaceModel, mesh_pred: torch.Tensor, mesh_true: torch.Tensor, identity: torch.Tensor,
                   margin: float = CLOSED_MARGIN) -> torch.Tensor:
    """Share of the frames with closed target lips (inner-lip gap within ``margin`` face heights
    of the identity's neutral gap) where the prediction is closed too (NaN without any)."""
    closed_true = closed_lips(face, lip_gap(face, mesh_true), identity, margin)
    closed_pred = closed_lips(face, lip_gap(face, mesh_pred), identity, margin)
    return (closed_pred & closed_true).sum() / closed_true.sum()


def _check_audio_dim(network: nn.Module, audio_encoder: nn.Module | None) -> None:
    """The audio encoder's feature size must be the network's ``audio_dim``."""
    norm = getattr(network, "audio_norm", None)
    if audio_encoder is None or norm is None or not hasattr(audio_encoder, "feature_dim"):
        return
    if audio_encoder.feature_dim != norm.normalized_shape[0]:
        raise ValueError(
            f"the audio encoder gives {audio_encoder.feature_dim} features per frame but the network's "
            f"audio_dim is {norm.normalized_shape[0]}: make them equal in the recipe"
        )
