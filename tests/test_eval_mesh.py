"""Mesh metrics against answers computed by hand."""

import torch

from vividtalk.eval import face_dynamics_deviation, lip_vertex_error, upper_face_vertices


def test_lve_is_the_mean_of_per_frame_maxima():
    target = torch.zeros(3, 5, 3)
    pred = target.clone()
    lips = torch.tensor([1, 2])
    pred[0, 1, 0] = 3.0  # frame 0: errors 3 and 0 on the lips -> 3
    pred[1, 2, 1] = 4.0
    pred[1, 1, 2] = 1.0  # frame 1: max(1, 4) = 4
    pred[2, 4, 0] = 9.0  # frame 2: off the lips -> 0
    assert torch.isclose(lip_vertex_error(pred, target, lips), torch.tensor(7.0 / 3.0))
    assert lip_vertex_error(target, target, lips) == 0
    batched = lip_vertex_error(torch.stack([pred, target]), torch.stack([target, target]), lips)
    assert batched.shape == (2,) and batched[1] == 0


def test_fdd_of_a_still_prediction_is_the_target_dynamics():
    t = torch.arange(50.0)
    target = torch.zeros(50, 4, 3)
    target[:, 0, 1] = torch.sin(t)  # vertex 0 moves, vertex 1 is still
    still = target.mean(0, keepdim=True).expand(50, -1, -1)
    upper = torch.tensor([0, 1])
    expected = torch.sin(t).abs().std() / 2  # (std of |sin| for vertex 0 + 0) / 2 vertices
    torch.testing.assert_close(face_dynamics_deviation(still, target, upper), expected)
    assert face_dynamics_deviation(target, target, upper).abs() < 1e-6


def test_upper_face_is_eyes_and_brows_not_lips(face_model):
    upper = set(upper_face_vertices(face_model).tolist())
    assert set(face_model.regions["left_eye_upper"]) <= upper and set(face_model.regions["right_eyebrow"]) <= upper
    assert not set(face_model.lip_indices.tolist()) & upper
