"""Audio-to-pose mapper ``Phi_map``: stage B (mapping) of VividTalk's head-pose codebook.

``P^_r^{1:f} = D(Z_q) = D(q(Phi_map(A, z_style, P^0)))``: the mapper turns the audio
features A, the speaker's style embedding ``z_style`` and the initial pose ``P^0`` into
pre-quantisation latents ``Z^`` at the codebook's rate (one per ``downsample`` frames); the
frozen codebook quantises them and the frozen decoder of the stage-A
:class:`~vividtalk.audio2mesh.pose_vqvae.PoseVQVAE` turns them into pose features. Trained with

    L_map = ||P_r^{1:f} - P^_r^{1:f}||^2 + ||Z^ - sg(Z_q)||^2 + ce_weight * CE(q~(Z^), E(P_r))

(see :func:`map_to_pose`), the first term reaching the mapper through the straight-through
estimator.

Why the last term and the autoregression: head motion is one-to-many given the audio, and a
deterministic regression to the pose collapses onto the mean, a still head (measured: the
generated per-axis std fell to 1-20 % of the real one on the synthetic corpus). So the
mapper *queries* the codebook as a distribution: ``q~(Z^)`` is the softmax over codes of
``-||Z^ - z_k||^2 * s`` (a learned scale ``s``), trained by cross-entropy against the codes
that the frozen encoder assigns to the real poses; latent step k is conditioned on the code
of step k - 1 (teacher-forced in training), and generation samples code after code
(:func:`generate_codes`), so consecutive codes fit together. At ``temperature=0`` the
sampling becomes the paper's nearest-code quantisation.

``P^0`` is the pose feature (``pose_repr.pose_to_features``) of the sequence's first frame
relative to the reference pose of the sequence, [B, 6]. Training windows should use the clip's
reference frame (the source image of stage 2) as reference, so that ``P^0`` tells where the
window starts; at inference the video starts at the source image's own pose, so ``P^0`` is the
zero vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vividtalk.audio2mesh.attention import sinusoidal_encoding
from vividtalk.audio2mesh.pose_vqvae import PoseVQVAE


class PoseMapper(nn.Module):
    """``Phi_map(A, z_style, P^0) -> Z^``: a small causal transformer over latent steps.

    The audio is projected to ``d_model`` and pooled in time by a strided convolution
    (stride ``downsample``, kernel ``downsample + 2 * (downsample // 2)``) to the codebook's
    rate; latent step k's token is its pooled audio plus the embedding of the code chosen at
    step k - 1 (a learned start vector at k = 0) plus a sine/cosine position; ``z_style`` and
    ``P^0`` become two conditioning tokens prepended to them (each with a learned type
    embedding). Step k attends to the conditioning tokens and to steps <= k; its output is
    projected to ``code_dim``.

    Args:
        audio_dim: size of an audio feature (one per 25 fps frame).
        style_dim: size of ``z_style``.
        pose_dim: size of a pose feature (6).
        code_dim: size of the VQ-VAE's latents.
        downsample: frames per latent (the VQ-VAE's ``downsample``).
        d_model: transformer width.
        num_layers: transformer encoder layers.
        num_heads: attention heads.
        dropout: dropout inside the transformer.
    """

    def __init__(
        self,
        audio_dim: int,
        style_dim: int = 128,
        pose_dim: int = 6,
        code_dim: int = 64,
        downsample: int = 4,
        d_model: int = 256,
        num_layers: int = 3,
        num_heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even, got {d_model}")
        self.downsample, self.code_dim = downsample, code_dim
        self.audio_proj = nn.Linear(audio_dim, d_model)
        pad = downsample // 2
        self.pool = nn.Conv1d(d_model, d_model, downsample + 2 * pad, stride=downsample, padding=pad)
        self.style_proj = nn.Linear(style_dim, d_model)
        self.pose_proj = nn.Linear(pose_dim, d_model)
        self.token_type = nn.Parameter(torch.randn(3, d_model) * 0.02)  # style, pose, audio
        self.code_proj = nn.Linear(code_dim, d_model)
        self.start_code = nn.Parameter(torch.randn(code_dim) * 0.02)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # s of the code distribution
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, code_dim)

    def forward(self, audio: torch.Tensor, z_style: torch.Tensor, pose0: torch.Tensor,
                previous: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map audio to pre-quantisation pose latents, given the codes of the previous steps.

        Args:
            audio: [B, T, audio_dim] float audio features A, T a multiple of ``downsample``.
            z_style: [B, style_dim] float style embedding.
            pose0: [B, pose_dim] float initial pose feature ``P^0`` (zeros at inference).
            previous: [B, n, code_dim], row k the code vector chosen at step k - 1 (row 0 is
                ignored: the learned start vector), n <= T / downsample: only the first n steps
                are computed.
        Returns:
            dict with ``latents`` [B, n, code_dim], the ``Z^`` of ``L_map``; step k depends on
            ``previous[:, :k + 1]`` and the audio, never on later codes.
        """
        return self.decode(self.audio_tokens(audio), z_style, pose0, previous)

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio features [B, T, audio_dim], T a multiple of ``downsample`` -> pooled tokens
        [B, T / downsample, d_model] (computed once per sequence by :func:`generate_codes`)."""
        if audio.shape[1] % self.downsample:
            raise ValueError(f"audio length {audio.shape[1]} is not a multiple of downsample={self.downsample}")
        x = self.audio_proj(audio)  # [B, T, d]
        return self.pool(x.transpose(1, 2)).transpose(1, 2)  # [B, T', d]

    def decode(self, tokens: torch.Tensor, z_style: torch.Tensor, pose0: torch.Tensor,
               previous: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`forward` from the pooled audio tokens [B, T', d_model] of :meth:`audio_tokens`."""
        n = previous.shape[1]
        if n > tokens.shape[1]:
            raise ValueError(f"{n} previous codes for {tokens.shape[1]} latent steps")
        codes = torch.cat([self.start_code.expand(len(previous), 1, -1), previous[:, 1:]], dim=1)  # [B, n, C]
        x = tokens[:, :n] + self.code_proj(codes) + self.token_type[2]
        x = x + sinusoidal_encoding(n, x.shape[2]).to(x)
        style = self.style_proj(z_style) + self.token_type[0]  # [B, d]
        pose = self.pose_proj(pose0) + self.token_type[1]  # [B, d]
        tokens = torch.cat([style[:, None], pose[:, None], x], dim=1)  # [B, 2 + n, d]
        blocked = torch.ones(n + 2, n + 2, dtype=torch.bool, device=x.device).triu(1)  # True: masked out
        blocked[:, :2] = False  # everyone sees the conditioning tokens
        h = self.norm(self.transformer(tokens, mask=blocked))[:, 2:]  # [B, n, d]
        return {"latents": self.out(h)}  # [B, n, code_dim]

    def code_logits(self, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (up to a constant) of every code: ``-s ||z^ - z_k||^2``.

        Args:
            latents: [..., code_dim] (L2-normalised when the codebook is); codes: [K, code_dim].
        Returns:
            [..., K].
        """
        dist2 = (latents[..., None, :] - codes).pow(2).sum(-1)  # [..., K]
        return -self.log_scale.exp() * dist2


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad [B, T, C] in time to a multiple of ``multiple``."""
    pad = -x.shape[1] % multiple
    return F.pad(x.transpose(1, 2), (0, pad), mode="replicate").transpose(1, 2) if pad else x


def _shift_codes(codes: torch.Tensor) -> torch.Tensor:
    """Code vectors [B, T', C] -> the previous step's [B, T', C] (row 0: zeros, i.e. the start)."""
    return torch.cat([torch.zeros_like(codes[:, :1]), codes[:, :-1]], dim=1)


def map_to_pose(
    mapper: PoseMapper,
    vqvae: PoseVQVAE,
    audio: torch.Tensor,
    z_style: torch.Tensor,
    pose0: torch.Tensor,
    target: torch.Tensor,
    ce_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Training pass of the mapper (teacher-forced on the codes of ``target``) and ``L_map``.

    The caller freezes the VQ-VAE (``vqvae.requires_grad_(False).eval()``); the codebook is
    never updated here. Gradients reach the mapper through the straight-through estimator and
    the cross-entropy. Any length T works: audio and target are replicate-padded to a multiple
    of ``downsample`` and the decoded poses are cropped back to T.

    Args:
        mapper, vqvae: the networks (``mapper.downsample == vqvae.downsample``).
        audio: [B, T, audio_dim]; z_style: [B, style_dim]; pose0: [B, pose_dim].
        target: [B, T, pose_dim] ground-truth pose features ``P_r^{1:f}``.
        ce_weight: weight of the cross-entropy term.
    Returns:
        dict with ``features`` [B, T, pose_dim] (original units, nearest-code decoding),
        ``indices`` [B, T'] int64 (nearest codes of ``Z^``), ``target_indices`` [B, T'] (codes of
        the real poses), ``latents`` (``Z^``) [B, T', code_dim], scalars ``latent_loss``
        ``||Z^ - sg(Z_q)||^2``, ``pose_loss`` (MSE in the VQ-VAE's standardised units),
        ``code_loss`` (cross-entropy), ``code_accuracy`` and ``loss`` = ``L_map``.
    """
    if mapper.downsample != vqvae.downsample:
        raise ValueError(f"mapper.downsample={mapper.downsample} != vqvae.downsample={vqvae.downsample}")
    length = audio.shape[1]
    audio, padded = _pad_to(audio, mapper.downsample), _pad_to(target, mapper.downsample)
    with torch.no_grad():
        target_indices = vqvae.quantize(vqvae.encode(padded), update=False)["indices"]  # [B, T']
    codes = vqvae.codebook.codes()
    previous = _shift_codes(codes[target_indices])  # [B, T', C]
    latents = mapper(audio, z_style, pose0, previous)["latents"]  # [B, T', C]
    vq = vqvae.quantize(latents, update=False)
    rec = vqvae.decode_normalized(vq["z_q"])[:, :length]  # [B, T, 6] standardised
    logits = mapper.code_logits(vqvae.codebook.project(latents), codes)  # [B, T', K]
    code_loss = F.cross_entropy(logits.flatten(0, 1), target_indices.flatten())
    pose_loss = F.mse_loss(rec, vqvae.normalize(target))
    return {
        "features": vqvae.denormalize(rec),
        "indices": vq["indices"],
        "target_indices": target_indices,
        "latents": latents,
        "latent_loss": vq["commitment_loss"],  # ||Z^ - sg(Z_q)||^2
        "pose_loss": pose_loss,
        "code_loss": code_loss,
        "code_accuracy": (logits.argmax(-1) == target_indices).float().mean(),
        "loss": pose_loss + vq["commitment_loss"] + ce_weight * code_loss,
    }


@torch.no_grad()
def generate_codes(
    mapper: PoseMapper,
    vqvae: PoseVQVAE,
    audio: torch.Tensor,
    z_style: torch.Tensor,
    pose0: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Query the codebook step by step: code k is drawn from ``softmax(logits / temperature)``
    given the codes before it (``temperature=0``: the nearest code, VividTalk's quantisation).

    Args:
        audio: [B, T, audio_dim], T a multiple of ``downsample``; z_style [B, style_dim];
            pose0 [B, pose_dim]; generator: for reproducible sampling (any device: the
            codes are drawn on the generator's).
    Returns:
        code indices [B, T / downsample] int64.
    """
    codes = vqvae.codebook.codes()
    tokens = mapper.audio_tokens(audio)  # [B, T', d]
    previous = codes.new_zeros(audio.shape[0], 1, codes.shape[1])  # row 0: the start (ignored)
    chosen = []
    for k in range(tokens.shape[1]):
        latent = mapper.decode(tokens, z_style, pose0, previous)["latents"][:, -1]  # [B, C]
        logits = mapper.code_logits(vqvae.codebook.project(latent), codes)  # [B, K]
        if temperature <= 0:
            index = logits.argmax(-1)
        else:
            probs = F.softmax(logits / temperature, -1)  # [B, K]
            if generator is not None:  # drawn where the generator lives (a CPU one may drive a GPU model)
                probs = probs.to(generator.device)
            index = torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)
        chosen.append(index)
        previous = torch.cat([previous, codes[index][:, None]], dim=1)
    return torch.stack(chosen, dim=1)  # [B, T']


@torch.no_grad()
def generate_pose(
    mapper: PoseMapper,
    vqvae: PoseVQVAE,
    audio: torch.Tensor,
    z_style: torch.Tensor,
    pose0: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Inference: pose features [B, T, 6] for audio [B, T, audio_dim] of any length T.

    Returns:
        dict with ``features`` [B, T, pose_dim] (original units; relative to the reference
        pose, see ``pose_repr.features_to_pose``) and ``indices`` [B, T'] int64.
    """
    length = audio.shape[1]
    indices = generate_codes(mapper, vqvae, _pad_to(audio, mapper.downsample), z_style, pose0, temperature, generator)
    return {"features": vqvae.decode(indices)[:, :length], "indices": indices}
