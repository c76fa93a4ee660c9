"""Stage 2's training output: image grids by optimiser step, and the one warning that the
perceptual loss runs without VGG-19 weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vividtalk.face.model import mean_face_in_crop
from vividtalk.mesh2video.discriminator import MultiScaleDiscriminator
from vividtalk.mesh2video.generator import WarpingGenerator
from vividtalk.mesh2video.losses import PerceptualLoss
from vividtalk.mesh2video.module import Mesh2VideoModule
from vividtalk.mesh2video.motion_vae import DualBranchMotionVAE

SIZE, MOTION = 64, 16

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: fastest, reproducible


def tiny_module(**kwargs) -> Mesh2VideoModule:
    torch.manual_seed(0)
    vae = DualBranchMotionVAE(image_size=SIZE, motion_size=MOTION, latent_size=4, channels=8, latent_channels=4,
                              max_channels=8, lip_channels=4, hourglass_channels=4, hourglass_blocks=1)
    gen = WarpingGenerator(image_size=SIZE, motion_size=MOTION, channels=8, refine_channels=4)
    disc = MultiScaleDiscriminator(num_scales=1, in_channels=6, channels=4, num_layers=2)
    return Mesh2VideoModule(vae, gen, disc, rasterizer="torch", **kwargs)


def pairs(face, count: int) -> list[dict]:
    """``count`` training pairs of the mean face in a SIZE crop (the driving mouth open)."""
    verts = mean_face_in_crop(face, SIZE)[0]
    lips = face.lip_contour()
    driving = verts.clone()
    driving[face.lip_indices, 1] += 1.0
    mask = torch.zeros(SIZE, SIZE, dtype=torch.int64)
    mask[15:50, 18:46] = 2
    torch.manual_seed(1)
    return [{"source": torch.rand(3, SIZE, SIZE), "driving": torch.rand(3, SIZE, SIZE), "source_mask": mask,
             "source_vertices": verts, "source_lips": verts[lips, :2], "driving_vertices": driving,
             "driving_lips": driving[lips, :2]} for _ in range(count)]


class GridSteps(pl.Callback):
    """The global step after each training batch."""

    def __init__(self) -> None:
        self.after: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(trainer.global_step)


def test_image_grids_follow_the_global_step_across_epochs(tmp_path):
    """Three batches an epoch, two epochs, a grid every 2 optimiser steps; the discriminator
    joins at step 3, after which a batch is two optimiser steps. One grid is written per
    interval of 2 global steps, named by the step: batch_idx % 2 == 0 would have written the
    batches 0 and 2 of each epoch instead (steps 1, 3, 5, 9)."""
    module = tiny_module(image_every=2, adversarial_start=3)
    data = torch.utils.data.DataLoader(pairs(module.face, 3), batch_size=1)
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    steps = GridSteps()
    trainer = pl.Trainer(max_epochs=2, logger=logger, callbacks=[steps], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, data)
    assert steps.after == [1, 2, 3, 5, 7, 9]  # optimiser steps after each batch
    grids = sorted(Path(logger.log_dir, "images").glob("step*.png"))
    assert [int(p.stem[4:]) for p in grids] == [1, 2, 5, 7, 9]


def test_perceptual_loss_warns_once_per_instance_without_vgg_weights():
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # not the default once-per-line filter: count every call
        losses = [PerceptualLoss(None, scales=(1.0,)) for _ in range(2)]
        assert not caught  # building one does not warn: inference never computes the loss
        for loss in losses:
            for _ in range(3):
                loss(x, y)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2  # one per instance, at its first forward
    assert "no VGG-19 weights" in messages[0] and "L1" in messages[0]
    assert "vgg19-dcbb9e9d.pth" in messages[0] and "--model.init_args.vgg_weights" in messages[0]


def test_perceptual_loss_with_vgg_weights_does_not_warn(tmp_path):
    from vividtalk.mesh2video.vgg import VGG19Features

    path = tmp_path / "vgg19.pth"
    torch.save(VGG19Features().state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PerceptualLoss(path, scales=(1.0,))(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
