"""``vividtalk bench audio2mesh``: seconds to turn speech into driven meshes.

The whole of stage 1 at inference on ``seconds`` of audio: the audio encoders (Whisper tiny.en
with its pretrained weights, or log-mel, for the expression network; log-mel for the pose
mapper), the style from the identity, the autoregressive multi-branch transformer
(blendshapes + lip offsets, with and without the key/value cache), the pose mapper querying
the codebook step by step and the decoder, and the assembly
``M_d = (S + alpha U_id + beta U_exp + O_lip) (x) P``. The networks are built from the stage
recipes of a size (``stages/``) with random weights (speed does not depend on the weights).

``motion_model="in_context"`` times MimicTalk's in-context model instead (``stages/in_context.yaml``):
the Whisper encoder, then the flow-matching sampler at its default ODE steps (midpoint), without a
style prompt and with a 10 s prompt under classifier-free guidance (two passes a step, batched).
"""

from __future__ import annotations

import torch

from .. import stages
from ..audio2mesh.pose_mapper import generate_pose
from ..audio2mesh.pose_repr import features_to_pose
from ..face import FaceModel
from ..face.pose import apply_pose
from .common import environment, median_seconds

# Each size is the stack of recipes it trains with: the base recipes, then this overlay folder.
OVERLAYS = {"demo": "cpu/", "paper": ""}
ENCODERS = ("whisper", "logmel")


def recipe_networks(size: str, encoder: str = "whisper") -> dict[str, torch.nn.Module]:
    """Stage 1's networks as the recipes of ``size`` build them (random weights, eval mode):
    ``audio_encoder`` (the expression network's: the recipe's Whisper, or its log-mel overlay
    for ``encoder="logmel"``), ``network``, ``style_encoder``, and the pose mapper recipe's
    ``mapper``, ``vqvae`` and ``pose_encoder``."""
    if size not in OVERLAYS:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(OVERLAYS)}")
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")

    def recipe(*names: str) -> dict:
        overlays = [OVERLAYS[size] + name for name in names] if OVERLAYS[size] else []
        return stages.model_args(*names, *overlays)

    expression = recipe("audio2mesh.yaml", *(["audio2mesh_logmel.yaml"] if encoder == "logmel" else []))
    pose = recipe("pose_mapper.yaml")
    networks = {name: stages.build(expression[name]) for name in ("audio_encoder", "network", "style_encoder")}
    networks.update(mapper=stages.build(pose["mapper"]), vqvae=stages.build(pose["vqvae"]),
                    pose_encoder=stages.build(pose["audio_encoder"]))
    return {name: net.eval() for name, net in networks.items()}


def bench_audio2mesh(device: str = "cpu", repeats: int = 5, seconds: float = 10.0, size: str = "demo",
                     batch_size: int = 1, encoder: str = "whisper", motion_model: str = "vividtalk") -> dict:
    """Time stage 1 on ``seconds`` of speech (16 kHz) for ``batch_size`` sequences, audio
    encoders included (``encoder``: the expression network's, "whisper" or "logmel";
    ``motion_model``: "vividtalk" or "in_context", see the module docstring)."""
    if motion_model == "in_context":
        return bench_in_context(device, repeats, seconds, size, batch_size)
    if motion_model != "vividtalk":
        raise ValueError(f"unknown motion_model {motion_model!r}; choose vividtalk or in_context")
    dev = torch.device(device)
    torch.manual_seed(0)
    nets = {k: v.to(dev) for k, v in recipe_networks(size, encoder).items()}
    audio_encoder, network, style_encoder = nets["audio_encoder"], nets["network"], nets["style_encoder"]
    face = FaceModel.default().to(dev)
    frames = int(round(seconds * 25))
    if frames > network.max_frames:
        raise ValueError(f"{seconds} s is {frames} frames, more than the network's max_frames={network.max_frames}")
    wav = 0.1 * torch.randn(batch_size, frames * 640, device=dev)
    identity = face.mean.expand(batch_size, -1, -1)
    reference = torch.tensor([0.0, 0.0, 0.0, 128.0, 128.0, 0.0, 150.0], device=dev).expand(batch_size, 7)

    def expression(use_cache: bool = True, features: torch.Tensor | None = None) -> dict:
        features = audio_encoder(wav) if features is None else features
        return network.generate(features, style_encoder(identity), use_cache=use_cache)

    def pose() -> torch.Tensor:
        out = generate_pose(nets["mapper"], nets["vqvae"], nets["pose_encoder"](wav), style_encoder(identity),
                            torch.zeros(batch_size, 6, device=dev))
        return features_to_pose(out["features"], reference)  # [B, T, 7]

    def whole() -> torch.Tensor:
        expr, poses = expression(), pose()
        mesh = face.assemble(expr["beta"], identity=identity[:, None], lip_offsets=expr["lip_offsets"])
        return apply_pose(mesh, poses)  # [B, T, V, 3]

    with torch.no_grad():
        total_s, meshes = median_seconds(whole, dev, repeats)
        encoder_s, features = median_seconds(lambda: audio_encoder(wav), dev, repeats)
        expr_s, _ = median_seconds(lambda: expression(features=features), dev, repeats)
        pose_s, _ = median_seconds(pose, dev, repeats)
        uncached_s, _ = median_seconds(lambda: expression(use_cache=False, features=features), dev,
                                       max(1, repeats // 5))
    stage1 = ("network", "style_encoder", "vqvae", "mapper", "pose_encoder")
    return {
        "benchmark": "audio2mesh", "device": str(dev), "size": size, "encoder": encoder,
        "parameters": sum(p.numel() for k in stage1 for p in nets[k].parameters()),
        "encoder_parameters": sum(p.numel() for p in audio_encoder.parameters()),
        "audio_seconds": seconds, "frames": frames, "batch_size": batch_size,
        "output_shape": list(meshes.shape),
        "seconds_total": total_s, "seconds_audio_encoder": encoder_s, "encoder_share": encoder_s / total_s,
        "seconds_expression_cached": expr_s, "seconds_expression_uncached": uncached_s,
        "seconds_pose": pose_s, "cache_speedup": uncached_s / expr_s,
        "realtime_factor": seconds * batch_size / total_s, "repeats": repeats, **environment(),
    }


def bench_in_context(device: str = "cpu", repeats: int = 5, seconds: float = 10.0, size: str = "demo",
                     batch_size: int = 1, prompt_seconds: float = 10.0) -> dict:
    """Time the in-context motion model (recipe ``in_context.yaml`` of ``size``, random weights)
    on ``seconds`` of speech, without a prompt and with a ``prompt_seconds`` prompt (guided; at most
    the recipe's ``max_prompt`` frames, as ``generate`` uses), chunked as the recipe says."""
    from ..audio2mesh.flow_matching import sample_chunked

    if size not in OVERLAYS:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(OVERLAYS)}")
    names = ["in_context.yaml"] + ([OVERLAYS[size] + "in_context.yaml"] if OVERLAYS[size] else [])
    args = stages.model_args(*names)
    dev = torch.device(device)
    torch.manual_seed(0)
    network = stages.build(args["network"]).eval().to(dev)
    encoder = stages.build(args["audio_encoder"]).eval().to(dev)
    steps, cfg = args.get("steps", 10), args.get("cfg_scale", 2.0)
    overlap = args.get("overlap", 25)  # the recipe's chunking, and its longest prompt (what generate() uses)
    frames, p = int(round(seconds * 25)), min(int(round(prompt_seconds * 25)), args.get("max_prompt", 250))
    wav = 0.1 * torch.randn(batch_size, frames * 640, device=dev)
    prompt_audio = torch.randn(batch_size, p, network.audio_dim, device=dev)
    prompt_motion = torch.randn(batch_size, p, network.motion_dim, device=dev)
    chunk = max(1, min(args.get("chunk", 200), network.max_frames - p - overlap))

    def run(prompted: bool) -> torch.Tensor:
        features = encoder(wav)
        extra = (prompt_audio, prompt_motion) if prompted else (None, None)
        return sample_chunked(network, features, *extra, chunk=chunk, overlap=overlap, steps=steps, cfg_scale=cfg)

    with torch.no_grad():
        plain_s, out = median_seconds(lambda: run(False), dev, repeats)
        prompted_s, _ = median_seconds(lambda: run(True), dev, repeats)
        encoder_s, _ = median_seconds(lambda: encoder(wav), dev, repeats)
    return {
        "benchmark": "audio2mesh", "motion_model": "in_context", "device": str(dev), "size": size,
        "parameters": sum(q.numel() for q in network.parameters()), "audio_seconds": seconds, "frames": frames,
        "batch_size": batch_size, "steps": steps, "method": "midpoint", "cfg_scale": cfg,
        "prompt_seconds": p / 25, "chunk": chunk, "overlap": overlap, "output_shape": list(out.shape),
        "seconds_total": plain_s, "seconds_total_with_prompt": prompted_s, "seconds_audio_encoder": encoder_s,
        "realtime_factor": seconds * batch_size / plain_s, "repeats": repeats, **environment(),
    }
