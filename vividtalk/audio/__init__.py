"""Audio front end: loading, 25 fps alignment and per-video-frame feature encoders.

Contract (docs/architecture.md, "Data contracts"): audio is 16 kHz mono float32 in [-1, 1]; video frame f covers
samples [640 f, 640 (f + 1)); every encoder yields exactly ``num_frames(N)`` feature vectors.
"""

from vividtalk.audio.align import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    frame_audio_windows,
    num_frames,
    pad_to_frames,
)
from vividtalk.audio.conv_frontend import MelConvFrontEnd
from vividtalk.audio.io import (
    AudioError,
    MediaNotFoundError,
    MediaStreams,
    NoAudioStreamError,
    UnreadableMediaError,
    is_silent,
    load_audio,
    probe_streams,
)
from vividtalk.audio.logmel_encoder import LogMelEncoder
from vividtalk.audio.mel import hz_to_mel, mel_center_frequencies, mel_filterbank, mel_to_hz
from vividtalk.audio.wav2vec2_encoder import Wav2Vec2Encoder
from vividtalk.audio.whisper_encoder import PretrainedWhisperEncoder, WhisperEncoder

__all__ = [
    "AudioError",
    "FPS",
    "LogMelEncoder",
    "MediaNotFoundError",
    "MediaStreams",
    "MelConvFrontEnd",
    "NoAudioStreamError",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "PretrainedWhisperEncoder",
    "UnreadableMediaError",
    "Wav2Vec2Encoder",
    "WhisperEncoder",
    "frame_audio_windows",
    "hz_to_mel",
    "is_silent",
    "load_audio",
    "mel_center_frequencies",
    "mel_filterbank",
    "mel_to_hz",
    "num_frames",
    "pad_to_frames",
    "probe_streams",
]
