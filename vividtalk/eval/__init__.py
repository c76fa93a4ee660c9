"""Evaluation metrics of talking-head generation: mesh, image and identity metrics."""

from .mesh import face_dynamics_deviation, lip_vertex_error, upper_face_vertices

__all__ = ["face_dynamics_deviation", "lip_vertex_error", "upper_face_vertices"]
