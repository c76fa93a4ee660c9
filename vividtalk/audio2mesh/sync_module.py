"""LightningModule of the audio-motion sync expert (:class:`~.sync_expert.SyncExpert`).

Contrastive training on windows of the stage-1 corpus (cached audio features, the targets'
lip motion): in a batch of clips, every ``stride``-th window's lip embedding must pick its own
audio among the audio of all sampled windows, those of the same clip at least ``min_offset``
frames away included (the hard negatives: the right voice, the wrong moment); windows closer
than that are left out of the comparison. Symmetric cross-entropy (CLIP's loss).

Validation is offset detection: for each clip the mean agreement of lips at t with audio at
t + k, k = -``max_offset``..``max_offset``; the detected offset is the best k, and
``val/offset_accuracy`` is the share of clips where it is 0 (``val/offset_within1``: |k| <= 1).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable

from ..face.model import FaceModel
from .module import adam
from .sync_expert import SyncExpert, lip_motion


def offset_scores(expert: SyncExpert, lips: torch.Tensor, audio: torch.Tensor, max_offset: int) -> torch.Tensor:
    """Mean agreement of lip windows at t with audio windows at t + k: [B, 2 K + 1] (k = -K..K).

    Args:
        lips: [B, T, 3 L]; audio: [B, T, A]; T > 2 K + window.
    """
    el, ea = expert.embed_lips(lips), expert.embed_audio(audio)  # [B, W, E]
    w = el.shape[1]
    if w <= 2 * max_offset:
        raise ValueError(f"windows of {lips.shape[1]} frames are too short for offsets up to {max_offset}")
    inner = el[:, max_offset: w - max_offset]  # [B, W - 2K, E]
    return torch.stack([(inner * ea[:, max_offset + k: w - max_offset + k]).sum(-1).mean(-1)
                        for k in range(-max_offset, max_offset + 1)], -1)


class SyncExpertModule(pl.LightningModule):
    """Trains a :class:`SyncExpert` (see the module docstring).

    Args:
        expert: the network. optimizer: callable (LightningCLI ``class_path``).
        stride: frames between the sampled windows of a clip; min_offset: the nearest
            same-clip window that counts as a negative; max_offset: validation's offset range.
        face_model: path of a face model file; None for the packaged default.
    """

    def __init__(self, expert: SyncExpert, optimizer: OptimizerCallable = adam, stride: int = 3, min_offset: int = 3,
                 max_offset: int = 8, face_model: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["expert", "optimizer"])
        self.expert, self.optimizer_factory = expert, optimizer
        self.face = FaceModel.load(face_model) if face_model else FaceModel.default()

    def lips(self, batch: dict) -> torch.Tensor:
        return lip_motion(self.face, batch["beta"], batch["lip_offsets"], batch["identity"])

    def contrastive_loss(self, lips: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """CLIP loss over every ``stride``-th window of every clip (lips [B, T, 3L], audio [B, T, A])."""
        el = self.expert.embed_lips(lips)[:, ::self.hparams.stride]  # [B, n, E]
        ea = self.expert.embed_audio(audio)[:, ::self.hparams.stride]
        b, n, _ = el.shape
        logits = self.expert.log_scale.exp() * el.reshape(b * n, -1) @ ea.reshape(b * n, -1).T  # [bn, bn]
        clip = torch.arange(b, device=lips.device).repeat_interleave(n)
        pos = torch.arange(n, device=lips.device).repeat(b) * self.hparams.stride
        near = (clip[:, None] == clip[None]) & ((pos[:, None] - pos[None]).abs() < self.hparams.min_offset)
        logits = logits.masked_fill(near & ~torch.eye(b * n, dtype=torch.bool, device=lips.device), float("-inf"))
        target = torch.arange(b * n, device=lips.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.contrastive_loss(self.lips(batch), batch["features"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["features"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict, stage: str) -> None:
        lips, audio = self.lips(batch), batch["features"]
        k = self.hparams.max_offset
        detected = offset_scores(self.expert, lips, audio, k).argmax(-1) - k  # [B]
        self.log_dict({f"{stage}/loss": self.contrastive_loss(lips, audio),
                       f"{stage}/offset_accuracy": (detected == 0).float().mean(),
                       f"{stage}/offset_within1": (detected.abs() <= 1).float().mean()},
                      batch_size=len(lips), sync_dist=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.expert.parameters())
