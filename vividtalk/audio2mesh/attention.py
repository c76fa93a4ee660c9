"""Attention building blocks of the stage-1 multi-branch transformer (docs/architecture.md, "Stage 1").

Small pieces shared by the audio encoder and the three autoregressive branches of
:class:`vividtalk.audio2mesh.transformer.MultiBranchTransformer`:

- :func:`sinusoidal_encoding`: fixed positional encoding over video frames;
- :func:`alignment_mask`: which key frame each query frame may attend to (causal
  self-attention, and FaceFormer-style audio alignment: frame f sees audio frames <= f);
- :class:`KVCache`: the explicit per-layer context of incremental decoding;
- :class:`MultiHeadAttention` and :class:`TransformerLayer` (pre-LayerNorm).

Frames are the 25 fps video frames; every sequence tensor is float ``[B, T, D]`` on the
device of the module's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_encoding(num_positions: int, dim: int) -> torch.Tensor:
    """Transformer sine/cosine positional encoding.

    Returns:
        float32 tensor [num_positions, dim] on the CPU; row t encodes frame t.
    """
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]  # [N, 1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table  # [N, D]


def alignment_mask(
    num_queries: int,
    num_keys: int,
    query_start: int = 0,
    lookahead: int = 0,
    device: torch.device | None = None,
    context: int | None = None,
) -> torch.Tensor:
    """Boolean attention mask, True where query i may attend key frame j.

    Query i is frame ``f = query_start + i``; keys are frames ``0 .. num_keys - 1``; the rule is
    ``f - context <= j <= f + lookahead`` (no lower bound when ``context`` is None). With
    ``lookahead=0`` and no context this is the causal mask of autoregressive self-attention;
    with a small context it is the audio alignment of the cross-attention (FaceFormer-style):
    frame f sees only the audio features of frames near f.

    Returns:
        bool tensor [num_queries, num_keys] on ``device``.
    """
    i = torch.arange(num_queries, device=device)[:, None]  # [Tq, 1]
    j = torch.arange(num_keys, device=device)[None, :]  # [1, Tk]
    allowed = j <= i + (query_start + lookahead)  # [Tq, Tk]
    if context is not None:
        allowed &= j >= i + (query_start - context)
    return allowed


@dataclass
class KVCache:
    """Keys and values of the frames already decoded by one self-attention layer.

    With ``capacity`` (the number of frames to decode) and autograd off, new keys/values are
    written into buffers allocated once; otherwise (or with autograd on, which forbids those
    in-place writes) they are concatenated.

    Attributes:
        k, v: float tensors [B, H, >= length, D / H], or None before the first step.
        length: frames cached so far.
        capacity: frames to preallocate (0: concatenate).
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    length: int = 0
    capacity: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the keys/values [B, H, n, D / H] of n new frames; returns all [B, H, length, D / H]."""
        n, start = k.shape[2], self.length
        self.length += n
        if self.capacity >= self.length and not torch.is_grad_enabled():
            if self.k is None:
                shape = (*k.shape[:2], self.capacity, k.shape[3])
                self.k, self.v = k.new_empty(shape), v.new_empty(shape)
            self.k[:, :, start : self.length] = k
            self.v[:, :, start : self.length] = v
            return self.k[:, :, : self.length], self.v[:, :, : self.length]
        self.k = k if self.k is None else torch.cat([self.k[:, :, :start], k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v[:, :, :start], v], dim=2)
        return self.k, self.v


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``num_heads`` heads (Vaswani et al.).

    Keys and values are projected apart from the queries (:meth:`project_kv`) so that the
    audio memory of the cross-attention is projected once per sequence; self-attention
    projects all three at once (:meth:`project_qkv`) and caches the keys/values of past frames
    during incremental decoding.

    Args:
        d_model: feature size of queries, keys and values.
        num_heads: attention heads (must divide d_model).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide d_model {d_model}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # rows: W_q, W_k, W_v
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # [B, H, T, Dh]

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Queries [B, T, D] -> [B, H, T, D / H]."""
        d = x.shape[-1]
        return self._heads(F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d]))

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source [B, S, D] -> keys, values [B, H, S, D / H]."""
        d = source.shape[-1]
        k, v = F.linear(source, self.qkv.weight[d:], self.qkv.bias[d:]).chunk(2, dim=-1)  # [B, S, D] each
        return self._heads(k), self._heads(v)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames [B, T, D] -> queries, keys, values [B, H, T, D / H] (one matrix product)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, T, D] each
        return self._heads(q), self._heads(k), self._heads(v)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Queries [B, H, Tq, D / H] over keys/values [B, H, S, D / H] -> output [B, Tq, D].

        ``mask``: bool [Tq, S], True where attention is allowed; None allows everything.
        """
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # [B, H, Tq, Dh]
        b, _, tq, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, tq, -1))  # [B, Tq, D]


class TransformerLayer(nn.Module):
    """Pre-LayerNorm transformer layer: self-attention, optional cross-attention, feed-forward.

    Used by the audio encoder (no cross-attention) and by every decoder branch Phi_i of the
    multi-branch generator (cross-attention to the encoded audio A).

    Args:
        d_model: feature size.
        num_heads: attention heads.
        ffn_dim: hidden size of the feed-forward block.
        dropout: dropout on attention weights and on every residual branch (training only).
        cross_attention: add a cross-attention block over a memory sequence.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, cross_attention: bool):
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model) if cross_attention else None
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout) if cross_attention else None
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU("tanh"), nn.Linear(ffn_dim, d_model))
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cross_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """One layer over the frames x [B, T, D] -> [B, T, D].

        Args:
            x: the frames to compute (all of them, or only the newest ones when ``cache``
                holds the keys/values of the earlier frames).
            self_mask: bool [T, t_cache + T] (see :func:`alignment_mask`), None for no mask.
            memory_kv: keys/values [B, H, S, D / H] of the memory (from
                ``self.cross_attn.project_kv``); required with cross-attention.
            cross_mask: bool [T, S] or None.
            cache: keys/values of past frames; extended in place with those of x.
        """
        q, k, v = self.self_attn.project_qkv(self.self_norm(x))  # [B, H, T, Dh]
        if cache is not None:
            k, v = cache.append(k, v)  # [B, H, t_cache + T, Dh]
        x = x + self._drop(self.self_attn.attend(q, k, v, self_mask))
        if self.cross_attn is not None:
            mk, mv = memory_kv
            q = self.cross_attn.project_q(self.cross_norm(x))  # [B, H, T, Dh]
            x = x + self._drop(self.cross_attn.attend(q, mk, mv, cross_mask))
        return x + self._drop(self.ffn(self.ffn_norm(x)))  # [B, T, D]

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, training=True) if self.training and self.dropout > 0 else x


# ------------------------------------------------------------------ grouped incremental step
# The branches of the generator are independent decoders of one size. At inference, one frame
# at a time, the cost is dominated by per-operator overhead, so the cached path runs the G
# branches together: their weights are stacked once per sequence and every matrix product
# becomes one batched product. TransformerLayer.forward stays the reference it is checked against.


def _stack_linear(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(weight [out, in], bias [out])] * G -> (weights [G, in, out], biases [G, 1, out])."""
    return torch.stack([w.t() for w, _ in pairs]), torch.stack([b[None] for _, b in pairs])


def stack_layers(layers: list[TransformerLayer]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The parameters of G same-sized cross-attention layers, stacked for :func:`grouped_layer_step`.

    Returns:
        dict name -> (matrix [G, in, out], bias [G, 1, out]) for the linear maps and
        (scale [G, 1, D], shift [G, 1, D]) for the LayerNorms; differentiable views of the
        layers' parameters (torch.stack), on their device.
    """
    d = layers[0].ffn_norm.normalized_shape[0]

    def norm(get) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([get(l).weight[None] for l in layers]), torch.stack([get(l).bias[None] for l in layers])

    return {
        "self_norm": norm(lambda l: l.self_norm),
        "qkv": _stack_linear([(l.self_attn.qkv.weight, l.self_attn.qkv.bias) for l in layers]),
        "self_out": _stack_linear([(l.self_attn.out.weight, l.self_attn.out.bias) for l in layers]),
        "cross_norm": norm(lambda l: l.cross_norm),
        "cross_q": _stack_linear([(l.cross_attn.qkv.weight[:d], l.cross_attn.qkv.bias[:d]) for l in layers]),
        "cross_out": _stack_linear([(l.cross_attn.out.weight, l.cross_attn.out.bias) for l in layers]),
        "ffn_norm": norm(lambda l: l.ffn_norm),
        "ffn_in": _stack_linear([(l.ffn[0].weight, l.ffn[0].bias) for l in layers]),
        "ffn_out": _stack_linear([(l.ffn[2].weight, l.ffn[2].bias) for l in layers]),
    }


def grouped_layer_step(
    x: torch.Tensor,
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
    memory_kv: tuple[torch.Tensor, torch.Tensor],
    cache: KVCache,
    num_heads: int,
    eps: float = 1e-5,
) -> torch.Tensor:
    """:meth:`TransformerLayer.forward` (eval mode) for the newest frame of G branches at once.

    Args:
        x: float [G, B, D], the newest frame of each branch.
        weights: :func:`stack_layers` of the G branches' layers at this depth.
        memory_kv: cross-attention keys/values [G B, H, S, D / H] (branch-major), already cut
            to the audio frames the newest frame may see.
        cache: keys/values [G B, H, t, D / H] of the past frames; extended in place.
        num_heads: H.
        eps: LayerNorm epsilon.

    Returns:
        float [G, B, D].
    """
    g, b, d = x.shape

    def lin(y: torch.Tensor, name: str) -> torch.Tensor:
        return torch.baddbmm(weights[name][1], y, weights[name][0])  # [G, B, out]

    def norm(y: torch.Tensor, name: str) -> torch.Tensor:
        return torch.addcmul(weights[name][1], F.layer_norm(y, (d,), eps=eps), weights[name][0])

    def heads(y: torch.Tensor) -> torch.Tensor:
        return y.reshape(g * b, 1, num_heads, d // num_heads).transpose(1, 2)  # [G B, H, 1, Dh]

    def merge(y: torch.Tensor) -> torch.Tensor:
        return y.transpose(1, 2).reshape(g, b, d)  # [G, B, D]

    q, k, v = lin(norm(x, "self_norm"), "qkv").chunk(3, dim=-1)  # [G, B, D] each
    k, v = cache.append(heads(k), heads(v))  # [G B, H, t + 1, Dh]
    x = x + lin(merge(F.scaled_dot_product_attention(heads(q), k, v)), "self_out")
    q = heads(lin(norm(x, "cross_norm"), "cross_q"))  # [G B, H, 1, Dh]
    x = x + lin(merge(F.scaled_dot_product_attention(q, *memory_kv)), "cross_out")
    h = F.gelu(lin(norm(x, "ffn_norm"), "ffn_in"), approximate="tanh")  # [G, B, F]
    return x + lin(h, "ffn_out")  # [G, B, D]
