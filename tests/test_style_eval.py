"""``vividtalk eval-style`` (vividtalk.style_eval): cases, scores and the report on a small corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividtalk.data import ClipData, build_manifest, write_clip, write_features
from vividtalk.eval.style import style_distance
from vividtalk.face.model import FaceModel
from vividtalk.style_eval import StyleScorer, evaluate_stage1, evaluate_style, format_rows, mouth_channels, style_cases

FACE = FaceModel.default()


def _clip(person: int, take: int, frames: int = 40) -> ClipData:
    """A clip whose jaw opens with the person's own gain (person + 1) / 10 on a take's rhythm."""
    g = np.random.default_rng(10 * person + take)
    k, v = FACE.num_expressions, FACE.mean.shape[0]
    beta = np.zeros((frames, k), np.float32)
    beta[:, 0] = (person + 1) / 10 * (1 + np.sin(np.arange(frames) * (0.3 + 0.05 * take)))
    pose = np.tile(np.array([0, 0, 0, 128, 128, 0, 200], np.float32), (frames, 1))
    pose[:, 1] = 0.05 * (person + 1) * np.sin(np.arange(frames) * 0.2)
    arrays = dict(vertices=np.zeros((frames, v, 3), np.float32), pose=pose, beta=beta,
                  lip_offsets=np.zeros((frames, FACE.num_lip_vertices, 3), np.float32),
                  identity=FACE.mean.numpy().astype(np.float32), lip_landmarks=np.zeros((frames, 40, 2), np.float32),
                  masks=np.zeros((frames, 8, 8), np.uint8))
    wav = g.standard_normal(frames * 640).astype(np.float32) * 0.1
    return ClipData(np.zeros((frames, 8, 8, 3), np.uint8), wav, arrays,
                    {"source": f"p{person}t{take}", "identity": f"person{person}", "face_model_id": FACE.model_id})


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for person in range(4):
        for take in range(2):
            path = write_clip(root, f"p{person}t{take}", _clip(person, take))
            write_features(path, "toy", np.random.default_rng(person).standard_normal((40, 4)).astype(np.float32))
    build_manifest(root, val_fraction=0.0, test_fraction=0.99, seed=0)
    return root


def test_cases_pair_a_clip_with_another_of_its_person_and_one_of_another(corpus):
    cases = style_cases(corpus, "toy", frames=30, prompt_frames=20)
    assert len(cases) >= 4 and all(c.drive["beta"].shape == (1, 30, 29) for c in cases)
    for case in cases:
        gain = float(case.drive["beta"][0, :, 0].max())
        assert case.same["beta"].shape == (1, 20, 29) and case.same["features"].shape == (1, 20, 4)
        assert not torch.equal(case.same["beta"], case.drive["beta"][:, :20])  # another take...
        assert float(case.same["beta"][0, :, 0].max()) == pytest.approx(gain, rel=0.05)  # ...of the same person
        assert float(case.other["beta"][0, :, 0].max()) != pytest.approx(gain, rel=0.05)
    with pytest.raises(ValueError, match="clips-per-identity"):
        style_cases(corpus, "toy", frames=30, prompt_frames=41)


def test_scores_are_zero_on_the_real_motion_and_grow_with_a_wrong_style(corpus):
    cases = style_cases(corpus, "toy", frames=30, prompt_frames=20)
    scorer = StyleScorer(FACE, cases)
    case = cases[0]
    real = scorer(case, case.drive["beta"], case.drive["lip_offsets"], torch.zeros(1, 30, 6))
    assert real["lve"] == pytest.approx(0.0, abs=1e-9) and real["mouth_style"] == pytest.approx(0.0, abs=1e-9)
    wide = case.drive["beta"].clone()
    wide[..., 0] *= 2  # the same rhythm, twice the jaw
    louder = scorer(case, wide, case.drive["lip_offsets"])
    mouth = mouth_channels(FACE)
    own = style_distance(case.same["beta"][0, :, mouth], case.drive["beta"][0, :, mouth], scorer.mouth_scale)
    assert louder["lve"] > 0 and "pose_style" not in louder
    assert louder["mouth_style"] > 3 * float(own)  # the person's other take is close: the style is the gain
    assert mouth_channels(FACE)[0] == 0 and all(FACE.expression_names[i].startswith(("jaw", "mouth"))
                                                for i in mouth_channels(FACE))


class _CopyStage1(torch.nn.Module):
    """A stage 1 stand-in that says the same motion whatever it hears."""

    def __init__(self, beta: torch.Tensor):
        super().__init__()
        self.beta = beta
        self.style_encoder = lambda identity: identity[:, :1, 0]
        self.network = self

    def generate(self, features, z_style):
        n = features.shape[1]
        return {"beta": self.beta[:, :n], "lip_offsets": torch.zeros(1, n, FACE.num_lip_vertices, 3)}


def test_the_report_has_every_row(corpus):
    from vividtalk.audio2mesh.flow_transformer import FlowMatchingTransformer
    from vividtalk.audio2mesh.in_context_module import InContextMotionModule

    cases = style_cases(corpus, "toy", frames=30, prompt_frames=20)
    torch.manual_seed(0)
    net = FlowMatchingTransformer(51, 4, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0, max_frames=64)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    module = InContextMotionModule(net, steps=2, cfg_scale=1.0, max_prompt=20, chunk=20, overlap=5).eval()
    stage1 = _CopyStage1(cases[0].drive["beta"])
    report = evaluate_style(module, cases, stage1, cfg_scales=(0.0, 1.0), steps=(1, 2), seeds=2, progress=False,
                            temperatures=(0.0, 1.0))
    rows = report["rows"]
    assert report["cases"] == len(cases) and report["people"] == 4
    assert set(rows) == {"real motion", "VividTalk stage 1", "in-context, same prompt, w 1, 2 steps, T 1",
                         "in-context, other prompt, w 1, 2 steps, T 1", "in-context, none prompt, w 1, 2 steps, T 1",
                         "in-context, same prompt, w 0, 2 steps, T 1", "in-context, same prompt, w 1, 1 steps, T 1",
                         "in-context, same prompt, w 1, 2 steps, T 0"}
    assert rows["real motion"]["lve"] == pytest.approx(0.0, abs=1e-9)
    direct = evaluate_stage1(stage1, cases, StyleScorer(FACE, cases))
    assert rows["VividTalk stage 1"] == direct and direct["lve"] > 0  # one person's motion for all
    assert rows["in-context, same prompt, w 1, 2 steps, T 1"]["diversity"] > 0
    assert rows["in-context, same prompt, w 1, 2 steps, T 0"]["diversity"] == pytest.approx(0.0, abs=1e-7)
    assert "| VividTalk stage 1 |" in format_rows(report)
