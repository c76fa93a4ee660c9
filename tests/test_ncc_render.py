"""NCC render of the fitted portrait, the fit-face command and the render benchmark entry."""

import json

import numpy as np
import torch

from vividtalk.cli import main
from vividtalk.face import FaceFitter, clip_crop_box
from vividtalk.face.visualize import oval_mask, render_ncc
from vividtalk.render import get_rasterizer


def test_ncc_render_of_the_fitted_portrait_covers_the_face_oval(face_model, portrait_landmarks):
    box = clip_crop_box(portrait_landmarks)
    points = box.to_crop(portrait_landmarks)
    fit = FaceFitter(face_model).fit(points)
    verts = face_model.assemble(fit.beta, identity=fit.identity, lip_offsets=fit.lip_offsets, pose=fit.pose)
    image, mask = render_ncc(face_model, verts, 256, 256, get_rasterizer("torch"))
    covered = mask[0, ..., 0].numpy() > 0
    oval = oval_mask(points, face_model, 256, 256)
    iou = (covered & oval).sum() / (covered | oval).sum()
    assert iou > 0.9
    # The code is the mean shape's normalised position: left of the face is red-poor, right red-rich.
    cols = np.nonzero(covered.any(0))[0]
    left, right = image[0, :, cols[:10], 0].numpy(), image[0, :, cols[-10:], 0].numpy()
    assert left[covered[:, cols[:10]]].mean() < 0.2 < 0.8 < right[covered[:, cols[-10:]]].mean()
    assert torch.all(image[0][~torch.from_numpy(covered)] == 0)


def test_oval_mask_matches_the_polygon(face_model):
    square = np.zeros((478, 3), np.float32)
    loop = face_model.regions["face_oval"]
    t = np.linspace(0, 2 * np.pi, len(loop), endpoint=False)
    square[loop, 0], square[loop, 1] = 50 + 30 * np.cos(t), 40 + 30 * np.sin(t)
    mask = oval_mask(square, face_model, 100, 100)
    polygon_area = 0.5 * len(loop) * 30**2 * np.sin(2 * np.pi / len(loop))
    assert abs(mask.sum() - polygon_area) < 0.01 * polygon_area
    assert mask[40, 50] and not mask[5, 5]


def test_fit_face_command(tmp_path, capsys):
    out = tmp_path / "fit.png"
    assert main(["fit-face", "--output", str(out)]) == 0
    assert out.is_file() and "IoU" in capsys.readouterr().out
    import cv2

    assert cv2.imread(str(out)).shape == (256, 768, 3)


def test_fit_face_bad_input_leaves_no_file(tmp_path, capsys):
    missing_dir = tmp_path / "nope" / "fit.png"
    assert main(["fit-face", "--output", str(missing_dir)]) == 2
    assert "output directory does not exist" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.zeros((300, 300, 3), np.uint8))
    out = tmp_path / "fit.png"
    assert main(["fit-face", "--image", str(blank), "--output", str(out)]) == 2
    assert "no face found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [blank]


def test_bench_render_prints_json(capsys):
    assert main(["bench", "render", "--json", "--repeats", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "render" and report["num_vertices"] == 468
    assert report["resolution"] in ([256, 256], (256, 256), 256, "256x256")
    assert report["ms_per_frame"] > 0 and report["device"] == "cpu"
    assert main(["bench", "nosuch"]) == 2
