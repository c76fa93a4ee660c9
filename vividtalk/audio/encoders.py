"""Factory for the audio feature encoders.

Every encoder is a ``torch.nn.Module`` with an int attribute ``feature_dim`` whose
``forward(wav)`` maps float32 [B, N] at 16 kHz to [B, num_frames(N), feature_dim] on wav's
device: exactly one feature vector per 25 fps video frame.
"""

from __future__ import annotations

from torch import nn

from vividtalk.audio.logmel_encoder import LogMelEncoder
from vividtalk.audio.wav2vec2_encoder import Wav2Vec2Encoder

AUDIO_ENCODER_NAMES = ("logmel", "wav2vec2")


def build_audio_encoder(name: str, **kwargs) -> nn.Module:
    """Build an audio encoder by name.

    Args:
        name: ``"logmel"`` (kwargs go to :class:`LogMelEncoder`) or ``"wav2vec2"`` (with
            ``path=<local directory>`` the kwargs go to :meth:`Wav2Vec2Encoder.from_pretrained`,
            otherwise to the constructor, which needs ``model=<Wav2Vec2Model>``).

    Raises:
        ValueError: an unknown name.
    """
    if name == "logmel":
        return LogMelEncoder(**kwargs)
    if name == "wav2vec2":
        if "path" in kwargs:
            return Wav2Vec2Encoder.from_pretrained(**kwargs)
        return Wav2Vec2Encoder(**kwargs)
    raise ValueError(
        f"unknown audio encoder {name!r}; valid names: {', '.join(AUDIO_ENCODER_NAMES)}"
    )
