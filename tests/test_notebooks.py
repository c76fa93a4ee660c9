"""The notebooks run top to bottom (nbclient) on their short default inputs, with the demo
weights, and what they print is right: each prints its facts as ``name: value`` lines (a
Python literal), which the checks below read back."""

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def printed_facts(book) -> dict:
    """``name: value`` lines of the executed notebook's stdout -> {name: literal value}."""
    facts = {}
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                for line in out.text.splitlines():
                    match = re.fullmatch(r"([a-z_]\w*): (.+)", line.strip())
                    if match:
                        assert match[1] not in facts, f"{match[1]} printed twice"
                        facts[match[1]] = ast.literal_eval(match[2])
    return facts


def check_face_model(facts, folder):
    from vividtalk.face import FaceModel

    model = FaceModel.default()
    assert facts["model"] == model.model_id
    assert facts["landmarks"] == (478, 3) and facts["crop"] == (256, 256, 3)
    assert facts["fit_residual_px"] < 1.0  # measured 0.18 px: the model spans the tracked face
    assert 0.1 < facts["face_fraction"] < 0.6  # the crop's margin around the face (0.27)
    assert facts["landmarks_on_face"] > 0.8  # the render lies on the tracked mesh (0.90: rims round off)
    centre = facts["changed_rows_centre"]  # where each blendshape moves the face, 0: top, 1: chin
    assert set(centre) <= set(model.expression_names) and len(centre) == 5
    lower, upper = ("jawOpen", "mouthSmileLeft", "mouthPucker"), ("eyeBlinkLeft", "browInnerUp")
    assert min(centre[n] for n in lower) > 0.55 and max(centre[n] for n in upper) < 0.45, centre
    assert centre["jawOpen"] > centre["mouthSmileLeft"] and centre["browInnerUp"] < centre["eyeBlinkLeft"]


def check_audio_to_mesh(facts, folder):
    from vividtalk.face import FaceModel

    frames = round(25 * facts["audio_seconds"])
    assert facts["audio_seconds"] == 2.0  # SECONDS of the demo speech
    assert facts["vertices"] == (frames, 468, 3)
    assert facts["beta"] == (frames, len(FaceModel.default().expression_names))
    assert facts["jaw_loudness_corr"] > 0.3  # the jaw opens with the speech (measured 0.74)
    assert 0.5 < facts["max_head_angle_deg"] < 30  # the head moves, plausibly (10.9)
    assert facts["frames"][0] == 0 and facts["frames"][-1] == frames - 1 and len(facts["frames"]) == 6


def check_mesh_to_video(facts, folder):
    assert 0 <= facts["frame"] < 50
    assert facts["jaw_open"] > 0.2  # the widest open mouth of the speech (0.40)
    # The output is the source person with the pose and the mouth of the driving mesh (23.1 dB):
    # not the source itself (inf), not another picture (< 15).
    assert 18 < facts["psnr_vs_source_db"] < 40
    assert facts["mouth_vs_rest_change"] > 1.5  # it changed most at the mouth (2.8)


def check_generate(facts, folder):
    frames, fps = facts["frames"], facts["fps"]
    assert fps == 25 and frames[1:] == (256, 256, 3)
    assert frames[0] == round(fps * 2.0)  # SECONDS of speech
    assert (folder / "generate_demo.mp4").stat().st_size > 10_000
    assert facts["video_frames"] == frames[0]  # read back from the file
    assert facts["video_seconds"] == pytest.approx(frames[0] / fps, abs=0.05)
    assert facts["audio_seconds"] == pytest.approx(frames[0] / fps, abs=0.05)  # the audio track goes along
    assert 0.1 < facts["mean_frame_change"] < 10  # the face moves, not a still and not noise (0.57)


CHECKS = {"01_face_model": check_face_model, "02_audio_to_mesh": check_audio_to_mesh,
          "03_mesh_to_video": check_mesh_to_video, "04_generate": check_generate}


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(CHECKS)
    for path in NOTEBOOKS:  # committed without outputs
        book = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in book.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) or "text/html" in o.get("data", {}) for o in outputs)
    CHECKS[path.stem](printed_facts(book), tmp_path)
