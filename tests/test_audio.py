"""Tests of vividtalk.audio: loading, 25 fps alignment, log-mel and wav2vec2 encoders."""

from __future__ import annotations

import socket
import subprocess
import wave

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from vividtalk.audio import (
    AudioError,
    LogMelEncoder,
    MediaNotFoundError,
    MediaStreams,
    NoAudioStreamError,
    UnreadableMediaError,
    Wav2Vec2Encoder,
    frame_audio_windows,
    hz_to_mel,
    is_silent,
    load_audio,
    mel_center_frequencies,
    mel_filterbank,
    mel_to_hz,
    num_frames,
    pad_to_frames,
    probe_streams,
)

SR = 16000
LENGTHS = (1, 639, 640, 641, 16000, 16000 * 3 + 17)
DURATION = 1.3  # seconds of every fixture file


def _ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly, failing the test on error."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-hide_banner", "-loglevel", "error"]
    subprocess.run(cmd + list(args), check=True, capture_output=True)


def _dominant_hz(wav: np.ndarray, sample_rate: int = SR) -> float:
    """Frequency (Hz) of the largest FFT peak of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1.0 / sample_rate)[np.argmax(spectrum)])


def _sine(freq: float, seconds: float, sample_rate: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Fixture files: a 440 Hz, 44.1 kHz stereo sine in several codecs, and two mp4s."""
    root = tmp_path_factory.mktemp("media")
    sine = f"sine=frequency=440:sample_rate=44100:duration={DURATION}"
    files = {}
    for ext, codec in [("wav", "pcm_s16le"), ("mp3", "libmp3lame"), ("m4a", "aac"),
                       ("flac", "flac"), ("ogg", "libvorbis")]:
        files[ext] = root / f"sine.{ext}"
        _ffmpeg("-f", "lavfi", "-i", sine, "-ac", "2", "-c:a", codec, str(files[ext]))
    video = f"testsrc=size=64x48:rate=25:duration={DURATION}"
    files["mp4"] = root / "talk.mp4"
    _ffmpeg("-f", "lavfi", "-i", video, "-f", "lavfi", "-i", sine, "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", str(files["mp4"]))
    files["mp4_silent_track"] = root / "mute.mp4"
    _ffmpeg("-f", "lavfi", "-i", video, "-c:v", "libx264", "-pix_fmt", "yuv420p",
            str(files["mp4_silent_track"]))
    return files


# ---------------------------------------------------------------------------- loading files


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "flac", "ogg", "mp4"])
def test_load_file_is_16k_mono_with_right_pitch(media, kind):
    wav = load_audio(media[kind])
    assert wav.dtype == np.float32 and wav.ndim == 1
    # Codecs pad or trim a few ms (encoder delay, frame size): allow 50 ms.
    assert abs(len(wav) / SR - DURATION) < 0.05, len(wav)
    assert abs(_dominant_hz(wav) - 440.0) <= 5.0
    # lavfi's sine has amplitude 1/8; the stereo downmix keeps it.
    assert 0.08 < np.abs(wav).max() < 0.2
    assert np.abs(wav).max() <= 1.0


def test_load_accepts_str_path(media):
    assert np.array_equal(load_audio(str(media["wav"])), load_audio(media["wav"]))


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="not an audio/video file or corrupt") as info:
        load_audio(bad)
    assert "ffmpeg:" in str(info.value)  # the ffmpeg diagnosis is passed on


def test_video_without_audio(media):
    with pytest.raises(AudioError, match="has no audio track"):
        load_audio(media["mp4_silent_track"])


def test_failures_are_typed_value_errors(media, tmp_path):
    """Each bad input raises its own class (all AudioError, so ValueError), whatever ffmpeg's
    wording: a missing file, a directory, a non-media file, a video without sound."""
    junk = tmp_path / "junk.m4a"  # (not text: ffmpeg reads .txt files as ANSI-art video)
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases = [
        (tmp_path / "nope.wav", MediaNotFoundError),
        (tmp_path, UnreadableMediaError),
        (junk, UnreadableMediaError),
        (media["mp4_silent_track"], NoAudioStreamError),
    ]
    for path, kind in cases:
        with pytest.raises(kind) as info:
            load_audio(path)
        assert type(info.value) is kind, (path, type(info.value))
        assert isinstance(info.value, AudioError) and isinstance(info.value, ValueError)
        assert str(path) in str(info.value)  # the message names the file
    assert not issubclass(NoAudioStreamError, UnreadableMediaError)  # callers can tell them apart


def test_probe_streams(media, tmp_path):
    assert probe_streams(media["mp4"]) == MediaStreams(audio=True, video=True)
    assert probe_streams(media["mp4_silent_track"]) == MediaStreams(audio=False, video=True)
    assert probe_streams(str(media["wav"])) == MediaStreams(audio=True, video=False)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (empty, tmp_path / "nope.mp4"):
        with pytest.raises(UnreadableMediaError, match="nope.mp4|empty.mp4"):
            probe_streams(bad)
    with pytest.raises(MediaNotFoundError):
        probe_streams(tmp_path / "nope.mp4")


def test_empty_wav_file(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(b"")
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(path)


def test_sample_rate_with_path_is_refused(media):
    with pytest.raises(AudioError, match="only for array input"):
        load_audio(media["wav"], sample_rate=44100)


# --------------------------------------------------------------------------- loading arrays


@pytest.mark.parametrize("layout", ["NC", "CN"])
def test_stereo_array_48k(layout):
    left = _sine(440, 1.0, 48000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1 if layout == "NC" else 0)
    wav = load_audio(stereo, sample_rate=48000)
    assert wav.dtype == np.float32 and wav.shape == (16000,)
    assert abs(_dominant_hz(wav) - 440) <= 5
    # Channel mean: amplitude 0.5 in one channel, silence in the other -> 0.25.
    assert abs(np.abs(wav[1000:-1000]).max() - 0.25) < 0.01


def test_int16_and_uint8_are_scaled():
    sine = _sine(440, 0.5, SR, amp=0.5)
    as_int16 = np.round(sine * 32767).astype(np.int16)
    wav = load_audio(as_int16, sample_rate=SR)
    assert wav.dtype == np.float32
    np.testing.assert_allclose(wav, sine, atol=1e-4)
    as_uint8 = np.round(sine * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio(as_uint8, sample_rate=SR), sine, atol=1e-2)


def test_torch_tensor_input():
    sine = _sine(440, 0.5, 32000)
    wav = load_audio(torch.from_numpy(sine), sample_rate=32000)
    assert wav.shape == (8000,)
    np.testing.assert_allclose(wav, load_audio(sine, sample_rate=32000))


@pytest.mark.parametrize("rate,freq", [(44100, 1000.0), (8000, 300.0), (22050, 3000.0)])
def test_resampling_keeps_frequency(rate, freq):
    wav = load_audio(_sine(freq, 1.0, rate), sample_rate=rate)
    assert abs(len(wav) - SR) <= 1
    assert abs(_dominant_hz(wav) - freq) <= 5.0


def test_array_needs_sample_rate():
    with pytest.raises(AudioError, match="sample_rate is required"):
        load_audio(np.zeros(100, np.float32))


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16k", True])
def test_invalid_sample_rate(rate):
    with pytest.raises(AudioError, match="invalid sample rate"):
        load_audio(np.zeros(100, np.float32), sample_rate=rate)


def test_array_errors():
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(np.zeros(0, np.float32), sample_rate=SR)
    with pytest.raises(AudioError, match="rank 3"):
        load_audio(np.zeros((2, 2, 100), np.float32), sample_rate=SR)
    with pytest.raises(AudioError, match="more than 8 channels"):
        load_audio(np.zeros((100, 20), np.float32), sample_rate=SR)
    nan = np.zeros(1000, np.float32)
    nan[10] = np.nan
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(nan, sample_rate=SR)
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(np.full(1000, np.inf, np.float32), sample_rate=44100)
    with pytest.raises(AudioError, match="divide by 32768"):
        load_audio(_sine(440, 0.1) * 32767, sample_rate=SR)


# -------------------------------------------------------------------------------- silence


def test_silence_loads_and_is_silent():
    wav = load_audio(np.zeros(SR, np.float32), sample_rate=SR)
    assert wav.shape == (SR,) and not wav.any()
    assert is_silent(wav)
    quiet = np.random.default_rng(0).normal(0, 1e-4, SR).astype(np.float32)  # -80 dBFS
    assert is_silent(quiet) and is_silent(torch.from_numpy(quiet))


def test_speech_like_noise_is_not_silent():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))  # 4 Hz syllable-rate envelope
    speech = (0.1 * rng.normal(size=SR) * syllables).astype(np.float32)
    assert not is_silent(speech)
    assert not is_silent(speech * 0.05)  # about -45 dBFS: quiet but audible
    assert is_silent(speech * 0.05, threshold_db=-40.0)


# ------------------------------------------------------------------------------ alignment


def test_num_frames_and_padding():
    expected = {0: 0, 1: 1, 639: 1, 640: 1, 641: 2, 16000: 25, 16000 * 3 + 17: 76}
    for n, frames in expected.items():
        assert num_frames(n) == frames
        assert pad_to_frames(np.ones(n, np.float32)).shape == (frames * 640,)
        assert pad_to_frames(torch.ones(2, n)).shape == (2, frames * 640)
    padded = pad_to_frames(np.ones(641, np.float32))
    assert padded[:641].all() and not padded[641:].any()
    assert num_frames(1000, fps=30) == 2  # 1000 / 533.3 samples per frame
    with pytest.raises(ValueError):
        num_frames(-1)


def test_frame_audio_windows():
    wav = torch.arange(1, 1301, dtype=torch.float32)[None]  # [1, 1300] -> 3 frames
    win = frame_audio_windows(wav, context=1)
    assert win.shape == (1, 3, 3 * 640)
    # Row f holds samples [640 (f - 1), 640 (f + 2)), zeros outside the clip.
    assert torch.equal(win[0, 1, :1300], wav[0])
    assert not win[0, 0, :640].any() and win[0, 0, 640] == 1
    assert win[0, 2, 0] == 641 and not win[0, 2, 660:].any()


# ------------------------------------------------------------------------- mel filterbank


def _slow_filterbank(n_mels, n_fft, sample_rate, scale):
    """Reference: loop over filters and bins, piecewise-linear triangle from its edges."""
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0, scale), hz_to_mel(sample_rate / 2, scale),
                                  n_mels + 2), scale)
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sample_rate / n_fft
            if lo < f <= centre:
                out[m, k] = (f - lo) / (centre - lo)
            elif centre < f < hi:
                out[m, k] = (hi - f) / (hi - centre)
    return out


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_filterbank_matches_reference(scale):
    fast = mel_filterbank(40, 512, SR, scale=scale)
    assert fast.shape == (40, 257) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, _slow_filterbank(40, 512, SR, scale), atol=1e-6)


def test_mel_scale_values():
    assert hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
    assert hz_to_mel(700.0, "htk") == pytest.approx(2595 * np.log10(2))
    freqs = np.array([0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs, scale), scale), freqs, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mel scale"):
        hz_to_mel(1.0, "bark")


def test_default_filterbank_has_no_empty_filter():
    fb = mel_filterbank()  # 80 mels, n_fft 400, 16 kHz
    centres = mel_center_frequencies(80)
    assert fb.shape == (80, 201)
    assert (fb.max(axis=1) > 0.4).all()
    # Each filter peaks at an FFT bin next to its centre frequency (bins are 40 Hz apart).
    peak_hz = fb.argmax(axis=1) * 40.0
    assert (np.abs(peak_hz - centres) <= 40.0).all()


# ------------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("out_dim", [None, 24])
def test_logmel_one_feature_per_video_frame(out_dim):
    enc = LogMelEncoder(out_dim=out_dim, hidden_dim=32)
    assert enc.feature_dim == (320 if out_dim is None else 24)
    for n in LENGTHS:
        feats = enc(torch.randn(2, n) * 0.1)
        assert feats.shape == (2, num_frames(n), enc.feature_dim), n
        assert feats.dtype == torch.float32 and torch.isfinite(feats).all()


def _slow_logmel(wav: np.ndarray, n_fft=400, hop=160, n_mels=80) -> np.ndarray:
    """Reference log-mel: explicit centred, zero-padded, Hann-windowed frames + rfft."""
    frames = num_frames(len(wav)) * 4
    padded = np.pad(pad_to_frames(wav.astype(np.float64)), (n_fft // 2, n_fft // 2))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    fb = mel_filterbank(n_mels, n_fft, SR).astype(np.float64)
    out = np.empty((frames, n_mels))
    for k in range(frames):  # frame k is centred on sample hop * k
        power = np.abs(np.fft.rfft(padded[k * hop: k * hop + n_fft] * window)) ** 2
        out[k] = np.log(fb @ power + 1e-5)
    return out


def test_logmel_matches_reference_and_stacks_frames():
    wav = np.random.default_rng(0).normal(0, 0.1, 2000).astype(np.float32)  # 4 video frames
    enc = LogMelEncoder()
    ref = _slow_logmel(wav)  # [16, 80]
    logmel = enc.log_mel(torch.from_numpy(wav)[None])[0]
    np.testing.assert_allclose(logmel.numpy(), ref, atol=2e-3)
    feats = enc(torch.from_numpy(wav)[None])[0]  # [4, 320]
    # Frame f = mel frames 4f .. 4f+3 concatenated.
    assert torch.equal(feats[2, 80:160], logmel[9])


def test_logmel_sine_lands_in_nearest_mel_band():
    enc = LogMelEncoder()
    centres = mel_center_frequencies(80)
    for freq in (200, 440, 1000, 1240, 2520, 3320, 5000, 7000):  # on FFT bins (40 Hz apart)
        feats = enc(torch.from_numpy(_sine(freq, 1.0))[None])[0]  # [25, 320]
        band_energy = feats.reshape(25, 4, 80)[4:20].mean(dim=(0, 1))  # [80]
        assert int(band_energy.argmax()) == int(np.abs(centres - freq).argmin()), freq
        # Far bands hold only leakage: many nats below the peak.
        far = np.abs(np.arange(80) - int(band_energy.argmax())) > 5
        assert band_energy.max() - band_energy[far].max() > 5.0


def _changed_frames(enc, wav: torch.Tensor, sample: int, tol: float) -> set[int]:
    """Video frames whose features move by more than ``tol`` after a click at ``sample``."""
    clicked = wav.clone()
    clicked[0, sample] += 0.9
    with torch.no_grad():
        diff = (enc(clicked) - enc(wav)).abs().amax(dim=-1)[0]  # [T]
    return set(torch.nonzero(diff > tol).flatten().tolist())


def test_logmel_click_changes_only_its_frame():
    enc = LogMelEncoder()
    wav = torch.randn(1, SR * 2) * 1e-3
    for sample in (640 * 7 + 5, 640 * 20 + 320, 640 * 33 + 630):
        changed = _changed_frames(enc, wav, sample, tol=1e-3)
        frame = sample // 640
        assert frame in changed and changed <= {frame - 1, frame, frame + 1}, (sample, changed)


def test_logmel_learned_front_end_is_local_and_trainable():
    torch.manual_seed(0)
    enc = LogMelEncoder(out_dim=16, hidden_dim=32)
    wav = torch.randn(1, SR * 2) * 1e-3
    for sample in (640 * 10 + 320, 640 * 30 + 300):  # mid-frame clicks
        changed = _changed_frames(enc, wav, sample, tol=1e-4)
        frame = sample // 640
        assert frame in changed and changed <= {frame - 1, frame, frame + 1}, (sample, changed)
    feats = enc(torch.randn(3, 5000) * 0.1)
    assert feats.shape == (3, 8, 16)
    feats.square().mean().backward()
    params = list(enc.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert set(enc.state_dict()) == {f"frontend.{k}" for k in enc.frontend.state_dict()}


def test_logmel_batch_items_are_independent():
    enc = LogMelEncoder(out_dim=8, hidden_dim=16)
    wav = torch.randn(3, 3000) * 0.1
    torch.testing.assert_close(enc(wav)[1:2], enc(wav[1:2]))


def test_logmel_rejects_bad_input():
    enc = LogMelEncoder()
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        enc(torch.zeros(100))
    with pytest.raises(ValueError, match="empty"):
        enc(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="must divide 640"):
        LogMelEncoder(hop_length=300)


# ------------------------------------------------------------------------------ wav2vec2


@pytest.fixture(scope="module")
def tiny_wav2vec2():
    """A small randomly initialised transformers.Wav2Vec2Model (same class as the real one)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_feat_extract_layers=7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=32,
    )
    return Wav2Vec2Model(config).eval()


@pytest.fixture
def offline(monkeypatch):
    """No hub access: HF offline mode, and any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_wav2vec2_one_feature_per_video_frame(tiny_wav2vec2):
    enc = Wav2Vec2Encoder(tiny_wav2vec2)
    assert enc.feature_dim == 32
    for n in LENGTHS:
        feats = enc(torch.randn(2, n) * 0.1)
        assert feats.shape == (2, num_frames(n), 32), n
        assert torch.isfinite(feats).all()


def test_wav2vec2_save_and_load_local(tiny_wav2vec2, tmp_path, offline):
    tiny_wav2vec2.save_pretrained(tmp_path / "w2v")
    loaded = Wav2Vec2Encoder.from_pretrained(tmp_path / "w2v")
    wav = torch.randn(2, 7000) * 0.1
    torch.testing.assert_close(loaded(wav), Wav2Vec2Encoder(tiny_wav2vec2)(wav))
    layer1 = Wav2Vec2Encoder.from_pretrained(tmp_path / "w2v", output_layer=1)
    assert layer1.feature_dim == 32 and layer1.output_layer == 1


def test_wav2vec2_missing_weights(tmp_path, offline):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="local disk") as info:
        Wav2Vec2Encoder.from_pretrained(missing)
    assert str(missing) in str(info.value)
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        Wav2Vec2Encoder.from_pretrained(tmp_path / "config_only")


def test_wav2vec2_normalises_input_level(tiny_wav2vec2):
    enc = Wav2Vec2Encoder(tiny_wav2vec2)
    wav = torch.randn(1, 5000) * 0.2 + 0.05
    # Per-item zero mean / unit variance: gain and DC offset do not change the features.
    torch.testing.assert_close(enc(wav), enc(wav * 0.1 - 0.3), atol=1e-4, rtol=1e-4)
    assert torch.isfinite(enc(torch.zeros(1, 3000))).all()  # silence: no division by zero


def test_wav2vec2_freeze_and_finetune(tiny_wav2vec2):
    frozen = Wav2Vec2Encoder(tiny_wav2vec2, freeze=True).train()
    assert not frozen.model.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen(torch.randn(1, 2000)).requires_grad

    import copy

    tuned = Wav2Vec2Encoder(copy.deepcopy(tiny_wav2vec2), freeze=False).train()
    assert tuned.model.training
    # Training mode applies SpecAugment, which needs >= 10 frames at 50 Hz: short clips
    # (here 0.125 s) are padded for it, and still give one feature per video frame.
    for n in (1, 2000):
        assert tuned(torch.randn(2, n)).shape == (2, num_frames(n), 32)
    tuned(torch.randn(2, 2000)).square().mean().backward()
    # (Layer drop may skip a transformer layer: check the layers every pass goes through.)
    grads = [p.grad for p in tuned.model.feature_projection.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_wav2vec2_output_layer(tiny_wav2vec2):
    wav = torch.randn(1, 4000) * 0.1
    last = Wav2Vec2Encoder(tiny_wav2vec2)(wav)
    torch.testing.assert_close(Wav2Vec2Encoder(tiny_wav2vec2, output_layer=2)(wav), last)
    first = Wav2Vec2Encoder(tiny_wav2vec2, output_layer=0)(wav)
    assert first.shape == last.shape and not torch.allclose(first, last)
    with pytest.raises(ValueError, match="output_layer"):
        Wav2Vec2Encoder(tiny_wav2vec2, output_layer=3)


def _snapped_loop(num, nfft, sample_rate):
    """Reference: python_speech_features' get_filterbanks, written as its loops."""
    top = 2595 * np.log10(1 + (sample_rate / 2) / 700)
    hz = 700 * (10 ** (np.linspace(0, top, num + 2) / 2595) - 1)
    bins = np.floor((nfft + 1) * hz / sample_rate).astype(int)
    bank = np.zeros((num, nfft // 2 + 1))
    for j in range(num):
        for k in range(bins[j], bins[j + 1]):
            bank[j, k] = (k - bins[j]) / (bins[j + 1] - bins[j])
        for k in range(bins[j + 1], bins[j + 2]):
            bank[j, k] = (bins[j + 2] - k) / (bins[j + 2] - bins[j + 1])
    return bank


@pytest.mark.parametrize("num,nfft", [(26, 512), (40, 512), (80, 400)])
def test_bin_snapped_filterbank_matches_python_speech_features_loops(num, nfft):
    got = mel_filterbank(num, nfft, SR, scale="htk", snap_to_bins=True)
    np.testing.assert_allclose(got, _snapped_loop(num, nfft, SR), atol=1e-7)
    assert got.max() == 1 and got.min() == 0


def test_htk_filterbank_matches_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=257, num_mel_filters=40, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=SR, norm=None, mel_scale="htk")
    np.testing.assert_allclose(mel_filterbank(40, 512, SR, scale="htk"), ref.T, atol=1e-6)
