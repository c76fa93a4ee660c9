"""Streaming generation (vividtalk.streaming) with the demo weights: the same frames as the
offline call where the settings allow, independent of how the audio is chunked, bounded
memory, a face that stays alive in silence, and clear errors."""

import numpy as np
import pytest
import torch

from vividtalk.audio import load_audio
from vividtalk.pipeline import VividTalkPipeline, demo_weights_dir

SR = 16000


@pytest.fixture(scope="module")
def pipe():
    return VividTalkPipeline.from_pretrained()


@pytest.fixture(scope="module")
def portrait():
    from vividtalk.face.visualize import default_portrait

    return default_portrait()


@pytest.fixture(scope="module")
def speech():
    return load_audio(str(demo_weights_dir() / "speech.wav"))[: int(2.2 * SR)]


def chunked(wav, size):
    return [wav[k: k + size] for k in range(0, len(wav), size)]


def collect(batches):
    batches = list(batches)
    return np.concatenate([b.frames for b in batches]), batches


def test_one_block_equals_the_offline_call(pipe, portrait, speech):
    """With a block as long as the utterance (flushed at the end) a stream is the offline call."""
    offline = pipe(speech, portrait, seed=5).frames
    frames, batches = collect(pipe.stream(portrait, chunked(speech, 1600), seed=5, block=60, first_block=60))
    assert len(batches) == 1
    np.testing.assert_array_equal(frames, offline)


def test_default_stream_follows_the_offline_call(pipe, portrait, speech):
    """Small blocks with 2 frames of future: the same number of frames, timestamps and audio;
    with a still head (no pose sampling), frames within a few levels of the offline ones and
    the mouth moving with them."""
    offline = pipe(speech, portrait, seed=1, pose="still").frames
    frames, batches = collect(pipe.stream(portrait, chunked(speech, 800), seed=1, pose="still"))
    assert frames.shape == offline.shape
    stamps = np.concatenate([b.timestamps for b in batches])
    np.testing.assert_allclose(stamps, np.arange(len(frames)) / 25)
    audio = np.concatenate([b.audio for b in batches])
    np.testing.assert_array_equal(audio[: len(speech)], np.clip(speech, -1, 1))
    assert len(audio) == len(frames) * 640 and not audio[len(speech):].any()
    diff = np.abs(frames.astype(np.float32) - offline).mean()
    mouth = (slice(150, 210), slice(90, 170))  # the lower face of the 256 crop
    motion = lambda f: np.abs(np.diff(f[:, mouth[0], mouth[1]].astype(np.float32), axis=0)).mean((1, 2, 3))  # noqa: E731
    corr = np.corrcoef(motion(frames), motion(offline))[0, 1]
    print(f"stream vs offline: mean abs {diff:.2f} levels, mouth-motion correlation {corr:.2f}")
    assert diff < 3.0 and corr > 0.6  # measured 0.54 levels and 0.74


def test_frames_do_not_depend_on_the_chunk_sizes(pipe, portrait, speech):
    small, _ = collect(pipe.stream(portrait, chunked(speech, 320), seed=2))
    large, _ = collect(pipe.stream(portrait, chunked(speech, 3200), seed=2))
    mixed = [speech[:100], speech[100:5000], speech[5000:5001], speech[5001:]]
    odd, _ = collect(pipe.stream(portrait, mixed, seed=2))
    np.testing.assert_array_equal(small, large)
    np.testing.assert_array_equal(small, odd)


def test_frames_come_while_the_audio_arrives_and_memory_stays_bounded(pipe, portrait, speech):
    with pipe.stream_session(portrait, pose="still", seed=0) as session:
        first = session.push(speech[: 4 * 640])  # 4 frames: 2 to render + 2 of lookahead
        assert [len(b.frames) for b in first] == [2] and first[0].first_frame == 0
        kept = []
        for chunk in chunked(np.tile(speech, 4), 1600):  # 8.8 s more
            session.push(chunk)
            kept.append(len(session._wav))
        assert max(kept) <= (25 + 8 + 2 + 3) * 640  # 1 s of context + a block + lookahead + a chunk
        assert session.frames_done >= 8.8 * 25 - 8 - 2


def test_silence_keeps_the_face_alive(pipe, portrait):
    """Pushed silence still makes frames: the mouth stays closed, the eyes blink (a still head
    shows it), and with head motion from the audio the head keeps an idle motion."""
    silence = np.zeros(6 * SR, np.float32)
    with pipe.stream_session(portrait, pose="still", seed=4) as session:
        frames, _ = collect(session.push(silence))
    assert len(frames) >= 6 * 25 - 10
    eyes = frames[:, 95:125, 80:180].astype(np.float32)  # the eye band of the crop
    change = np.abs(eyes - np.median(eyes, axis=0)).mean((1, 2, 3))
    assert change.max() > 4 * np.median(change) + 1  # a few frames differ: blinks
    mouth = frames[:, 160:200, 100:160].astype(np.float32)
    assert np.abs(mouth - mouth[0]).mean() < 3  # no talking
    with pipe.stream_session(portrait, seed=4) as session:
        moving, _ = collect(session.push(silence))
    drift = np.abs(moving[1:].astype(np.float32) - moving[:-1]).mean((1, 2, 3))
    assert (drift > 0.05).mean() > 0.5  # not frozen: most frames move a little
    print(f"silence: blink peak {change.max():.1f} vs median {np.median(change):.2f}; "
          f"idle motion {np.median(drift):.2f} levels a frame")


def test_bad_input_is_refused(pipe, portrait):
    with pytest.raises(ValueError, match="pose must be one of"):
        pipe.stream_session(portrait, pose="video")
    with pytest.raises(ValueError, match="block must be a positive multiple of 4"):
        pipe.stream_session(portrait, block=6)
    session = pipe.stream_session(portrait)
    with pytest.raises(ValueError, match="1-D float"):
        session.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="1-D float"):
        session.push(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="NaN"):
        session.push(np.full(100, np.nan, np.float32))
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.push(np.zeros(100, np.float32))
    assert torch.is_tensor(torch.zeros(1))  # (torch imported for the session's device work)
