"""``vividtalk bench audio2mesh``: seconds to turn speech into driven meshes.

The whole of stage 1 at inference on ``seconds`` of audio: the audio encoders (Whisper tiny.en
with its pretrained weights, or log-mel, for the expression network; log-mel for the pose
mapper), the style from the identity, the autoregressive multi-branch transformer
(blendshapes + lip offsets, with and without the key/value cache), the pose mapper querying
the codebook step by step and the decoder, and the assembly
``M_d = (S + alpha U_id + beta U_exp + O_lip) (x) P``. The stage-1 networks are randomly
initialised at the size of a recipe (speed does not depend on the weights).
"""

from __future__ import annotations

import statistics
import time

import torch

# Network sizes of the recipes (tests/test_stage1_recipes.py checks them against stages/*.yaml).
SIZES = {
    "demo": {  # stages/cpu/*.yaml
        "network": dict(audio_dim=384, style_dim=64, d_model=128, num_layers=2, num_heads=4, ffn_dim=256,
                        max_frames=512, num_audio_layers=2, audio_lookahead=2, audio_context=8, input_dropout=0.5),
        "style": dict(style_dim=64, hidden_dim=128),
        "vqvae": dict(hidden_dim=64, code_dim=32, codebook_size=128, downsample=4, num_layers=2),
        "mapper": dict(audio_dim=128, style_dim=64, code_dim=32, downsample=4, d_model=128, num_layers=2),
        "logmel": dict(out_dim=128, hidden_dim=128),  # the log-mel front end (expression: overlay; pose mapper)
    },
    "paper": {  # stages/*.yaml
        "network": dict(audio_dim=384, style_dim=128, d_model=256, num_layers=3, num_heads=4, ffn_dim=1024,
                        max_frames=1024, num_audio_layers=2, audio_lookahead=2, audio_context=8, input_dropout=0.5),
        "style": dict(style_dim=128, hidden_dim=256),
        "vqvae": dict(hidden_dim=128, code_dim=64, codebook_size=256, downsample=4, num_layers=2),
        "mapper": dict(audio_dim=256, style_dim=128, code_dim=64, downsample=4, d_model=256, num_layers=3),
        "logmel": dict(out_dim=256, hidden_dim=256),
    },
}


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``fn()`` over ``repeats`` runs (after one warm-up), and its last result."""
    times, out = [], fn()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


ENCODERS = ("whisper", "logmel")


def _expression_encoder(name: str, logmel: dict) -> torch.nn.Module:
    from ..audio import LogMelEncoder

    if name == "whisper":
        from ..audio import PretrainedWhisperEncoder

        return PretrainedWhisperEncoder(window_seconds=10.0)
    if name == "logmel":
        return LogMelEncoder(**logmel)
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


def bench_audio2mesh(device: str = "cpu", repeats: int = 5, seconds: float = 10.0, size: str = "demo",
                     batch_size: int = 1, encoder: str = "whisper") -> dict:
    """Time stage 1 on ``seconds`` of speech (16 kHz) for ``batch_size`` sequences, audio
    encoders included (``encoder``: the expression network's, "whisper" or "logmel")."""
    from ..audio import LogMelEncoder
    from ..face import FaceModel
    from ..face.pose import apply_pose
    from .pose_mapper import PoseMapper, generate_pose
    from .pose_repr import features_to_pose
    from .pose_vqvae import PoseVQVAE
    from .style_encoder import StyleEncoder
    from .transformer import MultiBranchTransformer

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    dev, cfg = torch.device(device), SIZES[size]
    torch.manual_seed(0)
    face = FaceModel.default().to(dev)
    audio_encoder = _expression_encoder(encoder, cfg["logmel"]).to(dev).eval()
    network = MultiBranchTransformer(**{**cfg["network"], "audio_dim": audio_encoder.feature_dim},
                                     dropout=0.0).to(dev).eval()
    style_encoder = StyleEncoder(**cfg["style"]).to(dev).eval()
    pose_encoder = LogMelEncoder(out_dim=cfg["mapper"]["audio_dim"], hidden_dim=cfg["logmel"]["hidden_dim"]).to(dev)
    vqvae, mapper = PoseVQVAE(**cfg["vqvae"]).to(dev).eval(), PoseMapper(**cfg["mapper"]).to(dev).eval()
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
        out = generate_pose(mapper, vqvae, pose_encoder.eval()(wav), style_encoder(identity),
                            torch.zeros(batch_size, 6, device=dev))
        return features_to_pose(out["features"], reference)  # [B, T, 7]

    def whole() -> torch.Tensor:
        expr, poses = expression(), pose()
        mesh = face.assemble(expr["beta"], identity=identity[:, None], lip_offsets=expr["lip_offsets"])
        return apply_pose(mesh, poses)  # [B, T, V, 3]

    with torch.no_grad():
        total_s, meshes = _timed(whole, dev, repeats)
        encoder_s, features = _timed(lambda: audio_encoder(wav), dev, repeats)
        expr_s, _ = _timed(lambda: expression(features=features), dev, repeats)
        pose_s, _ = _timed(pose, dev, repeats)
        uncached_s, _ = _timed(lambda: expression(use_cache=False, features=features), dev, max(1, repeats // 5))
    params = sum(p.numel() for m in (network, style_encoder, vqvae, mapper, pose_encoder) for p in m.parameters())
    return {
        "benchmark": "audio2mesh", "device": str(dev), "size": size, "encoder": encoder, "parameters": params,
        "encoder_parameters": sum(p.numel() for p in audio_encoder.parameters()),
        "audio_seconds": seconds, "frames": frames, "batch_size": batch_size,
        "output_shape": list(meshes.shape),
        "seconds_total": total_s, "seconds_audio_encoder": encoder_s, "encoder_share": encoder_s / total_s,
        "seconds_expression_cached": expr_s, "seconds_expression_uncached": uncached_s,
        "seconds_pose": pose_s, "cache_speedup": uncached_s / expr_s,
        "realtime_factor": seconds * batch_size / total_s, "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
    }
