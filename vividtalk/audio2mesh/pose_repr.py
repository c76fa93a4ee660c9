"""A normalised, scale-free head-pose representation for the head-pose codebook.

The rigid pose P of a frame (``vividtalk.face.pose``) is 7 numbers
``(pitch, yaw, roll, tx, ty, tz, scale)``: radians, crop pixels and pixels per face height.
Those units depend on the crop and the face size, so the VQ-VAE of VividTalk's learnable
head-pose codebook (the sequences ``P_r^{1:f}`` of ``L_rec`` / ``L_map``) learns on a
6-D feature expressed *relative to a reference pose* ``P_ref``:

    features = (pitch - pitch_ref, yaw - yaw_ref, roll - roll_ref,
                (tx - tx_ref) / scale_ref, (ty - ty_ref) / scale_ref,
                log(scale / scale_ref))

i.e. angles in radians relative to the reference, image-plane translation in face heights and
the log zoom. ``tz`` carries no image information under the weak-perspective crop and is
copied back from the reference by :func:`features_to_pose`. The reference frame itself maps to
zeros. Angles are subtracted per axis (not composed as rotations): for the few-degree motion
of talking heads the two agree to second order, and the map stays exactly invertible.
"""

from __future__ import annotations

import torch

FEATURE_DIM = 6
"""Size of the pose feature: 3 relative angles, 2 relative translations, 1 log scale."""


def _check(pose: torch.Tensor, reference: torch.Tensor, last: int) -> torch.Tensor:
    """Validate shapes and return the reference [..., 1, 7] broadcastable over time."""
    if pose.shape[-1] != last:
        raise ValueError(f"expected last dimension {last}, got shape {tuple(pose.shape)}")
    if reference.shape[-1] != 7:
        raise ValueError(f"reference must be [..., 7], got shape {tuple(reference.shape)}")
    return reference.unsqueeze(-2)  # [..., 1, 7]


def pose_to_features(pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Rigid poses -> relative, scale-free pose features.

    Args:
        pose: [..., T, 7] float poses (pitch, yaw, roll, tx, ty, tz, scale), any device.
        reference: [..., 7] reference pose ``P_ref`` (broadcast against ``pose``'s leading
            dims), e.g. the pose of the source image or of a clip's first frame; its scale
            must be positive.
    Returns:
        [..., T, 6] features, same dtype and device; the reference pose maps to zeros.
    """
    ref = _check(pose, reference, 7)  # [..., 1, 7]
    angles = pose[..., :3] - ref[..., :3]  # [..., T, 3]
    shift = (pose[..., 3:5] - ref[..., 3:5]) / ref[..., 6:7]  # [..., T, 2]
    log_scale = torch.log(pose[..., 6:7] / ref[..., 6:7])  # [..., T, 1]
    return torch.cat([angles, shift, log_scale], dim=-1)


def relative_features(pose: torch.Tensor) -> torch.Tensor:
    """Pose sequences [..., T, 7] -> features [..., T, 6] relative to each one's first frame."""
    return pose_to_features(pose, pose[..., 0, :])


def features_to_pose(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pose_to_features`; ``tz`` is copied from the reference.

    Args:
        features: [..., T, 6] pose features.
        reference: [..., 7] the reference pose used by :func:`pose_to_features`.
    Returns:
        [..., T, 7] poses, same dtype and device.
    """
    ref = _check(features, reference, FEATURE_DIM)  # [..., 1, 7]
    angles = features[..., :3] + ref[..., :3]  # [..., T, 3]
    scale_ref = ref[..., 6:7]  # [..., 1, 1]
    shift = features[..., 3:5] * scale_ref + ref[..., 3:5]  # [..., T, 2]
    tz = ref[..., 5:6].expand_as(features[..., :1])  # [..., T, 1]
    scale = torch.exp(features[..., 5:6]) * scale_ref  # [..., T, 1]
    return torch.cat([angles, shift, tz, scale], dim=-1)


def pose_statistics(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-axis motion statistics of pose-feature sequences ("neither static nor jittery").

    Args:
        features: [B, T, 6] pose features (T >= 4).
    Returns:
        dict of [6] tensors, each averaged over the batch:
        ``std``: temporal standard deviation (near 0 for a frozen head);
        ``velocity``: mean absolute first difference per frame;
        ``jerk``: mean absolute third difference per frame (large for jittery motion);
        ``jerk_ratio``: ``jerk / std`` (scale-free roughness; 0 for a straight line).
    """
    if features.dim() != 3 or features.shape[1] < 4:
        raise ValueError(f"expected [B, T>=4, D] features, got shape {tuple(features.shape)}")
    std = features.std(dim=1, unbiased=False).mean(0)  # [6]
    velocity = features.diff(n=1, dim=1).abs().mean((0, 1))  # [6]
    jerk = features.diff(n=3, dim=1).abs().mean((0, 1))  # [6]
    ratio = jerk / std.clamp_min(torch.finfo(features.dtype).eps)  # [6]
    return {"std": std, "velocity": velocity, "jerk": jerk, "jerk_ratio": ratio}
