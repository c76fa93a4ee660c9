"""wav2vec2 audio features at 25 fps (the audio features ``A`` of VividTalk's stage 1).

Wraps ``transformers.Wav2Vec2Model``. Pretrained weights are read only from a local
directory (e.g. ``facebook/wav2vec2-base-960h`` saved once with ``save_pretrained``); nothing
is ever downloaded. Without such weights, use :class:`~vividtalk.audio.LogMelEncoder`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vividtalk.audio.align import check_waveform_batch, num_frames, pad_to_frames

# Any of these next to config.json counts as weights (single file or sharded index).
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class Wav2Vec2Encoder(nn.Module):
    """Waveform [B, N] at 16 kHz -> wav2vec2 features [B, num_frames(N), hidden_size].

    Each item is normalised to zero mean and unit variance (what wav2vec2 was trained on),
    zero-padded to whole video frames and at least the receptive field of the convolutional
    feature encoder, encoded at 50 Hz, and linearly interpolated in time to exactly one
    vector per 25 fps video frame (``align_corners=False``), as FaceFormer does.

    Args:
        model: a ``transformers.Wav2Vec2Model`` (pretrained or randomly initialised).
        freeze: if True, all wav2vec2 weights are frozen, the model stays in eval mode
            (no dropout, no SpecAugment masking) and runs without autograd; if False, all of
            them are trainable (FaceFormer-style fine-tuning often freezes just the CNN:
            call ``encoder.model.freeze_feature_encoder()``).
        output_layer: None for ``last_hidden_state``; an int ``i`` in
            ``[0, num_hidden_layers]`` for ``hidden_states[i]`` (0: the projected CNN
            features before the transformer).
    """

    def __init__(self, model: nn.Module, freeze: bool = True, output_layer: int | None = None):
        super().__init__()
        config = model.config
        if output_layer is not None and not 0 <= output_layer <= config.num_hidden_layers:
            raise ValueError(
                f"output_layer must be in [0, {config.num_hidden_layers}] or None, "
                f"got {output_layer}"
            )
        self.model = model
        self.freeze = bool(freeze)
        self.output_layer = output_layer
        self.feature_dim = int(config.hidden_size)
        # Set the trainability explicitly: the same model may have been frozen elsewhere.
        self.model.requires_grad_(not self.freeze)
        if self.freeze:
            self.model.eval()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, freeze: bool = True, output_layer: int | None = None
    ) -> "Wav2Vec2Encoder":
        """Load wav2vec2 weights from a local directory (never from the network).

        Args:
            path: directory written by ``save_pretrained`` holding ``config.json`` and the
                weights (``model.safetensors`` or ``pytorch_model.bin``, possibly sharded).
                A ``Wav2Vec2ForCTC`` checkpoint such as wav2vec2-base-960h works too.
            freeze, output_layer: as in the constructor.

        Raises:
            FileNotFoundError: the directory, its config or its weights are missing.
        """
        path = Path(path)
        _check_pretrained_dir(path)
        from transformers import Wav2Vec2Model  # heavy import, only needed here

        model = Wav2Vec2Model.from_pretrained(str(path), local_files_only=True)
        return cls(model, freeze=freeze, output_layer=output_layer)

    def train(self, mode: bool = True) -> "Wav2Vec2Encoder":
        """Switch train/eval mode; a frozen wav2vec2 stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio features ``A`` of stage 1.

        Args:
            wav: float tensor [B, N], 16 kHz mono in [-1, 1], on the model's device.

        Returns:
            tensor [B, T, feature_dim] in the model's dtype, T = num_frames(N), on wav's device.
        """
        check_waveform_batch(wav)
        frames = num_frames(wav.shape[-1])
        x = pad_to_frames(_normalise(wav.float()))  # [B, T * 640]
        kernels, strides = self.model.config.conv_kernel, self.model.config.conv_stride
        valid = max(1, _conv_output_length(x.shape[-1], kernels, strides))  # 50 Hz frames
        min_samples = self._min_input_samples()
        if x.shape[-1] < min_samples:
            x = F.pad(x, (0, min_samples - x.shape[-1]))
        x = x.to(next(self.model.parameters()).dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self._hidden_states(x)[:, :valid]  # [B, L, D] at 50 Hz, padding dropped
        # Resample 50 Hz -> 25 Hz onto exactly T frames.
        hidden = F.interpolate(hidden.transpose(1, 2), size=frames, mode="linear",
                               align_corners=False)  # [B, D, T]
        return hidden.transpose(1, 2)  # [B, T, D]

    def _min_input_samples(self) -> int:
        """Fewest samples the model accepts: one conv output frame, or in training with
        SpecAugment time masking, ``mask_time_length`` frames (else transformers refuses)."""
        config = self.model.config
        frames = 1
        if self.model.training and config.mask_time_prob > 0 and config.apply_spec_augment:
            frames = config.mask_time_length + 1
        return _receptive_field(config.conv_kernel, config.conv_stride, frames)

    def _hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised, padded waveform [B, N'] -> wav2vec2 hidden states [B, L, D] (50 Hz)."""
        if self.output_layer is None:
            return self.model(x).last_hidden_state
        out = self.model(x, output_hidden_states=True)
        return out.hidden_states[self.output_layer]


def _normalise(wav: torch.Tensor) -> torch.Tensor:
    """Per-item zero mean, unit variance: float [B, N] -> [B, N] (silence stays zero)."""
    mean = wav.mean(dim=-1, keepdim=True)
    var = wav.var(dim=-1, keepdim=True, unbiased=False)
    # The same 1e-7 floor as transformers' Wav2Vec2FeatureExtractor.
    return (wav - mean) / torch.sqrt(var + 1e-7)


def _receptive_field(kernels, strides, frames: int = 1) -> int:
    """Fewest input samples for which the conv feature encoder yields ``frames`` outputs."""
    length = frames
    for kernel, stride in zip(reversed(list(kernels)), reversed(list(strides))):
        length = (length - 1) * stride + kernel
    return length


def _conv_output_length(samples: int, kernels, strides) -> int:
    """Output frames of the unpadded conv feature encoder for ``samples`` inputs (may be <= 0)."""
    length = samples
    for kernel, stride in zip(kernels, strides):
        length = (length - kernel) // stride + 1
    return length


def _check_pretrained_dir(path: Path) -> None:
    """Raise FileNotFoundError unless ``path`` holds a config.json and weights."""
    hint = (
        "wav2vec2 weights must be on local disk: save them once with save_pretrained() "
        "(e.g. facebook/wav2vec2-base-960h) and pass that directory; nothing is downloaded"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"wav2vec2 directory not found: {path}. {hint}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in wav2vec2 directory {path}. {hint}")
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"no weights ({', '.join(_WEIGHT_FILES)}) in wav2vec2 directory {path}. {hint}"
        )
