"""VividTalk's multi-branch BlendShape and Vertex Offset generator (docs/architecture.md, "Stage 1").

Audio features A (one vector per 25 fps frame) and the identity style ``z_style`` drive three
autoregressive branches (VividTalk, eq. 1):

    beta^_i^f = Phi_i^bs(beta^_i^{1..f-1}, A, z_style),   i in {lip, other}
    O^_lip^f  = Phi_lip^vo(O^_lip^{1..f-1}, A, z_style)

The audio is encoded once by a causal transformer (style added to its input, "the personal
style is embedded in the audio features"); each branch is its own pre-LN transformer decoder
whose input at frame f is its own output of frame f - 1 (a learned start token at f = 0) plus
the encoded audio of frame f, with causal self-attention over its past and cross-attention to
the encoded audio under an alignment mask (frame f sees the audio of frames
f - ``audio_context`` .. f + ``audio_lookahead``). The direct audio input and the local window
give every frame its own audio from the first step of training, instead of leaving the
alignment to be discovered, and keep the branches from merely continuing their past. Training uses
teacher forcing (:meth:`MultiBranchTransformer.forward` with targets); inference decodes frame
by frame with per-layer key/value caches (:meth:`MultiBranchTransformer.generate`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vividtalk.audio2mesh.attention import (
    KVCache,
    TransformerLayer,
    alignment_mask,
    grouped_layer_step,
    sinusoidal_encoding,
    stack_layers,
)

LIP_PREFIXES = ("jaw", "mouth")


def lip_expression_indices(expression_names: list[str], prefixes: tuple[str, ...] = LIP_PREFIXES) -> list[int]:
    """Indices of the blendshapes predicted by the ``lip`` branch: names starting with a prefix."""
    return [k for k, name in enumerate(expression_names) if name.startswith(prefixes)]


def _default_lip_expressions(num_expressions: int) -> list[int]:
    from vividtalk.face import FaceModel  # lazy: the face package pulls in mediapipe

    names = FaceModel.default().expression_names
    if len(names) != num_expressions:
        raise ValueError(
            f"lip_expressions=None means the default face model's jaw/mouth blendshapes, but it has "
            f"{len(names)} expressions, not {num_expressions}: pass lip_expressions explicitly"
        )
    return lip_expression_indices(names)


def _shift_right(values: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """Targets [B, T, C] -> branch inputs [B, T, C]: frame f gets frame f - 1 (frame 0: start or 0)."""
    first = values.new_zeros(values.shape[0], 1, values.shape[2]) if start is None else start[:, None]
    return torch.cat([first, values[:, :-1]], dim=1)  # [B, T, C]


class DecoderBranch(nn.Module):
    """One autoregressive branch Phi_i: (y^{1..f-1}, A, z_style) -> y^f, y of size ``out_dim``.

    Args:
        out_dim: size of one frame's output (and input: the previous output).
        style_dim, d_model, num_layers, num_heads, ffn_dim, dropout, max_frames: see
            :class:`MultiBranchTransformer`.
        audio_lookahead: frame f cross-attends the audio of frames <= f + audio_lookahead.
        audio_context: ... and >= f - audio_context (None: all past frames).
        sigmoid: squash the output to [0, 1] (blendshape branches).
    """

    def __init__(self, out_dim: int, style_dim: int, d_model: int, num_layers: int, num_heads: int,
                 ffn_dim: int, dropout: float, max_frames: int, audio_lookahead: int, sigmoid: bool,
                 audio_context: int | None = None):
        super().__init__()
        self.out_dim, self.audio_lookahead, self.sigmoid = out_dim, audio_lookahead, sigmoid
        self.audio_context = audio_context
        self.embed = nn.Linear(out_dim, d_model)
        self.audio_in = nn.Linear(d_model, d_model)
        self.start_token = nn.Parameter(0.02 * torch.randn(d_model))
        self.style = nn.Linear(style_dim, d_model)
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, num_heads, ffn_dim, dropout, cross_attention=True) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)
        self.register_buffer("pos", sinusoidal_encoding(max_frames, d_model), persistent=False)

    def tokens(self, previous: torch.Tensor, style: torch.Tensor, first: int, learned_start: bool,
               memory: torch.Tensor) -> torch.Tensor:
        """Input tokens of frames ``first .. first + n - 1``.

        Args:
            previous: [B, n, out_dim], row i the output of frame first + i - 1 (at frame 0: the
                caller's start value, ignored when ``learned_start``).
            style: projected style [B, 1, D].
            memory: the encoded audio of the same frames [B, n, D].
        Returns:
            [B, n, D]: embedding + positional encoding + style + audio.
        """
        x = self.embed(previous)  # [B, n, D]
        if first == 0 and learned_start:
            x = torch.cat([self.start_token.expand(x.shape[0], 1, -1), x[:, 1:]], dim=1)
        return x + self.pos[first : first + x.shape[1]] + style + self.audio_in(memory)  # [B, n, D]

    def decode(self, x: torch.Tensor, memory_kv: list) -> torch.Tensor:
        """Tokens [B, n, D] of frames 0 .. n - 1 -> outputs [B, n, out_dim] (causal, audio-aligned).

        ``memory_kv``: :meth:`project_memory` of the encoded audio.
        """
        n = x.shape[1]
        num_audio = min(memory_kv[0][0].shape[2], n + self.audio_lookahead)
        self_mask = alignment_mask(n, n, device=x.device)  # [n, n]
        cross_mask = alignment_mask(n, num_audio, lookahead=self.audio_lookahead, device=x.device,
                                    context=self.audio_context)
        for layer, (mk, mv) in zip(self.layers, memory_kv):
            x = layer(x, self_mask, (mk[:, :, :num_audio], mv[:, :, :num_audio]), cross_mask)  # [B, n, D]
        return self.output(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden state [..., D] -> output [..., out_dim] (sigmoid for blendshapes)."""
        y = self.head(self.norm(x))
        return torch.sigmoid(y) if self.sigmoid else y

    def project_memory(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encoded audio [B, T, D] -> per layer cross-attention keys/values [B, H, T, D / H]."""
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def forward(self, previous: torch.Tensor, memory: torch.Tensor, z_style: torch.Tensor,
                learned_start: bool) -> torch.Tensor:
        """Teacher forcing: previous outputs [B, T, out_dim] (shifted right) -> outputs [B, T, out_dim]."""
        x = self.tokens(previous, self.style(z_style)[:, None], 0, learned_start, memory)  # [B, T, D]
        return self.decode(x, self.project_memory(memory))

    def generate_uncached(self, memory: torch.Tensor, z_style: torch.Tensor,
                          start: torch.Tensor | None) -> torch.Tensor:
        """Reference decoding: the whole prefix recomputed at every frame, O(T^2) per frame.

        Args:
            memory: encoded audio [B, T, D].
            start: [B, out_dim], the output of the frame before frame 0 (None: learned token).
        Returns:
            outputs [B, T, out_dim].
        """
        memory_kv = self.project_memory(memory)
        style = self.style(z_style)[:, None]  # [B, 1, D]
        prev = memory.new_zeros(memory.shape[0], 1, self.out_dim) if start is None else start[:, None]
        inputs = [prev]  # frame f's input: the output of frame f - 1
        for t in range(memory.shape[1]):
            x = self.tokens(torch.cat(inputs, dim=1), style, 0, start is None, memory[:, : t + 1])  # [B, t + 1, D]
            inputs.append(self.decode(x, memory_kv)[:, -1:])  # [B, 1, out_dim]
        return torch.cat(inputs[1:], dim=1)  # [B, T, out_dim]


def generate_cached(branches: list[DecoderBranch], memory: torch.Tensor, z_style: torch.Tensor,
                    starts: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Incremental decoding of G same-sized branches together, with per-layer key/value caches.

    Each frame costs O(t): only the newest frame runs through the layers, attending to the
    cached keys/values of the past frames; the G branches run as one batched computation
    (:func:`~vividtalk.audio2mesh.attention.grouped_layer_step`). Same results as
    :meth:`DecoderBranch.generate_uncached` per branch (without dropout: use eval mode).

    Args:
        branches: G decoder branches with equal layer sizes.
        memory: encoded audio [B, T, D].
        z_style: [B, S].
        starts: per branch [B, out_dim_i] or None (learned start token).
    Returns:
        per branch outputs [B, T, out_dim_i].
    """
    b, t_total, _ = memory.shape
    lookahead, context = branches[0].audio_lookahead, branches[0].audio_context
    num_heads = branches[0].layers[0].self_attn.num_heads
    eps = branches[0].layers[0].ffn_norm.eps
    weights = [stack_layers(list(layers)) for layers in zip(*(br.layers for br in branches))]
    memory_kv = [tuple(torch.cat(kv, dim=0) for kv in zip(*per_branch))  # [G B, H, T, Dh] each
                 for per_branch in zip(*(br.project_memory(memory) for br in branches))]
    io = _grouped_io(branches, memory, z_style)
    prev = torch.zeros(len(branches), b, io["width"], device=memory.device, dtype=memory.dtype)  # [G, B, Cmax]
    for g, s in enumerate(starts):
        if s is not None:
            prev[g, :, : s.shape[-1]] = s
    caches = [KVCache(capacity=t_total) for _ in weights]
    outputs = []
    for t in range(t_total):
        x = torch.baddbmm(io["embed_b"], prev, io["embed_w"]) + io["bases"][:, :, t]  # [G, B, D]
        if t == 0:  # branches without a start value begin from their learned token
            learned = [g for g, s in enumerate(starts) if s is None]
            x[learned] = io["start_tokens"][learned] + io["bases"][learned, :, 0]
        first, end = 0 if context is None else max(0, t - context), min(t_total, t + 1 + lookahead)
        for w, (mk, mv), cache in zip(weights, memory_kv, caches):
            x = grouped_layer_step(x, w, (mk[:, :, first:end], mv[:, :, first:end]), cache, num_heads, eps)
        y = torch.addcmul(io["norm_b"], F.layer_norm(x, x.shape[-1:], eps=io["norm_eps"]), io["norm_w"])
        y = torch.baddbmm(io["head_b"], y, io["head_w"])  # [G, B, Cmax]
        prev = torch.where(io["sigmoid"], torch.sigmoid(y), y)
        outputs.append(prev)
    out = torch.stack(outputs, dim=2)  # [G, B, T, Cmax]
    return [out[g, :, :, : br.out_dim] for g, br in enumerate(branches)]


def _grouped_io(branches: list[DecoderBranch], memory: torch.Tensor, z_style: torch.Tensor) -> dict:
    """The input embeddings and output heads of G branches stacked for one batched product per
    frame, outputs zero-padded to the widest branch ``width`` (padded inputs meet zero rows, so
    the padding never leaks), and every branch's per-frame token base (position + style + audio).

    Returns:
        dict: ``bases`` [G, B, T, D]; ``embed_w`` [G, Cmax, D], ``embed_b`` [G, 1, D];
        ``start_tokens`` [G, 1, D]; ``norm_w`` / ``norm_b`` [G, 1, D], ``norm_eps``;
        ``head_w`` [G, D, Cmax], ``head_b`` [G, 1, Cmax]; ``sigmoid`` bool [G, 1, Cmax]; ``width``.
    """
    width, t = max(br.out_dim for br in branches), memory.shape[1]
    embed_w, head_w, head_b, sigmoid = [], [], [], []
    for br in branches:
        pad = width - br.out_dim
        embed_w.append(F.pad(br.embed.weight.t(), (0, 0, 0, pad)))  # [Cmax, D]
        head_w.append(F.pad(br.head.weight.t(), (0, pad)))  # [D, Cmax]
        head_b.append(F.pad(br.head.bias, (0, pad))[None])  # [1, Cmax]
        sigmoid.append(torch.full((1, width), br.sigmoid, dtype=torch.bool, device=memory.device))
    return {
        "bases": torch.stack([br.pos[:t] + br.style(z_style)[:, None] + br.audio_in(memory) for br in branches]),
        "embed_w": torch.stack(embed_w), "embed_b": torch.stack([br.embed.bias[None] for br in branches]),
        "start_tokens": torch.stack([br.start_token[None] for br in branches]),
        "norm_w": torch.stack([br.norm.weight[None] for br in branches]),
        "norm_b": torch.stack([br.norm.bias[None] for br in branches]), "norm_eps": branches[0].norm.eps,
        "head_w": torch.stack(head_w), "head_b": torch.stack(head_b), "sigmoid": torch.stack(sigmoid),
        "width": width,
    }


class MultiBranchTransformer(nn.Module):
    """Multi-branch BlendShape and Vertex Offset generator Phi^bs_lip, Phi^bs_other, Phi^vo_lip.

    Args:
        audio_dim: size of one audio feature vector of A [B, T, audio_dim].
        num_expressions: K, blendshape coefficients beta per frame.
        lip_expressions: indices into beta predicted by the ``lip`` branch (the ``other`` branch
            predicts the rest); None: the jaw*/mouth* blendshapes of ``FaceModel.default()``
            (see :func:`lip_expression_indices` to build it from any model's names).
        num_lip_vertices: L, lip vertices of the offsets O_lip [B, T, L, 3].
        style_dim: size of z_style (see :class:`~vividtalk.audio2mesh.style_encoder.StyleEncoder`).
        d_model, num_layers, num_heads, ffn_dim, dropout: size of every branch (and of the
            audio encoder); dropout is active in training mode only.
        max_frames: longest sequence (positional encoding table); generate longer audio in
            chunks, passing ``start``.
        offset_scale: unit of the ``vo`` branch: it predicts O_lip / offset_scale.
        num_audio_layers: causal self-attention layers of the audio encoder.
        audio_lookahead: frame f also sees the audio of the next ``audio_lookahead`` frames
            (0: strictly causal in the audio).
        audio_context: frame f cross-attends the audio of the ``audio_context`` frames before
            it at most (None: all of them).
        input_dropout: in teacher-forced training, each branch's previous-frame input is zeroed
            with this probability per frame. Against exposure bias: with the true previous
            frame always at hand a branch learns to continue it, which generalises badly when
            it must continue its own outputs; dropping it makes the branch listen to the audio.
    """

    def __init__(self, audio_dim: int, num_expressions: int = 29, lip_expressions: list[int] | None = None,
                 num_lip_vertices: int = 80, style_dim: int = 128, d_model: int = 256, num_layers: int = 3,
                 num_heads: int = 4, ffn_dim: int = 512, dropout: float = 0.1, max_frames: int = 1024,
                 offset_scale: float = 0.01, num_audio_layers: int = 2, audio_lookahead: int = 0,
                 audio_context: int | None = 8, input_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        self.input_dropout = input_dropout
        lip = list(lip_expressions) if lip_expressions is not None else _default_lip_expressions(num_expressions)
        if len(set(lip)) != len(lip) or not all(0 <= k < num_expressions for k in lip):
            raise ValueError(f"lip_expressions must be distinct indices in [0, {num_expressions}), got {lip}")
        other = [k for k in range(num_expressions) if k not in lip]
        if not lip or not other:
            raise ValueError("both the lip and the other branch need at least one expression")
        self.lip_expressions, self.other_expressions = lip, other
        self.num_expressions, self.num_lip_vertices = num_expressions, num_lip_vertices
        self.offset_scale, self.max_frames = offset_scale, max_frames
        # beta = cat([beta_lip, beta_other])[..., inverse]: puts each branch's output back in place.
        inverse = torch.argsort(torch.tensor(lip + other))
        self.register_buffer("lip_index", torch.tensor(lip), persistent=False)
        self.register_buffer("other_index", torch.tensor(other), persistent=False)
        self.register_buffer("inverse_index", inverse, persistent=False)

        self.audio_norm = nn.LayerNorm(audio_dim)
        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.audio_style = nn.Linear(style_dim, d_model)
        self.audio_layers = nn.ModuleList(
            TransformerLayer(d_model, num_heads, ffn_dim, dropout, cross_attention=False)
            for _ in range(num_audio_layers)
        )
        self.audio_out_norm = nn.LayerNorm(d_model)
        self.register_buffer("pos", sinusoidal_encoding(max_frames, d_model), persistent=False)
        sizes = {"lip": len(lip), "other": len(other), "vo": 3 * num_lip_vertices}
        self.branches = nn.ModuleDict({
            name: DecoderBranch(size, style_dim, d_model, num_layers, num_heads, ffn_dim, dropout,
                                max_frames, audio_lookahead, sigmoid=name != "vo", audio_context=audio_context)
            for name, size in sizes.items()
        })

    def encode_audio(self, audio: torch.Tensor, z_style: torch.Tensor) -> torch.Tensor:
        """A [B, T, audio_dim] and z_style [B, S] -> encoded audio [B, T, D], causal in time."""
        t = audio.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed max_frames={self.max_frames}: generate in chunks with `start`")
        x = self.audio_proj(self.audio_norm(audio)) + self.pos[:t] + self.audio_style(z_style)[:, None]
        mask = alignment_mask(t, t, device=audio.device)  # [T, T]
        for layer in self.audio_layers:
            x = layer(x, mask)  # [B, T, D]
        return self.audio_out_norm(x)

    def _split(self, beta: torch.Tensor, lip_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """beta [..., K] and O_lip [..., L, 3] -> per-branch values (O_lip in offset_scale units)."""
        return {
            "lip": beta.index_select(-1, self.lip_index),  # [..., K_lip]
            "other": beta.index_select(-1, self.other_index),  # [..., K_other]
            "vo": lip_offsets.flatten(-2) / self.offset_scale,  # [..., 3 L]
        }

    def _split_start(self, start: dict | None, batch: int) -> dict[str, torch.Tensor | None]:
        """``start`` of :meth:`generate` -> per-branch start values [B, C] (None: learned token)."""
        out = dict.fromkeys(self.branches)
        beta = (start or {}).get("beta")
        offsets = (start or {}).get("lip_offsets")
        if beta is not None:
            if beta.shape != (batch, self.num_expressions):
                raise ValueError(f"start['beta'] must be [{batch}, {self.num_expressions}], got {tuple(beta.shape)}")
            out["lip"], out["other"] = beta.index_select(-1, self.lip_index), beta.index_select(-1, self.other_index)
        if offsets is not None:
            if offsets.shape != (batch, self.num_lip_vertices, 3):
                raise ValueError(f"start['lip_offsets'] must be [{batch}, {self.num_lip_vertices}, 3], "
                                 f"got {tuple(offsets.shape)}")
            out["vo"] = offsets.flatten(-2) / self.offset_scale  # [B, 3 L]
        return out

    def _assemble(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b, t, _ = out["vo"].shape
        beta = torch.cat([out["lip"], out["other"]], dim=-1).index_select(-1, self.inverse_index)  # [B, T, K]
        lip_offsets = out["vo"].view(b, t, self.num_lip_vertices, 3) * self.offset_scale  # [B, T, L, 3]
        return {"beta": beta, "lip_offsets": lip_offsets}

    def forward(self, audio: torch.Tensor, z_style: torch.Tensor, beta: torch.Tensor | None = None,
                lip_offsets: torch.Tensor | None = None, start: dict | None = None) -> dict[str, torch.Tensor]:
        """Teacher forcing with targets, autoregressive generation (:meth:`generate`) without.

        Args:
            audio: A, float [B, T, audio_dim].
            z_style: float [B, style_dim].
            beta: target coefficients [B, T, K] in [0, 1], or None.
            lip_offsets: target O_lip [B, T, L, 3] (face-height units), or None.
            start: optional outputs of the frame before frame 0 (see :meth:`generate`); in
                training, pass the frame before a random crop so chunked generation is in-distribution.
        Returns:
            dict with ``beta`` [B, T, K] in [0, 1] and ``lip_offsets`` [B, T, L, 3]; frame f
            depends on the targets of frames < f and on the audio of frames <= f + lookahead.
        """
        if beta is None and lip_offsets is None:
            return self.generate(audio, z_style, start=start)
        if beta is None or lip_offsets is None:
            raise ValueError("teacher forcing needs both beta and lip_offsets")
        b, t, _ = audio.shape
        if beta.shape != (b, t, self.num_expressions) or lip_offsets.shape != (b, t, self.num_lip_vertices, 3):
            raise ValueError(f"targets {tuple(beta.shape)}, {tuple(lip_offsets.shape)} do not match audio {b}x{t}")
        memory = self.encode_audio(audio, z_style)  # [B, T, D]
        targets, starts = self._split(beta, lip_offsets), self._split_start(start, b)
        out = {
            name: branch(self._drop_inputs(_shift_right(targets[name], starts[name])), memory, z_style,
                         starts[name] is None)
            for name, branch in self.branches.items()
        }
        return self._assemble(out)

    def _drop_inputs(self, previous: torch.Tensor) -> torch.Tensor:
        """Zero whole previous-frame inputs [B, T, C] with probability ``input_dropout`` (training)."""
        if not self.training or self.input_dropout == 0:
            return previous
        keep = torch.rand(previous.shape[:2], device=previous.device) >= self.input_dropout  # [B, T]
        return previous * keep[..., None]

    def generate(self, audio: torch.Tensor, z_style: torch.Tensor, use_cache: bool = True,
                 start: dict | None = None) -> dict[str, torch.Tensor]:
        """Autoregressive frame-by-frame decoding (VividTalk's inference).

        Args:
            audio: A, float [B, T, audio_dim], T <= max_frames.
            z_style: float [B, style_dim].
            use_cache: cache each self-attention layer's past keys/values (O(t) per step);
                False recomputes the whole prefix at every step (O(t^2), same result).
            start: continue a previous chunk: ``{"beta": [B, K], "lip_offsets": [B, L, 3]}``,
                the outputs of the frame just before this chunk (e.g. ``{k: v[:, -1] for k, v in
                previous.items()}``); either key may be missing (learned start token instead).
                Only that frame carries over: attention history restarts with the chunk.
        Returns:
            dict with ``beta`` [B, T, K] in [0, 1] and ``lip_offsets`` [B, T, L, 3], on audio's device.
        """
        memory = self.encode_audio(audio, z_style)  # [B, T, D]
        starts = self._split_start(start, audio.shape[0])
        names = list(self.branches)
        if use_cache:
            outs = generate_cached(list(self.branches.values()), memory, z_style, [starts[n] for n in names])
        else:
            outs = [self.branches[n].generate_uncached(memory, z_style, starts[n]) for n in names]
        return self._assemble(dict(zip(names, outs)))
