"""The linear face model: mean shape, identity and expression bases, topology, lip vertices.

VividTalk's hybrid prior (docs/architecture.md, "Data contracts") assembles a mesh as

    M = (S + alpha U_id + beta U_exp + O_lip) (x) P

with S the mean shape [V, 3], U_id the identity basis [K_id, V, 3], U_exp the expression
basis [K, V, 3] (named blendshapes for the default model), O_lip the lip vertex offsets
[L, 3] scattered onto the lip vertices, and P a similarity pose (see :mod:`.pose`).

The default model (:meth:`FaceModel.default`) lives on the MediaPipe Face Mesh topology (468
vertices) and is package data built by ``python -m data_prep face-model``; its file is read once
per process and every ``default()`` is a cheap module of its own (own tensors). Any other linear
model with the same layout plugs in (:meth:`FaceModel.load`, :meth:`FaceModel.from_faceverse`).
The model is an ``nn.Module`` of buffers so that ``.to(device)`` moves it with the networks
that use it; its buffers are not saved in checkpoints (``model_id`` identifies it instead).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .pose import apply_pose

DEFAULT_ASSET = Path(__file__).parent / "assets" / "mediapipe468.npz"

_ARRAYS = ("mean", "id_basis", "exp_basis", "triangles", "lip_indices")


class FaceModel(nn.Module):
    """A linear 3-D face model.

    Args:
        mean: float [V, 3] mean (neutral) shape S.
        id_basis: float [K_id, V, 3] identity basis U_id (K_id may be 0).
        exp_basis: float [K, V, 3] expression basis U_exp.
        triangles: int [F, 3] faces, consistently oriented.
        lip_indices: int [L] vertices that carry lip offsets O_lip.
        expression_names: K names (e.g. ARKit-style ``jawOpen``).
        identity_names: K_id names (default ``id0``, ``id1``, ...).
        regions: named vertex index arrays (``lips``, ``left_eye_upper``, ``face_oval``...).
        name: a short label; the model id is the label plus a hash of the arrays.
    """

    def __init__(
        self,
        mean: np.ndarray,
        id_basis: np.ndarray,
        exp_basis: np.ndarray,
        triangles: np.ndarray,
        lip_indices: np.ndarray,
        expression_names: list[str] | None = None,
        identity_names: list[str] | None = None,
        regions: dict[str, np.ndarray] | None = None,
        name: str = "face",
    ) -> None:
        super().__init__()
        mean = np.asarray(mean, dtype=np.float32)
        v = mean.shape[0]
        id_basis = np.asarray(id_basis, dtype=np.float32).reshape(-1, v, 3)
        exp_basis = np.asarray(exp_basis, dtype=np.float32).reshape(-1, v, 3)
        triangles = np.asarray(triangles, dtype=np.int64)
        lip_indices = np.asarray(lip_indices, dtype=np.int64)
        _check_layout(mean, triangles, lip_indices)
        self.expression_names = list(expression_names or [f"exp{i}" for i in range(len(exp_basis))])
        self.identity_names = list(identity_names or [f"id{i}" for i in range(len(id_basis))])
        if len(self.expression_names) != len(exp_basis) or len(self.identity_names) != len(id_basis):
            raise ValueError("the number of names must match the number of basis vectors")
        self.regions = {k: np.asarray(r, dtype=np.int64) for k, r in (regions or {}).items()}
        self.name = name
        self.model_id = f"{name}-{_digest(mean, id_basis, exp_basis, triangles, lip_indices)}"
        for key, value in zip(_ARRAYS, (mean, id_basis, exp_basis, triangles, lip_indices)):
            self.register_buffer(key, torch.from_numpy(value), persistent=False)

    # ----------------------------------------------------------------- sizes
    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def num_expressions(self) -> int:
        return self.exp_basis.shape[0]

    @property
    def num_identity(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_lip_vertices(self) -> int:
        return self.lip_indices.shape[0]

    # -------------------------------------------------------------- geometry
    def ncc_colors(self) -> torch.Tensor:
        """Normalised coordinate code: the mean shape scaled per axis to [0, 1], [V, 3]."""
        lo, hi = self.mean.min(0).values, self.mean.max(0).values
        return (self.mean - lo) / (hi - lo)

    def identity_shape(self, alpha: torch.Tensor) -> torch.Tensor:
        """S + alpha U_id: alpha [..., K_id] -> [..., V, 3]."""
        return self.mean + torch.einsum("...k,kvc->...vc", alpha, self.id_basis)

    def expression_offsets(self, beta: torch.Tensor) -> torch.Tensor:
        """beta U_exp: beta [..., K] -> [..., V, 3]."""
        return torch.einsum("...k,kvc->...vc", beta, self.exp_basis)

    def lip_contour(self) -> torch.Tensor:
        """Vertex indices of the lip contours [40] (outer loop, then inner loop, each from the
        subject's right corner over the upper lip and back under the lower lip): the 2-D lip
        landmarks of the clip format."""
        r = self.regions
        order = [r["lips_outer_upper"], r["lips_outer_lower"][1:-1][::-1],
                 r["lips_inner_upper"], r["lips_inner_lower"][1:-1][::-1]]
        return torch.from_numpy(np.concatenate(order))

    def scatter_lips(self, lip_offsets: torch.Tensor) -> torch.Tensor:
        """O_lip [..., L, 3] -> per-vertex offsets [..., V, 3] (zero off the lips)."""
        out = lip_offsets.new_zeros(*lip_offsets.shape[:-2], self.num_vertices, 3)
        return out.index_copy(-2, self.lip_indices, lip_offsets)

    def assemble(
        self,
        beta: torch.Tensor,
        identity: torch.Tensor | None = None,
        alpha: torch.Tensor | None = None,
        lip_offsets: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """M = (S + alpha U_id + beta U_exp + O_lip) (x) P, differentiable in every input.

        Args:
            beta: [..., K] expression coefficients.
            identity: [..., V, 3] identity shape (S + alpha U_id + any free residual); if
                None it is built from ``alpha`` (or is S when both are None).
            alpha: [..., K_id] identity coefficients (ignored when ``identity`` is given).
            lip_offsets: [..., L, 3] lip vertex offsets O_lip.
            pose: [..., 7] similarity pose; None keeps the canonical frame.
        Returns:
            [..., V, 3] vertices.
        """
        if identity is None:
            identity = self.identity_shape(alpha) if alpha is not None else self.mean
        mesh = identity + self.expression_offsets(beta)
        if lip_offsets is not None:
            mesh = mesh + self.scatter_lips(lip_offsets)
        return apply_pose(mesh, pose) if pose is not None else mesh

    # ------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike) -> None:
        """Write the model as an ``.npz`` of plain arrays (no pickling)."""
        arrays = {k: getattr(self, k).cpu().numpy() for k in _ARRAYS}
        arrays["expression_names"] = np.array(self.expression_names)
        arrays["identity_names"] = np.array(self.identity_names)
        arrays["name"] = np.array(self.name)
        arrays.update({f"region_{k}": v for k, v in self.regions.items()})
        tmp = Path(str(path) + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceModel":
        """Read a model written by :meth:`save` (or any ``.npz`` with the same keys)."""
        return cls(**_read_model_file(Path(path)))

    @classmethod
    def default(cls) -> "FaceModel":
        """The packaged MediaPipe-topology model: a fresh module each call.

        The file is read once per process (:func:`default_model_arrays`); every module gets
        its own copies of the arrays, so moving or editing one (``.to(device, dtype)``, in
        place) never reaches another. Building one costs a few hundred kB of copying.
        """
        return cls(**_copy_arrays(default_model_arrays()))

    @classmethod
    def from_faceverse(
        cls, path: str | os.PathLike, lip_indices: np.ndarray | None = None, name: str = "faceverse"
    ) -> "FaceModel":
        """Load a FaceVerse-style model: a dict with ``meanshape`` [V, 3] (or [3V]),
        ``idBase`` [3V, K_id], ``exBase`` [3V, K], ``tri`` [F, 3] and optionally
        ``lip_indices`` [L]; stored as ``.npz`` or as FaceVerse's pickled ``.npy`` dict.

        Only load ``.npy`` files you trust: they are unpickled.
        """
        data = _read_dict(Path(path))
        for key in ("meanshape", "idBase", "exBase", "tri"):
            if key not in data:
                raise ValueError(f"{path} is not a FaceVerse-style model: missing {key!r}")
        mean = np.asarray(data["meanshape"], dtype=np.float32).reshape(-1, 3)
        v = mean.shape[0]
        lips = lip_indices if lip_indices is not None else data.get("lip_indices")
        if lips is None:
            raise ValueError("no lip vertex indices: pass lip_indices= or store 'lip_indices' in the file")
        as_basis = lambda b: np.asarray(b, dtype=np.float32).reshape(v, 3, -1).transpose(2, 0, 1)  # noqa: E731
        return cls(mean, as_basis(data["idBase"]), as_basis(data["exBase"]), data["tri"], lips, name=name)


def _read_model_file(path: Path) -> dict:
    """The constructor arguments of :class:`FaceModel` stored in a :meth:`FaceModel.save` file."""
    if not path.is_file():
        raise FileNotFoundError(f"face model file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in _ARRAYS if k not in z]
        if missing:
            raise ValueError(f"{path} is not a face model: missing arrays {missing}")
        return {
            **{k: z[k] for k in _ARRAYS},
            "expression_names": [str(s) for s in z["expression_names"]] if "expression_names" in z else None,
            "identity_names": [str(s) for s in z["identity_names"]] if "identity_names" in z else None,
            "regions": {k[7:]: z[k] for k in z.files if k.startswith("region_")},
            "name": str(z["name"]) if "name" in z else path.stem,
        }


@functools.lru_cache(maxsize=1)
def default_model_arrays() -> dict:
    """The packaged model's constructor arguments, read from its file once per process.

    Shared by every caller, so its numpy arrays are read-only; :meth:`FaceModel.default`
    builds modules from copies. ``default_model_arrays.cache_info().misses`` counts the reads.
    """
    kwargs = _read_model_file(_default_asset_path())
    for array in (*(kwargs[k] for k in _ARRAYS), *kwargs["regions"].values()):
        array.setflags(write=False)
    return kwargs


def _copy_arrays(kwargs: dict) -> dict:
    """Constructor arguments with every array (and the name lists) copied."""
    out = {k: np.array(kwargs[k]) for k in _ARRAYS}
    out["regions"] = {k: np.array(v) for k, v in kwargs["regions"].items()}
    names = ("expression_names", "identity_names")
    out.update({k: list(kwargs[k]) if kwargs[k] is not None else None for k in names})
    return {**out, "name": kwargs["name"]}


def _read_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"face model file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    obj = np.load(path, allow_pickle=True)
    return obj.item() if obj.dtype == object else {}


def _check_layout(mean: np.ndarray, triangles: np.ndarray, lip_indices: np.ndarray) -> None:
    v = mean.shape[0]
    if mean.ndim != 2 or mean.shape[1] != 3:
        raise ValueError(f"mean shape must be [V, 3], got {mean.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.min() < 0 or triangles.max() >= v:
        raise ValueError(f"triangles must be [F, 3] indices into {v} vertices")
    if lip_indices.ndim != 1 or lip_indices.min() < 0 or lip_indices.max() >= v:
        raise ValueError(f"lip indices must be a 1-D array of indices into {v} vertices")


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def _default_asset_path() -> Path:
    if not DEFAULT_ASSET.is_file():
        raise FileNotFoundError(
            f"the default face model {DEFAULT_ASSET} is missing from the package; "
            "rebuild it with `python -m data_prep face-model`"
        )
    return DEFAULT_ASSET


def mean_face_in_crop(model: FaceModel, size: int = 256) -> torch.Tensor:
    """The model's mean shape posed nearly frontally to fill a ``size`` crop as a tracked face
    does (face height 0.6 * size): float [1, V, 3] in crop pixels, on the model's device.
    A test and benchmark fixture with realistic screen coverage."""
    device = model.mean.device
    pose = torch.tensor([0.05, 0.1, 0.0, size / 2, size / 2, 0.0, 0.6 * size], device=device)
    return model.assemble(torch.zeros(model.num_expressions, device=device), pose=pose)[None]
