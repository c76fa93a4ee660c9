"""Face geometry: tracking, cropping, the linear face model, poses and fitting."""

from .crop import CropBox, clip_crop_box, crop_image, paste_back
from .fitting import FaceFitter, FitResult
from .image import as_rgb_uint8
from .model import FaceModel
from .pose import POSE_DIM, apply_pose, euler_to_matrix, invert_pose, matrix_to_euler, procrustes
from .mediapipe_tracker import MediaPipeTracker
from .trackers import get_tracker
from .tracking import FaceCutError, FaceTooSmallError, NoFaceError, Tracker

__all__ = [
    "CropBox",
    "FaceFitter",
    "FaceModel",
    "FaceCutError",
    "FaceTooSmallError",
    "FitResult",
    "MediaPipeTracker",
    "NoFaceError",
    "POSE_DIM",
    "Tracker",
    "apply_pose",
    "as_rgb_uint8",
    "clip_crop_box",
    "crop_image",
    "euler_to_matrix",
    "get_tracker",
    "invert_pose",
    "matrix_to_euler",
    "paste_back",
    "procrustes",
]
