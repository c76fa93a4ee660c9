"""Synthetic speech (eSpeak NG), coarticulated visemes and face/head motion (data_prep.synth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

pytest.importorskip("espeakng_loader")

from data_prep.synth import motion, speech, visemes
from vividtalk.audio.align import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME as HOP


@pytest.fixture(scope="module")
def names(face_model) -> list[str]:
    return face_model.expression_names


@pytest.fixture(scope="module")
def papa() -> speech.Utterance:
    return speech.synthesize("Papa made a mom buy five blue boots.", "en-us+m2", 160, 50)


@pytest.fixture(scope="module")
def mama() -> speech.Utterance:
    """Bilabials between open vowels, starting and ending in silence."""
    return speech.pad_silence(speech.synthesize("Mama, papa, bob.", "en+f2", 170, 50), 0.3, 0.3)


@pytest.fixture(scope="module")
def long_utterance() -> speech.Utterance:
    """About 6 s: 2 s of silence, speech, 1.5 s of silence."""
    u = speech.synthesize("My mother bought five blue boots and a map.", "en-gb-x-rp+m4", 150, 45)
    return speech.pad_silence(u, 2.0, 1.5)


def frame_rms(audio: np.ndarray, num: int) -> np.ndarray:
    """float64 [num] RMS of each 640-sample frame."""
    padded = np.pad(audio.astype(np.float64), (0, num * HOP - len(audio)))
    return np.sqrt((padded.reshape(num, HOP) ** 2).mean(1))


def frame_at(t: float) -> int:
    """The frame whose centre is nearest to time t (s)."""
    return round(t * FPS - 0.5)


# ----------------------------------------------------------------------------- speech
def test_synthesize_audio_and_phonemes(papa):
    assert papa.audio.dtype == np.float32 and papa.audio.ndim == 1
    assert 1.2 < papa.duration < 4.0  # 8 words at 160 words per minute
    assert np.abs(papa.audio).max() <= 1.0 and np.sqrt(np.mean(papa.audio ** 2)) > 0.02
    starts = np.array([s for _, s, _ in papa.phonemes])
    ends = np.array([e for _, _, e in papa.phonemes])
    assert abs(starts[0]) < 0.05 and abs(ends[-1] - papa.duration) < 0.05
    assert np.all(ends > starts) and np.allclose(starts[1:], ends[:-1])  # ordered, contiguous
    symbols = {visemes.strip_stress(p) for p, _, _ in papa.phonemes}
    assert {"p", "m", "b", "f", "v", "_"} <= symbols
    # The timings are real: silence segments are quiet, speech is not.
    audio, sr = papa.audio, SAMPLE_RATE
    quiet = np.concatenate([audio[int(s * sr):int(e * sr)] for p, s, e in papa.phonemes if p == "_"])
    loud = np.concatenate([audio[int(s * sr):int(e * sr)] for p, s, e in papa.phonemes if p != "_"])
    assert np.sqrt(np.mean(quiet ** 2)) < 0.1 * np.sqrt(np.mean(loud ** 2))


def test_synthesize_is_deterministic(papa):
    speech.synthesize("Something else in between.", "en+f4", 190, 70)  # must leave no trace
    again = speech.synthesize("Papa made a mom buy five blue boots.", "en-us+m2", 160, 50)
    np.testing.assert_array_equal(again.audio, papa.audio)
    assert again.phonemes == papa.phonemes


def test_synthesize_is_deterministic_across_processes(papa):
    """A fresh interpreter (another clock, another process) speaks the same samples."""
    import hashlib
    import subprocess
    import sys

    code = (
        "import hashlib; from data_prep.synth.speech import synthesize; "
        "u = synthesize('Papa made a mom buy five blue boots.', 'en-us+m2', 160, 50); "
        "print(hashlib.sha1(u.audio.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha1(papa.audio.tobytes()).hexdigest()


def test_voices_differ_and_all_exist():
    a = speech.synthesize("Hello there.", "en+m1")
    b = speech.synthesize("Hello there.", "en+f2")
    n = min(len(a.audio), len(b.audio))
    assert len(a.audio) != len(b.audio) or not np.allclose(a.audio[:n], b.audio[:n])
    for voice in speech.VOICES:
        u = speech.synthesize("Hi.", voice)
        assert u.duration > 0.1 and np.abs(u.audio).max() > 0.05, voice
    assert len(speech.VOICES) >= 12


@pytest.mark.parametrize("voice", ["xx-nonexistent", "en+nonexistentvariant"])
def test_unknown_voice_raises(voice):
    with pytest.raises(ValueError, match="voice"):
        speech.synthesize("Hello.", voice)


def test_random_sentence_and_padding(papa):
    rng = np.random.default_rng(3)
    sentences = [speech.random_sentence(rng) for _ in range(50)]
    assert all(6 <= len(s.split()) <= 14 and s.endswith(".") for s in sentences)
    assert len(set(sentences)) > 40
    again = np.random.default_rng(3)
    assert [speech.random_sentence(again) for _ in range(50)] == sentences
    padded = speech.pad_silence(papa, 0.3, 0.2)
    assert abs(padded.duration - papa.duration - 0.5) < 1e-3
    assert padded.phonemes[0][0] == "_" and padded.phonemes[0][2] >= 0.3
    assert padded.phonemes[-1][0] == "_" and padded.phonemes[-1][2] == pytest.approx(padded.duration)


# ----------------------------------------------------------------------------- visemes
def test_viseme_classes():
    assert visemes.viseme_classes("p") == ("bilabial",)
    assert visemes.viseme_classes("'A:") == ("open",)
    assert visemes.viseme_classes("f") == ("labiodental",)
    assert visemes.viseme_classes("u:") == ("rounded",)
    assert visemes.viseme_classes("aI") == ("open", "spread")
    assert visemes.viseme_classes("_:") == ("silence",)
    assert visemes.stress_of("'A:") == 2 and visemes.stress_of(",eI") == 1 and visemes.stress_of("@") == 0


def step_curves(phonemes, num: int, names: list[str]) -> np.ndarray:
    """Reference without coarticulation: each frame takes its phoneme's viseme target."""
    beta = np.zeros((num, len(names)))
    times = (np.arange(num) + 0.5) / FPS
    for symbol, start, end in phonemes:
        inside = (times >= start) & (times < end)
        for key, value in visemes.VISEMES[visemes.viseme_classes(symbol)[0]].target.items():
            for name in visemes.shape_names(key):
                beta[inside, names.index(name)] = value
    return beta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bilabials_close_and_open_vowels_open(mama, names, seed):
    num = motion.num_frames(len(mama.audio))
    beta = visemes.viseme_curves(mama.phonemes, num, names, np.random.default_rng(seed))
    assert beta.shape == (num, len(names)) and beta.dtype == np.float32
    assert beta.min() >= 0.0 and beta.max() <= 1.0
    jaw, press = beta[:, names.index("jawOpen")], beta[:, names.index("mouthPress")]
    closures = [frame_at((s + e) / 2) for p, s, e in mama.phonemes
                if visemes.viseme_classes(p) == ("bilabial",)]
    assert len(closures) >= 5
    assert np.all(jaw[closures] < 0.1) and np.all(press[closures] > 0.3)
    opens = [frame_at((s + e) / 2) for p, s, e in mama.phonemes if visemes.viseme_classes(p) == ("open",)]
    assert np.all(jaw[opens] > jaw[closures].max() + 0.05)
    assert jaw.max() > 0.3
    assert jaw[:3].max() < 0.05 and jaw[-3:].max() < 0.05  # silence: mouth at rest


def test_the_jaw_orders_vowels_by_openness_and_rises_for_alveolars(names):
    """Articulatory order of jaw opening (articulography: open vowels 8-15 mm, schwa ~6, close
    vowels and alveolars 3-5): the mean jawOpen over each class's phonemes, many sentences."""
    from collections import defaultdict

    rng = np.random.default_rng(4)
    jaw = defaultdict(list)
    for i in range(12):
        u = speech.synthesize(speech.random_sentence(rng), "en-us", 160, 50)
        beta = visemes.viseme_curves(u.phonemes, motion.num_frames(len(u.audio)), names, np.random.default_rng(i))
        for p, s, e in u.phonemes:
            jaw[visemes.viseme_classes(p)].append(beta[frame_at((s + e) / 2), names.index("jawOpen")])
    mean = {k[0]: float(np.mean(v)) for k, v in jaw.items() if len(k) == 1 and len(v) >= 5}
    assert mean["open"] > mean["mid"] > mean["schwa"] > max(mean["spread"], mean["rounded"])
    assert mean["schwa"] > 1.3 * max(mean["spread"], mean["rounded"])
    assert mean["alveolar"] < 0.75 * mean["mid"]  # consonants borrow from their vowels, but less


def test_curves_are_smooth(papa, names):
    num = motion.num_frames(len(papa.audio))
    beta = visemes.viseme_curves(papa.phonemes, num, names, np.random.default_rng(0))
    step = step_curves(papa.phonemes, num, names)
    assert np.abs(np.diff(beta, axis=0)).max() < 0.5
    roughness = np.abs(np.diff(beta, 2, axis=0)).mean()
    assert roughness < 0.6 * np.abs(np.diff(step, 2, axis=0)).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anticipation_and_carryover(names, seed):
    """Articulation starts before its phoneme (jaw before an open vowel, lip rounding already
    during the t of "two") and decays after it; checked on a fine grid, on hand-made timings."""
    fps = 200

    def curve(phonemes, name):
        num = int(phonemes[-1][2] * fps)
        beta = visemes.viseme_curves(phonemes, num, names, np.random.default_rng(seed), fps=fps)
        return beta[:, names.index(name)]

    jaw = curve([("_", 0.0, 0.5), ("'A:", 0.5, 0.8), ("_", 0.8, 1.3)], "jawOpen")
    assert jaw[int(0.3 * fps)] < 0.05 and jaw[int(1.1 * fps)] < 0.05  # at rest well away
    assert jaw[int(0.48 * fps)] > 0.2 * jaw.max()  # opening 20 ms before the vowel
    assert jaw[int(0.82 * fps)] > 0.2 * jaw.max()  # still open 20 ms after it
    assert int(0.5 * fps) <= jaw.argmax() < int(0.8 * fps)
    pucker = curve([("_", 0.0, 0.4), ("t", 0.4, 0.47), ("'u:", 0.47, 0.7), ("_", 0.7, 1.0)], "mouthPucker")
    assert pucker[int(0.2 * fps)] < 0.05
    assert pucker[int(0.435 * fps)] > 0.3 * pucker.max()  # rounding during the t


# ----------------------------------------------------------------------------- motion
@pytest.fixture(scope="module")
def lip_geometry(face_model):
    lips = face_model.lip_indices.numpy()
    return face_model.mean.numpy()[lips], face_model.exp_basis.numpy()[:, lips]


def synth(utterance, names, seed, lip_geometry=None):
    positions, basis = lip_geometry if lip_geometry is not None else (None, None)
    return motion.synth_motion(utterance, names, 80, np.random.default_rng(seed),
                               lip_positions=positions, lip_basis=basis)


def test_motion_shapes_ranges_and_antagonists(long_utterance, names, lip_geometry):
    for seed in range(4):
        m = synth(long_utterance, names, seed, lip_geometry)
        num = math.ceil(len(long_utterance.audio) / HOP)
        assert m.beta.shape == (num, len(names)) and m.lip_offsets.shape == (num, 80, 3)
        assert m.head.shape == (num, 6) and m.speech_activity.shape == (num,)
        for array in (m.beta, m.lip_offsets, m.head, m.speech_activity):
            assert array.dtype == np.float32 and np.isfinite(array).all()
        assert m.beta.min() >= 0.0 and m.beta.max() <= 1.0
        assert m.speech_activity.min() >= 0.0 and m.speech_activity.max() <= 1.0
        for a, b in motion.ANTAGONISTS:
            both = (m.beta[:, names.index(a)] > 0.05) & (m.beta[:, names.index(b)] > 0.05)
            assert not both.any(), (a, b)


def test_blinks(long_utterance, names):
    assert long_utterance.duration >= 5.5
    for seed in range(5):
        m = synth(long_utterance, names, seed)
        for eye in ("eyeBlinkLeft", "eyeBlinkRight"):
            blink = m.beta[:, names.index(eye)]
            assert blink.max() > 0.8  # at least one blink, and it closes the eye
            assert np.median(blink) < 0.05  # eyes open most of the time
            closed = blink > 0.5
            assert closed.sum() <= 4 * (np.diff(closed.astype(int)) == 1).sum() + 4  # blinks are brief


def test_brows_rise_while_speaking(long_utterance, names):
    raised = []
    for seed in range(6):
        m = synth(long_utterance, names, seed)
        raised.append(m.beta[:, names.index("browInnerUp")][m.speech_activity > 0.5].max())
    assert max(raised) > 0.2


def test_head_moves_more_while_speaking_and_smoothly(long_utterance, names):
    ratios = []
    for seed in range(4):
        m = synth(long_utterance, names, seed)
        speaking, silent = m.speech_activity > 0.9, m.speech_activity < 0.05
        assert speaking.sum() > 20 and silent.sum() > 20
        velocity = np.abs(np.diff(m.head, axis=0))  # [T - 1, 6]
        ratios.append(velocity[speaking[1:]].mean(0) / velocity[silent[1:]].mean(0))
        std = m.head.std(0)
        assert np.all(std[:3] < math.radians(6)) and np.abs(m.head[:, :3]).max() < math.radians(20)
        jerk = np.abs(np.diff(m.head, 3, axis=0)).mean(0)
        assert np.all(jerk < 0.05 * std)  # white noise of the same std would give ~3.3 std
    assert np.all(np.mean(ratios, axis=0) > 1.3)


def test_jaw_follows_loudness(names):
    corr = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        u = motion.make_utterance(rng)
        assert u.voice in speech.VOICES and 130 <= u.rate <= 200 and 30 <= u.pitch <= 70
        m = motion.synth_motion(u, names, 80, rng)
        rms = frame_rms(u.audio, len(m.beta))
        jaw = m.beta[:, names.index("jawOpen")].astype(np.float64)
        corr.append(np.corrcoef(gaussian_filter1d(rms, 1.0), gaussian_filter1d(jaw, 1.0))[0, 1])
        assert jaw[0] < 0.1 and jaw[-1] < 0.1  # padded with silence: closed at both ends
    assert min(corr) > 0.1 and np.mean(corr) > 0.3


def test_lip_offsets(long_utterance, names, lip_geometry):
    m = synth(long_utterance, names, 0, lip_geometry)
    norm = np.linalg.norm(m.lip_offsets, axis=2)  # [T, L]
    assert 0.002 - 1e-6 <= norm.max() <= 0.005 + 1e-6
    step = np.linalg.norm(np.diff(m.lip_offsets, axis=0), axis=2).max()
    assert step < 0.5 * norm.max()  # temporally smooth
    speaking, silent = m.speech_activity > 0.9, m.speech_activity < 0.05
    assert norm[speaking].mean() > norm[silent].mean()
    # Orthogonal to the blendshapes at the lips: what they cannot explain.
    basis = lip_geometry[1].reshape(len(names), -1)  # [K, 3L]
    flat = m.lip_offsets.reshape(len(m.lip_offsets), -1).astype(np.float64)
    coeff, *_ = np.linalg.lstsq(basis.T, flat.T, rcond=None)
    assert np.abs(basis.T @ coeff).max() < 1e-3 * norm.max() + 1e-7


def test_motion_is_deterministic(long_utterance, names, lip_geometry):
    a = synth(long_utterance, names, 7, lip_geometry)
    b = synth(long_utterance, names, 7, lip_geometry)
    c = synth(long_utterance, names, 8, lip_geometry)
    for field in ("beta", "lip_offsets", "head", "speech_activity"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.beta, c.beta) and not np.array_equal(a.head, c.head)
    u1, u2 = motion.make_utterance(np.random.default_rng(4)), motion.make_utterance(np.random.default_rng(4))
    np.testing.assert_array_equal(u1.audio, u2.audio)


def test_a_person_style_sets_the_mouth_and_head_amplitudes(papa, face_model):
    """With a speaker's style the jaw follows its gain (the blend is linear in the targets) and
    the head its mobility; without one nothing changes in the per-clip random stream."""
    names = face_model.expression_names
    frames = motion.num_frames(len(papa.audio))
    base = {**visemes.speaking_style(np.random.default_rng(0)), "jaw": 0.8}
    wide = {**base, "jaw": 0.96}  # targets stay below the clip at 1: the jaw scales by 1.2
    jaw = names.index("jawOpen")
    a = visemes.viseme_curves(papa.phonemes, frames, names, np.random.default_rng(5), style=base)[:, jaw]
    b = visemes.viseme_curves(papa.phonemes, frames, names, np.random.default_rng(5), style=wide)[:, jaw]
    moving = a > 1e-3
    assert moving.sum() > 10 and np.allclose(b[moving] / a[moving], 1.2, rtol=1e-4)
    # two utterances of one speaker keep its gains up to the 5 % jitter
    c = visemes.viseme_curves(papa.phonemes, frames, names, np.random.default_rng(6), style=base)[:, jaw]
    assert 0.9 < c.max() / a.max() < 1.11
    times = (np.arange(frames) + 0.5) / FPS
    activity = motion.speech_activity(papa.phonemes, frames)
    stressed = motion.stressed_times(papa.phonemes)
    one = motion.head_motion(times, stressed, activity, np.random.default_rng(1), mobility=np.ones(6))
    two = motion.head_motion(times, stressed, activity, np.random.default_rng(1), mobility=2 * np.ones(6))
    assert np.allclose(two[:, 1:], 2 * one[:, 1:], atol=1e-7)  # pitch also carries the nods
    plain = visemes.viseme_curves(papa.phonemes, frames, names, np.random.default_rng(5))
    again = visemes.viseme_curves(papa.phonemes, frames, names, np.random.default_rng(5), style=None)
    assert np.array_equal(plain, again)
