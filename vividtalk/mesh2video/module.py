"""LightningModule of stage 2 (Mesh-to-Video): motion VAE + warping generator vs discriminator.

Manual optimisation: per step, the generator side (motion VAE and generator) is updated with

    L_G = w_perc L_perc + w_fm L_fm + w_adv L_adv + w_kl KL

and then the multi-scale discriminator with the least-squares GAN loss, on the generated frame
and the real driving frame, each concatenated with the driving projected texture (the
discriminator judges the frame given the mesh it should show). The adversarial terms start
after ``adversarial_start`` steps. Validation reports PSNR / SSIM over the face region of the
output and of the baseline that returns the source frame; every ``image_every`` training
steps a grid (source | driving PT | flow | occlusion | output | target) is written as PNG to
the logger's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable

from ..eval.image import psnr, ssim
from ..face.model import FaceModel
from ..face.segmentation import FACE
from ..render import get_rasterizer
from .blocks import warp
from .conditioning import compose_texture, gaussian_heatmaps, outer_texture
from .discriminator import MultiScaleDiscriminator
from .generator import WarpingGenerator
from .mesh_flow import MeshFlow
from .losses import PerceptualLoss, discriminator_loss, feature_matching_loss, generator_adversarial_loss, kl_loss
from .motion_vae import DualBranchMotionVAE
from .visualize import flow_to_rgb, frames_uint8


def adam_1e5(params) -> torch.optim.Optimizer:
    """The paper's stage-2 optimiser: Adam, learning rate 1e-5."""
    return torch.optim.Adam(params, lr=1e-5, betas=(0.5, 0.999))


class Mesh2VideoModule(pl.LightningModule):
    """Trains the dual-branch motion VAE and the warping generator against a discriminator.

    Args:
        motion_vae, generator, discriminator: the networks (``class_path`` in the recipe); the
            discriminator may be None for inference only (a saved pipeline keeps none).
        optimizer_g, optimizer_d: callables params -> optimiser for the generator side and
            for the discriminator.
        vgg_weights: torchvision-layout VGG-19 weights for the perceptual loss; None: the
            documented L1-pyramid fallback, warned once at the first training step (see
            :class:`~vividtalk.mesh2video.losses.PerceptualLoss`).
        perceptual_weight, feature_matching_weight, adversarial_weight, kl_weight: loss weights.
        adversarial_start: training steps before the adversarial and feature-matching terms.
        heatmap_sigma: std of the lip heatmaps, in motion-resolution pixels.
        rasterizer: "auto", "torch" or "nvdiffrast" (see ``vividtalk.render.get_rasterizer``).
        face_model: path of a face model file; None for the packaged default.
        image_every: write an image grid every this many optimiser steps (``global_step``, which
            counts both optimisers once the discriminator trains; the first step's too), named
            by that step (0: never).
    """

    def __init__(
        self,
        motion_vae: DualBranchMotionVAE,
        generator: WarpingGenerator,
        discriminator: MultiScaleDiscriminator | None = None,
        optimizer_g: OptimizerCallable = adam_1e5,
        optimizer_d: OptimizerCallable = adam_1e5,
        vgg_weights: str | None = None,
        perceptual_weight: float = 10.0,
        feature_matching_weight: float = 10.0,
        adversarial_weight: float = 1.0,
        kl_weight: float = 1e-3,
        adversarial_start: int = 0,
        heatmap_sigma: float = 1.5,
        rasterizer: str = "auto",
        face_model: str | None = None,
        image_every: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["motion_vae", "generator", "discriminator", "optimizer_g", "optimizer_d"])
        self.automatic_optimization = False
        self.motion_vae, self.generator, self.discriminator = motion_vae, generator, discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.perceptual = PerceptualLoss(vgg_weights)
        self._last_grid = -1
        self.weights = {"perceptual": perceptual_weight, "feature_matching": feature_matching_weight,
                        "adversarial": adversarial_weight, "kl": kl_weight}
        self.adversarial_start, self.heatmap_sigma = adversarial_start, heatmap_sigma
        self.rasterizer_name, self.image_every = rasterizer, image_every
        self._rasterizers: dict = {}  # device -> backend
        self.face = FaceModel.load(face_model) if face_model else FaceModel.default()
        self.mesh = MeshFlow(self.face)

    # ------------------------------------------------------------------ forward
    def prepare_source(self, source: torch.Tensor, source_mask: torch.Tensor, source_vertices: torch.Tensor,
                       source_lips: torch.Tensor) -> dict[str, torch.Tensor]:
        """What stage 2 needs of the source frame, computed once per video.

        Args:
            source: float [B, 3, H, W] in [0, 1]; source_mask: int [B, H, W] labels;
            source_vertices: [B, V, 3] crop-space mesh; source_lips: [B, N, 2] lip landmarks (pixels).
        Returns:
            dict with ``source``, ``outer`` (``PT_out`` [B, 3, H, W]), ``pt_source`` [B, 3, H, W],
            ``source_heatmaps`` [B, N, m, m], ``features`` (the generator's encoding [B, C, m, m])
            and ``mesh`` (:meth:`MeshFlow.prepare <vividtalk.mesh2video.mesh_flow.MeshFlow.prepare>`).
        """
        outer = outer_texture(source, source_mask)
        rendered = self.mesh.render(self.rasterizer(source.device), source_vertices, source.shape[-1])
        heat = gaussian_heatmaps(source_lips, self.motion_vae.motion_size, source.shape[-1], self.heatmap_sigma)
        return {"source": source, "outer": outer, "pt_source": compose_texture(rendered, outer),
                "source_heatmaps": heat, "features": self.generator.encode(source),
                "mesh": self.mesh.prepare(source_vertices, source_mask)}

    def condition(self, prepared: dict, driving_vertices: torch.Tensor,
                  driving_lips: torch.Tensor) -> dict[str, torch.Tensor]:
        """The motion VAE's inputs for driving meshes [B, V, 3] and lips [B, N, 2] (pixels).

        Args:
            prepared: :meth:`prepare_source` of the source (its batch size B, or 1 to share one
                source between all driving frames).
        Returns:
            dict with ``pt_source`` / ``pt_driving`` [B, 3, H, W], ``driving_face`` [B, 1, H, W]
            (the rendered face mask of the driving mesh), ``lip_heatmaps`` [B, N, m, m] and,
            with the mesh flow, ``mesh_flow`` [B, 2, H, W], ``warped_source`` [B, 3, H, W] (the
            source warped by it) and ``paint`` [B, 1, H, W] (the mouth interior to paint).
        """
        b = len(driving_vertices)
        outer = prepared["outer"].expand(b, -1, -1, -1)
        uses_flow = self.motion_vae.uses_mesh_flow
        source_vertices = prepared["mesh"]["vertices"].expand(b, -1, -1) if uses_flow else None
        rendered = self.mesh.render(self.rasterizer(outer.device), driving_vertices, outer.shape[-1], source_vertices)
        size = self.motion_vae.motion_size
        heat = gaussian_heatmaps(driving_lips, size, outer.shape[-1], self.heatmap_sigma) - prepared["source_heatmaps"]
        cond = {"pt_source": prepared["pt_source"].expand(b, -1, -1, -1), "pt_driving": compose_texture(rendered, outer),
                "driving_face": rendered["face"], "lip_heatmaps": heat}
        if uses_flow:
            mesh = self.mesh.flow(rendered, prepared["mesh"], driving_vertices)
            cond.update(mesh_flow=mesh["flow"], paint=mesh["paint"],
                        warped_source=warp(prepared["source"].expand(b, -1, -1, -1), mesh["flow"]))
        return cond

    def rasterizer(self, device: torch.device):
        """The rasterizer backend for ``device``, chosen once per device (``get_rasterizer``)."""
        if device not in self._rasterizers:
            self._rasterizers[device] = get_rasterizer(self.rasterizer_name, device)
        return self._rasterizers[device]

    def forward(self, batch: dict, lip_scale: float = 1.0, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Source frame + driving mesh -> the driven frame (a batch of stage-2 pairs).

        Returns:
            dict: :meth:`condition`'s fields, the motion VAE's (``flow``, ``occlusion``,
            ``mu``, ``logvar``, ``lip_flow``) and the generator's (``image`` [B, 3, H, W], ``warped``).
        """
        prepared = self.prepare_source(batch["source"], batch["source_mask"], batch["source_vertices"],
                                       batch["source_lips"])
        return self.animate(prepared, batch["driving_vertices"], batch["driving_lips"], lip_scale, sample)

    def animate(self, prepared: dict, driving_vertices: torch.Tensor, driving_lips: torch.Tensor,
                lip_scale: float = 1.0, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Driven frames for a prepared source (:meth:`prepare_source`) and driving meshes [B, V, 3],
        lips [B, N, 2]; the per-frame part of :meth:`forward`, same outputs."""
        cond = self.condition(prepared, driving_vertices, driving_lips)
        motion = self.motion_vae(cond["pt_source"], cond["pt_driving"], cond["lip_heatmaps"], lip_scale, sample,
                                 cond.get("mesh_flow"), cond.get("warped_source"), cond.get("paint"))
        b = len(driving_vertices)
        out = self.generator(prepared["source"].expand(b, -1, -1, -1), motion["flow"], motion["occlusion"],
                             prepared["features"].expand(b, -1, -1, -1))
        return {**cond, **motion, **out}

    @torch.no_grad()
    def prepare_crop(self, crop: np.ndarray, labels: np.ndarray, vertices,
                     appearance: dict[str, torch.Tensor] | None = None) -> dict:
        """:meth:`prepare_source` of one source crop given as arrays: uint8 [S, S, 3], labels
        uint8 [S, S] and its mesh float [V, 3] (crop pixels); on this module's device.
        ``appearance``: prepared fields that replace the computed ones (a personalisation's
        inverted ``features`` [1, C, m, m] and ``source`` [1, 3, S, S])."""
        dev = self.device
        lips = self.face.lip_contour().to(dev)
        source = torch.from_numpy(np.ascontiguousarray(crop)).to(dev).permute(2, 0, 1)[None].float() / 255.0
        verts = torch.as_tensor(vertices, dtype=torch.float32).to(dev)[None]
        prepared = self.prepare_source(source, torch.from_numpy(labels).to(dev).long()[None], verts, verts[:, lips, :2])
        prepared.update({k: v.to(dev) for k, v in (appearance or {}).items()})
        return prepared

    @torch.no_grad()
    def render(self, prepared: dict, driving: torch.Tensor, batch_size: int = 8) -> Iterator[np.ndarray]:
        """Frames of a prepared source (:meth:`prepare_crop`) driven by meshes float [T, V, 3]
        (crop pixels), ``batch_size`` at a time: uint8 [b, S, S, 3] batches."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lips = self.face.lip_contour().to(self.device)
        driving = torch.as_tensor(driving, dtype=torch.float32).to(self.device)
        for s in range(0, len(driving), batch_size):
            d = driving[s: s + batch_size]
            yield frames_uint8(self.animate(prepared, d, d[:, lips, :2], sample=False)["image"])

    @torch.no_grad()
    def drive(self, crop: np.ndarray, labels: np.ndarray, vertices, driving: torch.Tensor,
              batch_size: int = 8, appearance: dict[str, torch.Tensor] | None = None) -> Iterator[np.ndarray]:
        """Frames of one source driven by meshes, ``batch_size`` at a time (the source prepared once).

        Args:
            crop: uint8 [S, S, 3] the source crop; labels: uint8 [S, S]; vertices: float [V, 3]
                its mesh (numpy); driving: float [T, V, 3] driving meshes (crop pixels).
            appearance: prepared fields to replace (see :meth:`prepare_crop`).
        Yields:
            uint8 [b, S, S, 3] batches of frames.
        """
        yield from self.render(self.prepare_crop(crop, labels, vertices, appearance), driving, batch_size)

    # ------------------------------------------------------------------ training
    def _judge(self, image: torch.Tensor, pt: torch.Tensor) -> list[list[torch.Tensor]]:
        return self.discriminator(torch.cat([image, pt], dim=1))

    def generator_losses(self, out: dict, target: torch.Tensor, adversarial: bool) -> dict[str, torch.Tensor]:
        """The terms of L_G (unweighted) and their weighted sum ``loss``."""
        losses = {"perceptual": self.perceptual(out["image"], target), "kl": kl_loss(out["mu"], out["logvar"])}
        if adversarial:
            fake = self._judge(out["image"], out["pt_driving"])
            with torch.no_grad():
                real = self._judge(target, out["pt_driving"])
            losses["adversarial"] = generator_adversarial_loss(fake)
            losses["feature_matching"] = feature_matching_loss(fake, real)
        losses["loss"] = sum(self.weights[k] * v for k, v in losses.items())
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        # global_step counts optimiser steps: one per step until the discriminator joins.
        adversarial = self.global_step >= self.adversarial_start and self.weights["adversarial"] > 0
        out = self(batch)
        losses = self.generator_losses(out, batch["driving"], adversarial)
        self.discriminator.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(losses["loss"])
        opt_g.step()
        self.discriminator.requires_grad_(True)
        if adversarial:
            d_loss = discriminator_loss(self._judge(out["image"].detach(), out["pt_driving"]),
                                        self._judge(batch["driving"], out["pt_driving"]))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            losses["discriminator"] = d_loss
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True,
                      batch_size=len(batch["source"]))
        # One grid per image_every optimiser steps: by global_step, not batch_idx (which restarts
        # every epoch), and by interval, since a step of both optimisers can jump over a multiple.
        if self.image_every and self.global_step // self.image_every != self._last_grid:
            self._last_grid = self.global_step // self.image_every
            self._write_grid(batch, out)

    def configure_optimizers(self):
        if self.discriminator is None:
            raise ValueError("training stage 2 needs a discriminator (model.init_args.discriminator)")
        g_params = list(self.motion_vae.parameters()) + list(self.generator.parameters())
        return [self.optimizer_g(g_params), self.optimizer_d(self.discriminator.parameters())]

    # ------------------------------------------------------------------ evaluation
    def face_metrics(self, batch: dict, lip_scale: float = 1.0, out: dict | None = None) -> dict[str, torch.Tensor]:
        """Per-pair PSNR / SSIM [B] over the driving frame's face region, of the output and of
        the source-frame baseline; also over the mouth region (around the driving lips).
        ``out``: this module's output for the batch, when already computed."""
        out = self(batch, lip_scale=lip_scale, sample=False) if out is None else out
        target = batch["driving"]
        face = (batch["driving_mask"] == FACE)[:, None].float()  # [B, 1, H, W]
        mouth = _box_mask(batch["driving_lips"], target.shape[-1], margin=8)
        return {
            "psnr": psnr(out["image"], target, face), "ssim": ssim(out["image"], target, face),
            "psnr_source_baseline": psnr(batch["source"], target, face),
            "ssim_source_baseline": ssim(batch["source"], target, face),
            "psnr_mouth": psnr(out["image"], target, mouth),
        }

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict, stage: str) -> None:
        metrics = {k: v.mean() for k, v in self.face_metrics(batch).items()}
        metrics["psnr_mouth_without_lip_branch"] = self.face_metrics(batch, lip_scale=0.0)["psnr_mouth"].mean()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=len(batch["source"]),
                      sync_dist=True)

    def _write_grid(self, batch: dict, out: dict) -> None:
        """source | driving PT | flow | occlusion | output | target of the first pair, as PNG."""
        if self.trainer is None or not self.trainer.is_global_zero or self.logger is None or not self.logger.log_dir:
            return
        import cv2

        h = batch["source"].shape[-1]
        flow_rgb = flow_to_rgb(out["flow"][:1].detach())
        panels = [batch["source"][:1], out["pt_driving"][:1], flow_rgb, out["occlusion"][:1].expand(-1, 3, -1, -1),
                  out["image"][:1], batch["driving"][:1]]
        panels = [torch.nn.functional.interpolate(p.detach().float(), size=(h, h)) for p in panels]
        grid = (torch.cat(panels, dim=-1)[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        path = Path(self.logger.log_dir) / "images" / f"step{self.global_step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _box_mask(points: torch.Tensor, size: int, margin: int) -> torch.Tensor:
    """float [B, 1, size, size]: 1 inside each point set's bounding box grown by ``margin`` px."""
    lo = (points.amin(1) - margin).floor().clamp(0, size)  # [B, 2]
    hi = (points.amax(1) + margin).ceil().clamp(0, size)
    axis = torch.arange(size, device=points.device)
    inside_x = (axis[None] >= lo[:, :1]) & (axis[None] < hi[:, :1])  # [B, S]
    inside_y = (axis[None] >= lo[:, 1:]) & (axis[None] < hi[:, 1:])
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None].float()

