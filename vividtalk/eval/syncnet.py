"""Lip sync: SyncNet's LSE-D / LSE-C (Chung & Zisserman 2016, as reported by Wav2Lip and later
talking-head papers).

:class:`SyncNet` is the public release's two-stream network (its module layout, so that the
released ``syncnet_v2.model`` state dict loads from a local file): 13 MFCCs over 0.2 s of
audio and 5 RGB face frames at 224x224 each become a 1024-D embedding. A video is scored by
sliding the audio against the frames by -15..+15 frames: per offset, the mean embedding
distance over the video; LSE-D is the smallest of those means, the offset where it falls is
the AV offset, and LSE-C (confidence) is their median minus that minimum.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio.mel import mel_filterbank


def _conv2d(c_in: int, c_out: int, kernel, stride=1, padding=0, inplace: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.BatchNorm2d(c_out), nn.ReLU(inplace=inplace)]


def _conv3d(c_in: int, c_out: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(c_in, c_out, kernel, stride, padding), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


def _fc(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """Audio (MFCC [B, 1, 13, 20]) and video (RGB [B, 3, 5, 224, 224], 0-255) -> [B, dim] each.

    The layer order and names follow the public release, so its state dict loads as is.
    """

    def __init__(self, dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, 3, 1, 1), nn.MaxPool2d(1, 1),
            *_conv2d(64, 192, 3, 1, 1), nn.MaxPool2d(3, (1, 2)),
            *_conv2d(192, 384, 3, 1, 1), *_conv2d(384, 256, 3, 1, 1), *_conv2d(256, 256, 3, 1, 1),
            nn.MaxPool2d(3, 2),
            *_conv2d(256, 512, (5, 4), 1, 0, inplace=False),
        )  # [B, 512, 1, 1]
        self.netfcaud = _fc(dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3d(256, 512, (1, 6, 6), 1, 0),
        )  # [B, 512, 1, 1, 1]
        self.netfclip = _fc(dim)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SyncNet:
        """The released weights (``syncnet_v2.model``: a state dict) from a local file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SyncNet weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path} is not a SyncNet state dict (missing {missing[:3]}...)")
        return net.eval()

    def audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """MFCC windows [B, 1, 13, 20] -> [B, dim]."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        """Face windows [B, 3, 5, 224, 224] (RGB values 0-255) -> [B, dim]."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def mfcc(wav: np.ndarray, sample_rate: int = 16000, num_ceps: int = 13, num_filters: int = 26, nfft: int = 512,
         win: float = 0.025, step: float = 0.01, preemph: float = 0.97, lifter: int = 22) -> np.ndarray:
    """MFCCs as SyncNet was trained on (python_speech_features' defaults): float [T, 13] at 100 Hz.

    Pre-emphasis, 25 ms frames every 10 ms (the last zero-padded), power spectrum, 26
    triangular mel filters, log, DCT-II (orthonormal), sinusoidal liftering, and coefficient 0
    replaced by the log frame energy.
    """
    from scipy.fft import dct

    wav = np.asarray(wav, dtype=np.float64)
    signal = np.append(wav[0], wav[1:] - preemph * wav[:-1])
    length, hop = int(round(win * sample_rate)), int(round(step * sample_rate))
    count = 1 + max(0, math.ceil((len(signal) - length) / hop))
    signal = np.pad(signal, (0, (count - 1) * hop + length - len(signal)))
    index = np.arange(length)[None] + hop * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(signal[index], nfft)) ** 2 / nfft  # [T, nfft / 2 + 1]
    energy = np.maximum(power.sum(1), np.finfo(float).eps)
    bank = mel_filterbank(num_filters, nfft, sample_rate, scale="htk", snap_to_bins=True).astype(np.float64)
    feat = np.log(np.maximum(power @ bank.T, np.finfo(float).eps))
    ceps = dct(feat, type=2, axis=1, norm="ortho")[:, :num_ceps]
    ceps *= 1 + (lifter / 2) * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps.astype(np.float32)


def offset_distances(video: torch.Tensor, audio: torch.Tensor, max_offset: int = 15) -> torch.Tensor:
    """Mean distance between video embedding t and audio embedding t + k, for k = -K..K.

    Args:
        video, audio: [T, D] embeddings (audio zero-padded by K on both ends, as SyncNet does).
    Returns:
        float [2K + 1]: entry j is offset k = j - K.
    """
    t = len(video)
    padded = torch.nn.functional.pad(audio, (0, 0, max_offset, max_offset))  # [T + 2K, D]
    window = torch.stack([padded[k : k + t] for k in range(2 * max_offset + 1)])  # [2K + 1, T, D]
    return torch.nn.functional.pairwise_distance(video[None].expand_as(window).reshape(-1, video.shape[1]),
                                                 window.reshape(-1, video.shape[1])).view(-1, t).mean(1)


def sync_scores(video: torch.Tensor, audio: torch.Tensor, max_offset: int = 15) -> dict[str, float]:
    """LSE-D, LSE-C and the AV offset of per-frame embeddings [T, D] (see the module docstring).

    ``av_offset`` has SyncNet's sign: video frame t best matches audio embedding t - av_offset.
    """
    dists = offset_distances(video, audio, max_offset)
    minimum, index = dists.min(0)
    return {"lse_d": float(minimum), "lse_c": float(dists.median() - minimum), "av_offset": max_offset - int(index)}


class SyncNetScorer:
    """LSE-D / LSE-C of a talking-face video with SyncNet's released weights (a local file).

    Faces are cut as SyncNet expects (a square box around the face, 224x224) from frames that
    are already face crops (the pipeline's 256x256 output, or prepared clips): the central
    square of side ``face_fraction`` of the crop.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "cpu", face_fraction: float = 0.8,
                 batch_size: int = 16) -> None:
        self.net = SyncNet.from_file(weights).to(device)
        self.device, self.face_fraction, self.batch_size = torch.device(device), face_fraction, batch_size

    @torch.no_grad()
    def embeddings(self, frames: np.ndarray, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window embeddings (video [W, D], audio [W, D]) of RGB uint8 frames [T, H, W, 3] at
        25 fps and 16 kHz audio; window t covers frames t..t+4 and MFCC frames 4t..4t+19."""
        import cv2

        h, w = frames.shape[1:3]
        side = int(min(h, w) * self.face_fraction)
        y0, x0 = (h - side) // 2, (w - side) // 2
        faces = np.stack([cv2.resize(f[y0 : y0 + side, x0 : x0 + side], (224, 224)) for f in frames])
        ceps = torch.from_numpy(mfcc(wav).T.copy())  # [13, M]
        count = min(len(faces), ceps.shape[1] // 4) - 5
        if count < 1:
            raise ValueError(f"the video is too short for SyncNet ({len(faces)} frames; at least 6 are needed)")
        video = torch.from_numpy(faces).permute(3, 0, 1, 2).float()  # [3, T, 224, 224]
        vid, aud = [], []
        for s in range(0, count, self.batch_size):
            idx = range(s, min(count, s + self.batch_size))
            vid.append(self.net.video(torch.stack([video[:, i : i + 5] for i in idx]).to(self.device)))
            aud.append(self.net.audio(torch.stack([ceps[None, :, 4 * i : 4 * i + 20] for i in idx]).to(self.device)))
        return torch.cat(vid).cpu(), torch.cat(aud).cpu()

    def score(self, frames: np.ndarray, wav: np.ndarray) -> dict[str, float]:
        """``lse_d``, ``lse_c`` and ``av_offset`` of a video (see :func:`sync_scores`)."""
        return sync_scores(*self.embeddings(frames, wav))
