"""Log-mel audio features at 25 fps: the offline default audio encoder of stage 1.

Stage 1 (docs/architecture.md, "Stage 1") conditions on audio features ``A`` with one vector per video
frame. With ``out_dim=None`` the feature of frame f is its four 10 ms log-mel frames stacked
(fixed, cacheable); with ``out_dim`` a learned :class:`MelConvFrontEnd` maps them to
``out_dim`` channels.
"""

from __future__ import annotations

import torch
from torch import nn

from vividtalk.audio.align import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    check_waveform_batch,
    num_frames,
    pad_to_frames,
)
from vividtalk.audio.conv_frontend import MelConvFrontEnd
from vividtalk.audio.mel import mel_filterbank


class LogMelEncoder(nn.Module):
    """Waveform [B, N] at 16 kHz -> log-mel features [B, num_frames(N), feature_dim].

    The spectrogram is a centred STFT (Hann window of ``n_fft`` samples, zero padding), so
    mel frame k is centred at sample ``hop_length * k``; video frame f owns mel frames
    ``4 f .. 4 f + 3`` (for the default 10 ms hop), all centred inside its samples
    ``[640 f, 640 (f + 1))``. Audio is zero-padded to whole video frames first.

    Args:
        n_mels: mel bands.
        n_fft: FFT size and window length in samples.
        hop_length: STFT hop in samples; must divide 640 (one video frame).
        out_dim: None for the fixed stacked feature (feature_dim = 640 // hop_length * n_mels),
            or the size of the learned front end's output (feature_dim = out_dim).
        hidden_dim: channels of the learned front end (ignored when out_dim is None).
        mel_scale: "slaney" or "htk" (see :mod:`vividtalk.audio.mel`).
        log_eps: floor added before the log: log(mel + log_eps).
    """

    def __init__(
        self,
        n_mels: int = 80,
        n_fft: int = 400,
        hop_length: int = 160,
        out_dim: int | None = None,
        hidden_dim: int = 256,
        mel_scale: str = "slaney",
        log_eps: float = 1e-5,
    ):
        super().__init__()
        if hop_length <= 0 or SAMPLES_PER_FRAME % hop_length:
            raise ValueError(f"hop_length must divide {SAMPLES_PER_FRAME}, got {hop_length}")
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        self.mels_per_frame = SAMPLES_PER_FRAME // hop_length
        self.log_eps = log_eps
        fbank = mel_filterbank(n_mels, n_fft, SAMPLE_RATE, scale=mel_scale)  # [n_mels, F]
        # Derived constants, rebuilt from the arguments: not part of the state dict.
        self.register_buffer("mel_fb", torch.from_numpy(fbank), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        if out_dim is None:
            self.frontend = None
            self.feature_dim = self.mels_per_frame * n_mels
        else:
            self.frontend = MelConvFrontEnd(n_mels, out_dim, self.mels_per_frame, hidden_dim)
            self.feature_dim = int(out_dim)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel spectrogram of whole video frames.

        Args:
            wav: float tensor [B, N], 16 kHz, in [-1, 1].

        Returns:
            float32 tensor [B, 4 T, n_mels] (``640 // hop_length`` mel frames per video frame),
            T = num_frames(N), natural log of the mel power, on wav's device.
        """
        check_waveform_batch(wav)
        frames = num_frames(wav.shape[-1])
        wav = pad_to_frames(wav.float())  # [B, T * 640]
        # The STFT and log need float32 even under mixed precision.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.stft(
                wav, self.n_fft, hop_length=self.hop_length, window=self.window.float(),
                center=True, pad_mode="constant", return_complex=True,
            )  # [B, F, 4 T + 1]
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_fb.float(), power)  # [B, n_mels, 4 T + 1]
            logmel = torch.log(mel + self.log_eps)
        # The last STFT frame is centred on the first sample after the clip: drop it.
        return logmel[..., : frames * self.mels_per_frame].transpose(1, 2)  # [B, 4 T, n_mels]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio features ``A`` of stage 1.

        Args:
            wav: float tensor [B, N], 16 kHz mono in [-1, 1].

        Returns:
            float32 tensor [B, T, feature_dim], T = num_frames(N), on wav's device.
        """
        logmel = self.log_mel(wav)  # [B, 4 T, n_mels]
        if self.frontend is not None:
            return self.frontend(logmel)  # [B, T, out_dim]
        batch, length, _ = logmel.shape
        # Stack the mel frames of each video frame: [m_4f | m_4f+1 | m_4f+2 | m_4f+3].
        return logmel.reshape(batch, length // self.mels_per_frame, self.feature_dim)

