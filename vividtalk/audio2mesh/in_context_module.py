"""LightningModule of the in-context stylised audio-to-motion model (MimicTalk's ICS-A2M).

Trains :class:`~.flow_transformer.FlowMatchingTransformer` by audio-guided motion infilling
with L_CFM (:mod:`.flow_matching`) on windows of the stage-1 corpus
(:class:`vividtalk.data.stage1.AudioMeshDataModule`, cached audio features). A frame's motion
is the :class:`~.motion_codec.MotionCodec` vector of its blendshapes, lip offsets and head pose
(the pose relative to the window's first frame, :func:`~.pose_repr.pose_to_features`); the
codec's statistics are measured on the training windows when fitting starts.

At inference (:meth:`InContextMotionModule.generate`) the audio is encoded by ``audio_encoder``
(Whisper, as the cached features were), a style prompt (:meth:`InContextMotionModule.prompt`: a
reference clip's features and motion) is the known context, and long audio is sampled in chunks.

Validation measures what the model is for: the first half of each window is the style prompt,
the second half is generated from its audio (midpoint ODE, ``eval_steps``), and its lip vertex
error against the real motion is logged (``val/lve``) with the velocity loss (``val/cfm``).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from ..eval.mesh import lip_vertex_error
from ..face.model import FaceModel
from .flow_matching import cfm_loss, infill_mask, sample, sample_chunked
from .flow_transformer import FlowMatchingTransformer
from .losses import nonrigid_mesh
from .module import adam, load_submodule
from .motion_codec import MotionCodec
from .pose_repr import FEATURE_DIM, relative_features
from .sync_expert import SyncExpert, lip_motion


class InContextMotionModule(pl.LightningModule):
    """Flow-matching motion infilling.

    Args:
        network: the velocity field (its ``motion_dim`` must be the codec's).
        audio_encoder: waveform [B, N] -> features [B, T, A] at inference (training reads the
            corpus' cached features of the same encoder); None when only training.
        cfg_scale, steps, temperature: the defaults of :meth:`generate` (guidance weight,
            midpoint ODE steps, the starting noise's std: :func:`~.flow_matching.sample`).
        max_prompt, chunk, overlap: :meth:`generate`'s longest style prompt (its first frames
            are used), new frames per chunk and frames a chunk continues from: keep
            ``max_prompt + overlap + chunk`` within the sequences the model was trained on (a
            prompted corpus: the data's ``prompt + window``).
        lip_components: lip-offset PCA coefficients of the motion vector.
        optimizer, lr_scheduler: callables (LightningCLI ``class_path`` in YAML).
        min_target, max_target, max_segments, drop_prompt: the infilling masks (:func:`infill_mask`).
            Batches with prompts (``AudioMeshDataModule(prompt=P)``: another clip of the same
            person) train as they are used: [prompt | window], the prompt known (dropped with
            ``drop_prompt``), the window generated, half the time with segments of it known as
            the previous chunk's tail is at inference.
        sigma_min: of the OT path. feature_dropout: dropout on the audio features in training.
        stats_batches: training batches the codec statistics are measured on.
        eval_steps: ODE steps of the validation samples.
        sync_expert, sync_checkpoint, sync_weight: MimicTalk's L_sync: a frozen
            :class:`~.sync_expert.SyncExpert` of the sync recipe's architecture, its weights from
            that recipe's Lightning checkpoint (keys ``expert.*``), and the loss weight (0: none).
            The loss is 1 - the expert's agreement between the audio and the lips of the one-step
            estimate x_1^ = x_t + (1 - t) v, over the target frames, weighted by t (x_1^ is
            noise-dominated at small t).
        lip_weight: weight of a regression of the one-step estimate's lips on the real ones
            (:meth:`lip_loss`; 0: none). x_1^ - x_1 = (1 - t)(v - u), so this is L_CFM
            re-weighted toward small t and toward the channels that move the lips: it does not
            change the flow's optimum, it spends the network's capacity where the LVE is measured.
        face_model: path of a face model file; None for the packaged default.
    """

    def __init__(self, network: FlowMatchingTransformer, audio_encoder: nn.Module | None = None,
                 cfg_scale: float = 2.0, steps: int = 10, temperature: float = 1.0, max_prompt: int = 250, chunk: int = 200,
                 overlap: int = 25, lip_components: int = 16, optimizer: OptimizerCallable = adam,
                 lr_scheduler: LRSchedulerCallable | None = None, min_target: float = 0.3, max_target: float = 0.9,
                 max_segments: int = 2, drop_prompt: float = 0.1, sigma_min: float = 0.0,
                 feature_dropout: float = 0.1, stats_batches: int = 200, eval_steps: int = 10,
                 sync_expert: SyncExpert | None = None, sync_checkpoint: str | None = None, sync_weight: float = 0.0,
                 lip_weight: float = 0.0, face_model: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network", "audio_encoder", "sync_expert", "optimizer", "lr_scheduler"])
        self.network, self.audio_encoder = network, audio_encoder
        self.face = FaceModel.load(face_model) if face_model else FaceModel.default()
        self.codec = MotionCodec(self.face.num_expressions, self.face.num_lip_vertices, lip_components, FEATURE_DIM)
        if network.motion_dim != self.codec.dim:
            raise ValueError(f"the network's motion_dim is {network.motion_dim} but the motion vector has "
                             f"{self.codec.dim} channels ({self.face.num_expressions} blendshapes + {lip_components} "
                             f"lip components + {FEATURE_DIM} pose): set network.init_args.motion_dim to {self.codec.dim}")
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.sync_expert = sync_expert  # None in a saved pipeline: only training uses it
        if sync_expert is not None:
            if sync_checkpoint is not None:
                load_submodule(sync_expert, sync_checkpoint, "expert")
            sync_expert.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "InContextMotionModule":
        super().train(mode)
        if self.sync_expert is not None:
            self.sync_expert.eval()  # frozen
        return self

    # ---------------------------------------------------------------- motion vectors
    def motion(self, batch: dict) -> torch.Tensor:
        """The normalised motion x_1 [B, T, D] of a batch."""
        return self.codec.encode(batch["beta"], batch["lip_offsets"], relative_features(batch["pose"]))

    def prompt(self, features: torch.Tensor, beta: torch.Tensor, lip_offsets: torch.Tensor,
               pose: torch.Tensor) -> dict[str, torch.Tensor]:
        """A style prompt from a reference clip: ``features`` [1, P, A] of its audio and its
        motion ``beta`` [1, P, K], ``lip_offsets`` [1, P, L, 3], ``pose`` [1, P, 7] (P frames)."""
        if not features.shape[1] == beta.shape[1] == lip_offsets.shape[1] == pose.shape[1]:
            raise ValueError("a style prompt's audio features and motion must have one row per frame each")
        return {"features": features, "motion": self.motion({"beta": beta, "lip_offsets": lip_offsets, "pose": pose})}

    def pose_anchor(self, x: torch.Tensor) -> torch.Tensor:
        """The offset [B, 1, D] that re-measures normalised motion x [B, n, D]'s pose channels
        from its first frame (raw' = raw - raw_0 is x' = x - x_0 - mean / std there)."""
        offset = torch.zeros_like(x[:, :1])
        pose = slice(self.codec.dim - self.codec.pose_dim, self.codec.dim)
        offset[..., pose] = x[:, :1, pose] + (self.codec.mean / self.codec.std)[pose]
        return offset

    @torch.no_grad()
    def generate(self, features: torch.Tensor, prompt: dict[str, torch.Tensor] | None = None,
                 cfg_scale: float | None = None, steps: int | None = None, method: str = "midpoint",
                 generator: torch.Generator | None = None, temperature: float | None = None) -> dict:
        """Motion for audio features [1, T, A] (any T), styled by ``prompt`` (None: unconditional;
        its first ``max_prompt`` frames are used). None for ``cfg_scale``, ``steps``,
        ``temperature``: the module's defaults.

        Returns:
            ``beta`` [1, T, K], ``lip_offsets`` [1, T, L, 3], ``pose_features`` [1, T, 6]
            (:func:`~.pose_repr.pose_to_features`, relative to the first generated frame).
        """
        hp = self.hparams
        cfg_scale = hp.cfg_scale if cfg_scale is None else cfg_scale
        steps = hp.steps if steps is None else steps
        temperature = hp.temperature if temperature is None else temperature
        if prompt is not None:
            prompt = {k: v[:, :hp.max_prompt] for k, v in prompt.items()}
        p = 0 if prompt is None else prompt["features"].shape[1]
        chunk = max(1, min(hp.chunk, self.network.max_frames - p - hp.overlap))
        x = sample_chunked(self.network, features, None if prompt is None else prompt["features"],
                           None if prompt is None else prompt["motion"], chunk, hp.overlap, steps, method,
                           cfg_scale if prompt is not None else 0.0, generator, self.pose_anchor, temperature)
        x = x - self.pose_anchor(x)  # the pose measured from the first generated frame
        out = self.codec.decode(x)
        return {"beta": out["beta"], "lip_offsets": out["lip_offsets"], "pose_features": out["pose"]}

    def on_fit_start(self) -> None:
        if self.hparams.sync_weight > 0 and self.sync_expert is None:
            raise ValueError("sync_weight > 0 needs a sync_expert (and its sync_checkpoint)")
        if bool(self.fitted):
            return
        beta, lips, pose = [], [], []
        for i, batch in enumerate(self.trainer.datamodule.train_dataloader()):
            if i >= self.hparams.stats_batches:
                break
            beta.append(batch["beta"].flatten(0, 1))
            lips.append(batch["lip_offsets"].flatten(0, 1))
            pose.append(relative_features(batch["pose"]).flatten(0, 1))
        fitted = MotionCodec.fit(torch.cat(beta), torch.cat(lips), torch.cat(pose), self.codec.lip_components)
        self.codec.load_state_dict(fitted.state_dict())
        self.codec.to(self.device)
        self.fitted.fill_(True)

    # ---------------------------------------------------------------- steps
    def sequence(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training batch as one infilling problem: motion x_1 [B, T, D], audio features
        [B, T, A] and the target mask [B, T] (see the class docstring; T includes the prompt)."""
        x1, audio, p = self._with_prompt(batch)
        hp, b, n = self.hparams, x1.shape[0], x1.shape[1] - p
        if not p:
            target = infill_mask(b, n, None, hp.min_target, hp.max_target, hp.max_segments, hp.drop_prompt, x1.device)
            return x1, audio, target
        own = infill_mask(b, n, None, hp.min_target, hp.max_target, hp.max_segments, 0.5, x1.device)
        dropped = (torch.rand(b, device=x1.device) < hp.drop_prompt)[:, None]
        return x1, audio, torch.cat([dropped.expand(b, p), own | dropped], 1)

    def _with_prompt(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A batch's motion [B, P + T, D] and audio features [B, P + T, A] with its prompts
        (``prompt_*`` keys, P frames) in front; P = 0 for a batch without prompts."""
        x1, audio = self.motion(batch), batch["features"]
        if "prompt_beta" not in batch:
            return x1, audio, 0
        prompt = self.motion({k: batch[f"prompt_{k}"] for k in ("beta", "lip_offsets", "pose")})
        return torch.cat([prompt, x1], 1), torch.cat([batch["prompt_features"], audio], 1), prompt.shape[1]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x1, audio, target = self.sequence(batch)
        hp = self.hparams
        dropped = torch.nn.functional.dropout(audio, hp.feature_dropout, training=True)
        out = cfm_loss(self.network, x1, dropped, target, None, hp.sigma_min)
        self.log("train/cfm", out["loss"], prog_bar=True, batch_size=len(x1))
        loss = out["loss"]
        if hp.sync_weight <= 0 and hp.lip_weight <= 0:
            return loss
        lips = self.lips(out["x1_hat"], batch["identity"])
        if hp.sync_weight > 0:
            sync = self.sync_loss(lips, audio, target, out["t"])
            self.log("train/sync", sync, batch_size=len(x1))
            loss = loss + hp.sync_weight * sync
        if hp.lip_weight > 0:
            regression = self.lip_loss(lips, self.lips(x1, batch["identity"]), target)
            self.log("train/lip", regression, batch_size=len(x1))
            loss = loss + hp.lip_weight * regression
        return loss

    def lips(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """Lip-vertex displacements [B, T, 3L] from the neutral face of normalised motion x
        [B, T, D] (the identity shapes [B, V, 3])."""
        pred = self.codec.decode(x)
        return lip_motion(self.face, pred["beta"], pred["lip_offsets"], identity)

    def sync_loss(self, lips: torch.Tensor, audio: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_sync of one-step estimates' lips [B, T, 3L] against audio features [B, T, A]
        (target [B, T]; flow times t [B])."""
        agreement = self.sync_expert(lips, audio)  # [B, T - w + 1]
        w = self.sync_expert.window
        centre = target[:, w // 2: w // 2 + agreement.shape[1]].to(agreement.dtype)  # windows centred on targets
        weight = centre * t[:, None]
        return ((1 - agreement) * weight).sum() / weight.sum().clamp_min(1e-6)

    @staticmethod
    def lip_loss(lips: torch.Tensor, real: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error of lips [B, T, 3L] against the real ones on the target frames
        [B, T], over the real lips' variance there (1: no better than their mean; scale-free)."""
        weight = target.to(lips.dtype)[..., None]
        count = (weight.sum() * lips.shape[-1]).clamp_min(1.0)
        error = ((lips - real) ** 2 * weight).sum() / count
        mean = (real * weight).sum((0, 1)) / weight.sum().clamp_min(1.0)
        spread = ((real - mean) ** 2 * weight).sum().detach() / count
        return error / spread.clamp_min(1e-12)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """The window after its prompt (prompted batches) or its second half after its first."""
        x1, audio, start = self._with_prompt(batch)
        start = start or x1.shape[1] // 2
        generator = torch.Generator().manual_seed(batch_idx)
        target = torch.zeros(x1.shape[:2], dtype=torch.bool, device=x1.device)
        target[:, start:] = True
        cfm = cfm_loss(self.network, x1, audio, target, generator, self.hparams.sigma_min)["loss"]
        x = sample(self.network, audio, x1, ~target, ~target, self.hparams.eval_steps, "midpoint", 0.0, generator)
        pred = self.codec.decode(x[:, start:])
        identity, n = batch["identity"], x.shape[1] - start
        mesh_pred = nonrigid_mesh(self.face, pred["beta"], pred["lip_offsets"], identity)
        mesh_true = nonrigid_mesh(self.face, batch["beta"][:, -n:], batch["lip_offsets"][:, -n:], identity)
        lve = lip_vertex_error(mesh_pred, mesh_true, self.face.lip_indices).mean()
        self.log_dict({"val/cfm": cfm, "val/lve": lve}, batch_size=len(x1), sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.network.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
