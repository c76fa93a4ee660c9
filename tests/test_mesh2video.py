"""Stage 2, Mesh-to-Video: conditioning, networks, losses, metrics and the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vividtalk.eval.image import psnr, ssim
from vividtalk.mesh2video.blocks import warp
from vividtalk.mesh2video.conditioning import (
    gaussian_heatmaps,
    lip_heatmap_difference,
    compose_texture,
    outer_texture,
)
from vividtalk.mesh2video.mesh_flow import MeshFlow
from vividtalk.mesh2video.discriminator import MultiScaleDiscriminator
from vividtalk.mesh2video.generator import WarpingGenerator
from vividtalk.mesh2video.losses import PerceptualLoss, feature_matching_loss, kl_loss
from vividtalk.mesh2video.module import Mesh2VideoModule
from vividtalk.mesh2video.motion_vae import DualBranchMotionVAE
from vividtalk.mesh2video.vgg import VGG19Features
from vividtalk.render import get_rasterizer

SIZE, MOTION = 64, 16  # small images for the tests


pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: fastest, reproducible


def small_module(mesh_flow: bool = True, **kwargs) -> Mesh2VideoModule:
    torch.manual_seed(0)
    vae = DualBranchMotionVAE(image_size=SIZE, motion_size=MOTION, latent_size=4, channels=16, latent_channels=8,
                              lip_channels=8, hourglass_channels=8, hourglass_blocks=2, mesh_flow=mesh_flow)
    gen = WarpingGenerator(image_size=SIZE, motion_size=MOTION, channels=16, refine_channels=8)
    disc = MultiScaleDiscriminator(num_scales=2, in_channels=6, channels=8, num_layers=2)
    args = dict(rasterizer="torch", image_every=0, adversarial_start=0)
    return Mesh2VideoModule(vae, gen, disc, **{**args, **kwargs})


@pytest.fixture(scope="module")
def full_pair_batch(tiny_synth_corpus):
    """Two (source, driving) pairs of a synthetic clip at its own 256x256 (the mouth closed in
    one frame, open in the other: pair 0 opens it, pair 1 closes it)."""
    from vividtalk.data import Clip, list_clips
    from vividtalk.data.stage2 import frame_fields

    clip = Clip(list_clips(tiny_synth_corpus)[0])
    jaw = clip.rows("beta")[:, 0]
    s, d = int(np.argmin(jaw)), int(np.argmax(jaw))
    items = [{**frame_fields("source", clip, s), **frame_fields("driving", clip, d)},
             {**frame_fields("source", clip, d), **frame_fields("driving", clip, s)}]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@pytest.fixture(scope="module")
def pair_batch(full_pair_batch):
    """The two pairs of ``full_pair_batch`` resized to SIZE (mouth open in the driving of pair 0)."""
    batch = dict(full_pair_batch)
    scale = SIZE / batch["source"].shape[-1]
    for side in ("source", "driving"):
        batch[side] = F.interpolate(batch[side], size=(SIZE, SIZE), mode="area")
        batch[f"{side}_vertices"] = batch[f"{side}_vertices"] * scale
        batch[f"{side}_lips"] = batch[f"{side}_lips"] * scale
        batch[f"{side}_mask"] = F.interpolate(batch[f"{side}_mask"][:, None].float(), size=(SIZE, SIZE))[:, 0].long()
    return batch


def test_heatmaps_peak_at_the_landmarks():
    points = torch.tensor([[[10.2, 20.7], [40.0, 5.5]], [[63.0, 63.0], [0.4, 31.9]]])  # [B=2, N=2, 2], 64 px image
    heat = gaussian_heatmaps(points, size=32, image_size=64, sigma=1.0)
    assert heat.shape == (2, 2, 32, 32) and heat.max() <= 1.0
    for b in range(2):
        for n in range(2):
            i, j = divmod(int(heat[b, n].argmax()), 32)
            x, y = (points[b, n] / 2).tolist()  # heatmap pixels; pixel (i, j) is centred at (j + .5, i + .5)
            assert abs(j + 0.5 - x) <= 0.5 and abs(i + 0.5 - y) <= 0.5
    diff = lip_heatmap_difference(points, points, 32, 64)
    assert diff.abs().max() == 0


def test_projected_texture_composes_ncc_inside_and_outer_region_outside(face_model, pair_batch):
    rasterizer = get_rasterizer("torch")
    outer = outer_texture(pair_batch["source"], pair_batch["source_mask"])
    assert outer[(pair_batch["source_mask"] == 2)[:, None].expand_as(outer)].abs().max() == 0
    rendered = MeshFlow(face_model).render(rasterizer, pair_batch["driving_vertices"], SIZE)
    pt, mask = compose_texture(rendered, outer), rendered["face"]
    assert pt.shape == (2, 3, SIZE, SIZE) and mask.shape == (2, 1, SIZE, SIZE)
    outside = (mask == 0).expand_as(pt)
    torch.testing.assert_close(pt[outside], outer[outside])
    from vividtalk.face.visualize import render_ncc

    ncc, ncc_mask = render_ncc(face_model, pair_batch["driving_vertices"], SIZE, SIZE, rasterizer)
    # The hole-closed mesh's rendering without its fans is the open mesh's rendering (a fan may
    # hide a few pixels of the mesh behind it).
    ncc_mask = ncc_mask.permute(0, 3, 1, 2)
    both = (mask == 1) & (ncc_mask == 1)
    assert (mask != ncc_mask).float().mean() < 0.005
    torch.testing.assert_close(pt[both.expand_as(pt)], ncc.permute(0, 3, 1, 2)[both.expand_as(pt)])
    # The rendered face and the clip's face label agree (same mesh).
    face = pair_batch["driving_mask"] == 2
    m = mask[:, 0] > 0
    assert ((m & face).sum() / (m | face).sum()) > 0.8


def test_zero_flow_and_full_visibility_is_the_identity_warp():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 32, 32, generator=g)
    torch.testing.assert_close(warp(image, torch.zeros(2, 2, 8, 8)), image, rtol=0, atol=1e-6)
    # A constant flow of k pixels samples k pixels to the right (away from the border).
    k = 3
    shifted = warp(image, torch.cat([torch.full((2, 1, 8, 8), 2.0 * k / 32), torch.zeros(2, 1, 8, 8)], dim=1))
    torch.testing.assert_close(shifted[..., : 32 - k], image[..., k:], rtol=0, atol=1e-5)
    gen = WarpingGenerator(image_size=32, motion_size=8, channels=8, refine_channels=4)
    out = gen(image, torch.zeros(2, 2, 8, 8), torch.ones(2, 1, 8, 8))
    torch.testing.assert_close(out["warped"], image, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["image"], image, rtol=0, atol=1e-6)  # the whole generator: the identity
    # Nothing visible: the painted frame alone.
    hidden = gen(image, torch.zeros(2, 2, 8, 8), torch.zeros(2, 1, 8, 8))
    torch.testing.assert_close(hidden["image"], hidden["painted"])
    assert 0 <= hidden["image"].min() and hidden["image"].max() <= 1


def test_motion_vae_outputs_and_occlusion_range():
    torch.manual_seed(0)
    vae = DualBranchMotionVAE(image_size=SIZE, motion_size=MOTION, latent_size=4, channels=16, latent_channels=8,
                              lip_channels=8, hourglass_channels=8, hourglass_blocks=2, mesh_flow=False)
    pt = torch.rand(2, 3, SIZE, SIZE)
    heat = torch.randn(2, 40, MOTION, MOTION)
    out = vae.eval()(pt, pt.flip(-1), heat)
    assert out["flow"].shape == (2, 2, MOTION, MOTION) and out["occlusion"].shape == (2, 1, MOTION, MOTION)
    assert 0 <= out["occlusion"].min() and out["occlusion"].max() <= 1
    assert out["mu"].shape == out["logvar"].shape == (2, 8, 4, 4)
    # Eval mode uses the mean (deterministic); training mode samples.
    torch.testing.assert_close(vae(pt, pt.flip(-1), heat)["flow"], out["flow"])
    assert not torch.equal(vae.train()(pt, pt.flip(-1), heat)["occlusion"], out["occlusion"])
    with pytest.raises(ValueError, match="lip heatmaps"):
        vae(pt, pt, torch.randn(2, 40, 32, 32))


def test_gradients_reach_both_branches_and_the_generator(pair_batch):
    module = small_module()
    # Nudge the zero-initialised flow heads so that gradients flow through them.
    for conv in (module.motion_vae.out, module.motion_vae.lip_branch.flow):
        torch.nn.init.normal_(conv.weight, std=1e-2)
    out = module(pair_batch)
    losses = module.generator_losses(out, pair_batch["driving"], adversarial=True)
    losses["loss"].backward()
    parts = {"face branch": module.motion_vae.face_encoder, "lip branch": module.motion_vae.lip_branch,
             "latent": module.motion_vae.fuse, "generator": module.generator}
    for name, part in parts.items():
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name
    assert set(losses) == {"perceptual", "kl", "adversarial", "feature_matching", "loss"}


def test_zeroing_the_lip_branch_changes_the_mouth(full_pair_batch):
    """The trained lip branch (the demo weights' stage 2) moves the mouth, not the face: removing
    it (``lip_scale=0``) changes the output frame far more inside the box around the source and
    driving lips than anywhere else, and most at the mouth. A change spread over the face (a
    flow that shifts the whole frame) would give a ratio near 1; lip landmarks drawn 70 px too high
    (heatmaps away from the mouth) give 0.6 and 0.3, with the largest change outside the box."""
    from vividtalk.pipeline import VividTalkPipeline

    module = VividTalkPipeline.from_pretrained().mesh2video.eval()
    batch = full_pair_batch
    with torch.no_grad():
        prepared = module.prepare_source(batch["source"], batch["source_mask"], batch["source_vertices"],
                                         batch["source_lips"])
        full, none = (module.animate(prepared, batch["driving_vertices"], batch["driving_lips"], lip_scale=s,
                                     sample=False) for s in (1.0, 0.0))
    assert none["lip_flow"].abs().max() == 0 and full["lip_flow"].abs().max() > 0
    change = (full["image"] - none["image"]).abs().mean(1)  # [B, H, W]
    size, margin = change.shape[-1], 8  # px: the heatmaps' sigma is 1.5 motion pixels (6 px here)
    lips = torch.cat([batch["source_lips"], batch["driving_lips"]], dim=1)  # [B, 2N, 2] pixels (x, y)
    axis = torch.arange(size) + 0.5  # pixel centres
    for b in range(len(change)):
        (x0, y0), (x1, y1) = (lips[b].amin(0) - margin).tolist(), (lips[b].amax(0) + margin).tolist()
        box = ((axis[:, None] >= y0) & (axis[:, None] <= y1)) & ((axis[None] >= x0) & (axis[None] <= x1))
        assert 0.02 < box.float().mean() < 0.1  # the mouth, a small part of the frame
        inside, outside = change[b][box].mean(), change[b][~box].mean()
        assert inside > 2 * outside, (b, float(inside), float(outside))  # measured: 8.9x, 3.0x
        assert box.flatten()[change[b].argmax()] and change[b].max() > 0.01, b  # the largest: at the mouth


def test_vgg_loads_torchvision_layout_weights(tmp_path):
    torch.manual_seed(0)
    reference = VGG19Features()
    state = {k: v + 0.01 for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # a whole-model checkpoint: ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = VGG19Features(path)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert [f.shape[1] for f in loaded(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]
    with pytest.raises(FileNotFoundError, match="VGG-19 weights not found"):
        VGG19Features(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        VGG19Features(tmp_path / "bad.pth")
    # The perceptual loss with these weights, and the fallback without: zero only for equal images.
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    for loss in (PerceptualLoss(path, scales=(1.0, 0.5)), PerceptualLoss(None)):
        assert loss(x, x) == 0 and loss(x, y) > 0
    assert PerceptualLoss(path).uses_vgg and not PerceptualLoss(None).uses_vgg
    # Fallback: the mean L1 over the pyramid (the full-resolution term checked exactly).
    torch.testing.assert_close(PerceptualLoss(None, scales=(1.0,))(x, y), (x - y).abs().mean())


def test_discriminator_and_gan_terms():
    disc = MultiScaleDiscriminator(num_scales=2, in_channels=6, channels=8, num_layers=2)
    x = torch.rand(2, 6, 32, 32)
    feats = disc(x)
    assert len(feats) == 2 and feats[0][-1].shape == (2, 1, 8, 8) and feats[1][-1].shape == (2, 1, 4, 4)
    assert feature_matching_loss(feats, feats) == 0 and feature_matching_loss(disc(x.flip(-1)), feats) > 0
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert kl_loss(mu, logvar) == 0 and kl_loss(mu + 1, logvar) == pytest.approx(0.5)


def test_psnr_and_ssim_against_references():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 48, 48, generator=g)
    b = (a + 0.1 * torch.randn(1, 3, 48, 48, generator=g)).clamp(0, 1)
    mse = float(((a - b) ** 2).mean())
    assert psnr(b, a).item() == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    ref = structural_similarity(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(), channel_axis=2,
                                gaussian_weights=True, sigma=1.5, data_range=1.0)
    assert ssim(b, a).item() == pytest.approx(ref, abs=1e-4)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # A mask restricts the average: the error only in the left half leaves the right half perfect.
    c = a.clone()
    c[..., :24] = b[..., :24]
    right = torch.zeros(1, 1, 48, 48)
    right[..., 30:] = 1
    assert ssim(c, a, right).item() == pytest.approx(1.0, abs=1e-6) and psnr(c, a, right).item() > 90


def test_an_untrained_model_starts_near_the_source_frame(pair_batch):
    with torch.no_grad():
        out = small_module()(pair_batch, sample=False)
    assert (out["image"] - pair_batch["source"]).abs().mean() < 0.05


@pytest.mark.parametrize("mesh_flow, fraction", [(False, 0.55), (True, 0.75)])
def test_a_few_hundred_steps_overfit_one_pair(pair_batch, mesh_flow, fraction):
    """The generator side alone (no adversary) on one pair: L_perc (fallback) falls below a
    fraction of its start: the source frame for the paper-literal variant, the source warped by
    the mesh flow (already close: a synthetic frame is a mesh-driven warp) with it."""
    module = small_module(adversarial_weight=0.0, mesh_flow=mesh_flow)
    params = list(module.motion_vae.parameters()) + list(module.generator.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    batch = {k: v[:1] for k, v in pair_batch.items()}
    losses = []
    for _ in range(200):
        out = module(batch)
        loss = module.generator_losses(out, batch["driving"], adversarial=False)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        losses.append(loss["perceptual"].item())
    assert min(losses[-10:]) < fraction * losses[0], (losses[0], min(losses[-10:]))


def test_self_reenactment_scores_the_clip_against_the_source_baseline(tiny_synth_corpus):
    from vividtalk.data import Clip, list_clips
    from vividtalk.mesh2video.evaluate import clip_pairs, self_reenactment

    torch.manual_seed(0)
    module = Mesh2VideoModule(
        DualBranchMotionVAE(channels=8, latent_channels=4, max_channels=8, lip_channels=4, hourglass_channels=4),
        WarpingGenerator(channels=8, refine_channels=4), MultiScaleDiscriminator(in_channels=6, channels=4),
        rasterizer="torch", image_every=0)
    path = list_clips(tiny_synth_corpus)[0]
    from vividtalk.eval.identity import DlibIdentity

    result = self_reenactment(module, [path], stride=20, progress=False, identity=DlibIdentity())
    clip = Clip(path)
    frames = list(range(20, len(clip), 20))
    assert result["frames"] == len(frames)
    batch = clip_pairs(clip, frames)
    assert torch.equal(batch["source"][0], batch["source"][-1])  # one source: the first frame
    face = (batch["driving_mask"] == 2)[:, None].float()
    assert result["psnr_source_baseline"] == pytest.approx(float(psnr(batch["source"], batch["driving"], face).mean()),
                                                           rel=1e-5)
    # Untrained, the model returns the source warped by the mesh flow: the synthetic frames are
    # mesh-driven warps of one photo, so it beats the source frame by far, and keeps the person.
    assert result["psnr"] > result["psnr_source_baseline"] + 3.0
    assert result["frames_without_face"] == 0
    assert result["identity_distance"] < 0.6
    assert result["identity_distance"] < result["identity_distance_source_baseline"] + 0.05


def test_a_prepared_source_drives_a_batch_like_pairs_do(pair_batch):
    """A video prepares its source once (animate) and gets what per-pair forward() gives."""
    module = small_module().eval()
    torch.nn.init.normal_(module.motion_vae.out.weight, std=1e-2)  # non-trivial flow
    one = {k: v[:1] for k, v in pair_batch.items() if k.startswith("source")}
    pairs = {**{k: v.expand(2, *v.shape[1:]) for k, v in one.items()},
             "driving_vertices": pair_batch["driving_vertices"], "driving_lips": pair_batch["driving_lips"]}
    with torch.no_grad():
        reference = module(pairs, sample=False)
        prepared = module.prepare_source(one["source"], one["source_mask"], one["source_vertices"], one["source_lips"])
        shared = module.animate(prepared, pair_batch["driving_vertices"], pair_batch["driving_lips"], sample=False)
    assert reference["flow"].abs().max() > 1e-3
    for key in ("pt_driving", "lip_heatmaps", "flow", "occlusion", "image"):
        torch.testing.assert_close(shared[key], reference[key], atol=1e-5, rtol=1e-5)
