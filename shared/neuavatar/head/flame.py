"""FLAME (Li et al. 2017) from the user's own licence-gated pickle, behind the ``HeadModel`` interface.

    head = load_flame(Path("FLAME2020/generic_model.pkl"), landmarks_npz=Path("flame_mediapipe478.npz"),
                      uv_obj=Path("FLAME2020/head_template.obj"))
    out = head(head.zero_params())  # out.vertices (1, 5023, 3)

Accepted files: FLAME 2020 ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl`` and FLAME 2023
``flame2023.pkl`` / ``flame2023_no_jaw.pkl``. All of them are one pickled dict, as the FLAME authors' loaders
read it (``smpl_webuser/serialization.py`` in Rubikplayer/flame-fitting, ``flame_pytorch/flame.py`` in
soubhiksanyal/FLAME_PyTorch, ``flame/FLAME.py`` in Zielon/metrical-tracker):

    v_template     (5023, 3)        float64, metres, y up, the face looking along +z (our model space)
    f              (9976, 3)        integer triangles
    shapedirs      (5023, 3, 400)   columns 0-299 identity, 300-399 expression (2020 and 2023 alike)
    posedirs       (5023, 3, 36)    pose correctives, multiplied by FLAME's "lrotmin" feature (below)
    J_regressor    (5, 5023)        a scipy.sparse csc matrix
    weights        (5023, 5)        skinning weights, rows summing to 1
    kintree_table  (2, 5)           [parent ids; joint ids]; the root's parent is 2**32 - 1
    J (5, 3), bs_style "lbs", bs_type "lrotmin"

Float arrays are numpy arrays or chumpy ``Ch`` objects (chumpy wrapped them when the file was written).

The pickles reference chumpy (which no longer imports on numpy 2) and old scipy module paths, and a
pickle can run any code it names. So they are read by ``_FlameUnpickler``, whose ``find_class`` knows
only numpy's array reconstruction, scipy's csc/csr matrices and chumpy's ``Ch`` (replaced by a stand-in
that keeps the array chumpy stores in ``__dict__["x"]``); any other name is refused before it is called.

Joints. FLAME orders them global (root), neck, jaw, left eye, right eye: smplx's FLAME layer concatenates
``leye_pose, reye_pose`` and metrical-tracker documents eye pose "[0:3] left, [3:6] right", left and right
being the subject's own. In FLAME's axes x points to the subject's left, so the loader also checks that the
left eye joint (3) lies at larger x than the right one (4). The interface orders them root, neck, jaw,
right eye, left eye: ``_FLAME_JOINT`` maps one to the other.

Pose correctives. FLAME adds ``posedirs · lrotmin(θ)`` before skinning, where ``lrotmin`` stacks
``(R_j - I).ravel()`` (row-major) for joints j = 1..4 in FLAME's order: feature k = 9 (j - 1) + 3 r + c.
``neuavatar.head.lbs.skin`` builds the same feature in the interface's order and multiplies a
(36, 3 V) matrix whose column v * 3 + c moves coordinate c of vertex v, so the loader reshapes
posedirs to (3 V, 36), swaps the two eyes' 9-column blocks and transposes.
"""

from __future__ import annotations

import functools
import importlib
import io
import math
import pickle
import pickletools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from neuavatar.errors import InputError
from neuavatar.head.model import HeadModel, LandmarkEmbedding
from neuavatar.landmarks import NUM_MEDIAPIPE

__all__ = ["FLAME_NUM_VERTICES", "FLAME_NUM_FACES", "FLAME_NUM_IDENTITY", "FlameVersion", "FlameHead", "load_flame",
           "nearest_surface_embedding"]

FLAME_NUM_VERTICES = 5023
FLAME_NUM_FACES = 9976
FLAME_NUM_IDENTITY = 300  # shapedirs columns before this are identity, the rest expression
FlameVersion = Literal["2020", "2023"]

_FLAME_PARENTS = (-1, 0, 1, 1, 1)  # global -> neck -> jaw, left eye, right eye
_FLAME_JOINT = (0, 1, 2, 4, 3)  # FLAME's index of each interface joint (root, neck, jaw, right_eye, left_eye)
_REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
# (vertices, joints) of the body models people mistake for FLAME: they share its pickle layout.
_OTHER_MODELS = {(6890, 24): "an SMPL body model", (10475, 55): "an SMPL-X body model", (778, 16): "a MANO hand model"}
_PYTHON2_STRING_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING"})

# Regions, from the skinning weights and the rest pose (approximate; FLAME_masks.pkl is the exact source).
_DOMINANT_WEIGHT = 0.5  # a vertex belongs to the joints that carry more than this share of it
_FACE_DEPTH_M = 0.03  # "face": in front of the plane this far behind the eyeball centres


# ---------------------------------------------------------------------------------------------- reading


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle asked for a class or function outside the allow-list."""


class _ChumpyArray:
    """What a pickled ``chumpy.ch.Ch`` becomes. A plain ``Ch`` keeps its value in ``__dict__["x"]``."""

    __slots__ = ("array",)

    def __setstate__(self, state: object) -> None:
        x = state.get("x") if isinstance(state, dict) else None
        if not isinstance(x, np.ndarray):
            raise pickle.UnpicklingError("a chumpy.ch.Ch without an array in its 'x' entry")
        self.array = x


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles bytes at protocol 2 as ``_codecs.encode(text, "latin1")``; that call and no other."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of a {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> the object a FLAME pickle may name. Old paths map to today's objects."""
    import scipy.sparse as sp

    multiarray = importlib.import_module("numpy._core.multiarray")  # numpy 2; pickles say numpy.core.multiarray
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
        ("chumpy.ch", "Ch"): _ChumpyArray,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("__builtin__", "builtins"):  # chumpy keeps sets in its state
        allowed[(module, "set")] = set
    for fmt, cls in (("csc", sp.csc_matrix), ("csr", sp.csr_matrix)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):  # scipy < 1.8 and today
            allowed[(module, f"{fmt}_matrix")] = cls
    return allowed


class _FlameUnpickler(pickle.Unpickler):
    """Resolves only the names a FLAME file needs; anything else raises before it is imported or called."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _read_pickle(path: Path) -> tuple[object, bool]:
    """The unpickled contents of ``path`` and whether Python 2 wrote it. Raises InputError."""
    if not path.exists():
        raise InputError(f"FLAME model not found: {path} (download it from https://flame.is.tue.mpg.de and pass "
                         "the path of generic_model.pkl or flame2023.pkl)")
    if path.is_dir():
        raise InputError(f"{path} is a directory; pass the FLAME .pkl file in it (generic_model.pkl or flame2023.pkl)")
    data = path.read_bytes()
    if not data:
        raise InputError(f"{path} is empty; download the FLAME model again")
    if data[:2] == b"PK" or data[:6] == b"\x93NUMPY":
        raise InputError(f"{path} is a numpy .npz/.npy file, not FLAME's .pkl (generic_model.pkl or flame2023.pkl)")
    if data[:1] != b"\x80":
        raise InputError(f"{path} is not a pickle of protocol 2 or later, as FLAME's are (it starts with {data[:8]!r})")
    written_by_python2 = _written_by_python2(path, data)
    try:
        return _FlameUnpickler(io.BytesIO(data), encoding="latin1").load(), written_by_python2
    except _ForbiddenGlobal as e:
        raise InputError(f"{path} asks to load {e}, which no FLAME model contains; refusing it (a pickle can run "
                         "code, so only numpy, scipy.sparse and chumpy arrays are allowed)") from None
    except Exception as e:  # a corrupt stream can fail anywhere in the C unpickler or in numpy's reconstruction
        raise InputError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download it again") from None


def _written_by_python2(path: Path, data: bytes) -> bool:
    """Whether the stream holds Python 2's 8-bit strings (Python 3 never writes these opcodes)."""
    try:
        return any(op.name in _PYTHON2_STRING_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception as e:  # pickletools raises ValueError for truncation, others for garbage
        raise InputError(f"{path} is truncated or corrupt ({e}); download it again") from None


# ------------------------------------------------------------------------------------------- checking


def _as_array(path: Path, key: str, value: object) -> np.ndarray:
    """A numpy array from an array, a chumpy stand-in or a scipy sparse matrix."""
    import scipy.sparse as sp

    if isinstance(value, _ChumpyArray):
        value = value.array
    elif sp.issparse(value):
        # Rebuilt through the public constructor rather than trusted: the pickle set the matrix's
        # attributes directly (from scipy 0.x state); the constructor checks indices against the shape.
        try:
            state = vars(value)
            value = type(value)((state["data"], state["indices"], state["indptr"]), shape=state["_shape"]).toarray()
        except Exception as e:
            raise InputError(f"{path}: {key} is a broken sparse matrix ({type(e).__name__}: {e})") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"array of {value.dtype}"
        raise InputError(f"{path}: {key} is a {kind}, not a numeric array")
    return value


def _flame_arrays(path: Path, raw: object) -> dict[str, np.ndarray]:
    """The arrays of a FLAME dict, checked; InputError names the file, the key and what is wrong."""
    if not isinstance(raw, dict):
        raise InputError(f"{path} holds a {type(raw).__name__}, not FLAME's dict of arrays")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{path} is not a FLAME model: it lacks {', '.join(missing)} (its keys: "
                         f"{', '.join(sorted(map(str, raw)))})")
    a = {k: _as_array(path, k, raw[k]) for k in _REQUIRED_KEYS}
    _check_kind(path, a)
    _check_shapes(path, a)
    _check_values(path, a)
    _check_rig(path, a, raw)
    return a


def _check_kind(path: Path, a: dict[str, np.ndarray]) -> None:
    """Reject other SMPL-family models by their vertex and joint counts, before the shape details."""
    template, kintree = a["v_template"], a["kintree_table"]
    counts = (len(template) if template.ndim else 0, kintree.shape[-1] if kintree.ndim == 2 else 0)
    if counts != (FLAME_NUM_VERTICES, 5):
        guess = _OTHER_MODELS.get(counts, "not FLAME")
        raise InputError(f"{path} has {counts[0]} vertices and {counts[1]} joints, FLAME has {FLAME_NUM_VERTICES} "
                         f"and 5: this is {guess}")


def _check_shapes(path: Path, a: dict[str, np.ndarray]) -> None:
    v = FLAME_NUM_VERTICES
    want = {"v_template": (v, 3), "f": (FLAME_NUM_FACES, 3), "posedirs": (v, 3, 36), "J_regressor": (5, v),
            "weights": (v, 5), "kintree_table": (2, 5)}
    for key, shape in want.items():
        if a[key].shape != shape:
            raise InputError(f"{path}: {key} has shape {a[key].shape}, FLAME's is {shape}")
    shapedirs = a["shapedirs"].shape
    if len(shapedirs) != 3 or shapedirs[:2] != (v, 3) or shapedirs[2] <= FLAME_NUM_IDENTITY:
        raise InputError(f"{path}: shapedirs has shape {shapedirs}, FLAME's is ({v}, 3, {FLAME_NUM_IDENTITY} "
                         "identity + the expression components)")
    for key in ("f", "kintree_table"):
        if a[key].dtype.kind not in "iu":
            raise InputError(f"{path}: {key} holds {a[key].dtype}, FLAME's holds integers")


def _check_values(path: Path, a: dict[str, np.ndarray]) -> None:
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.isfinite(a[key]).all():
            raise InputError(f"{path}: {key} holds NaN or infinite values")
    if a["f"].min() < 0 or a["f"].max() >= FLAME_NUM_VERTICES:
        raise InputError(f"{path}: f indexes vertices {a['f'].min()}..{a['f'].max()}, FLAME has {FLAME_NUM_VERTICES}")
    sums = a["weights"].sum(1)
    worst = int(np.abs(sums - 1).argmax())
    if abs(sums[worst] - 1) > 1e-3:
        raise InputError(f"{path}: weights of vertex {worst} sum to {sums[worst]:.4f}, not 1")


def _check_rig(path: Path, a: dict[str, np.ndarray], raw: dict) -> None:
    """FLAME's tree, skinning style and joint order, which the conversion to the interface relies on."""
    if _parents(a["kintree_table"]) != _FLAME_PARENTS:
        raise InputError(f"{path}: kintree_table {a['kintree_table'].tolist()} is not FLAME's tree (joints 0..4 with "
                         f"parents {_FLAME_PARENTS}: global -> neck -> jaw and both eyes)")
    for key, want in (("bs_style", "lbs"), ("bs_type", "lrotmin")):
        if key in raw and not (isinstance(raw[key], str) and raw[key] == want):
            raise InputError(f"{path}: {key} is {raw[key]!r}; only FLAME's {want!r} is supported")
    joints = a["J_regressor"] @ a["v_template"]
    if not joints[3, 0] > joints[4, 0]:
        raise InputError(f"{path}: the left eye joint is at x = {joints[3, 0]:.4f} m and the right one at "
                         f"{joints[4, 0]:.4f} m; in FLAME's axes the subject's left eye has the larger x")


def _parents(kintree: np.ndarray) -> tuple[int, ...] | None:
    """Parent index of each joint (-1 for the root) from SMPL's [parent ids; joint ids] table, or None
    when the joint ids are not 0, 1, 2, ... in order. The root's parent id is any id outside them."""
    ids = [int(i) for i in kintree[1]]
    if ids != list(range(len(ids))):
        return None
    return tuple(p if 0 <= p < len(ids) else -1 for p in (int(x) for x in kintree[0]))


# ----------------------------------------------------------------------------------------- conversion


def _interface_buffers(a: dict[str, np.ndarray], num_shape: int, num_expression: int) -> dict[str, Tensor]:
    """FLAME's arrays in the interface's joint order and layouts, as float32 / int64 tensors."""
    v = FLAME_NUM_VERTICES
    order = list(_FLAME_JOINT)
    blocks = [j - 1 for j in order[1:]]  # FLAME's 9-column block of each non-root interface joint
    posedirs = a["posedirs"].reshape(3 * v, 4, 9)[:, blocks].reshape(3 * v, 36).T  # (36, 3V), column v * 3 + c
    shapedirs = a["shapedirs"]
    arrays = {
        "template": a["v_template"],
        "faces": a["f"].astype(np.int64),
        "shape_basis": shapedirs[:, :, :num_shape],
        "expression_basis": shapedirs[:, :, FLAME_NUM_IDENTITY:FLAME_NUM_IDENTITY + num_expression],
        "joint_regressor": a["J_regressor"][order],
        "lbs_weights": a["weights"][:, order],
        "pose_correctives": posedirs,
    }
    # Native byte order and contiguous, as torch.from_numpy needs.
    return {k: torch.from_numpy(np.ascontiguousarray(x, np.int64 if k == "faces" else np.float32))
            for k, x in arrays.items()}


def _regions(template: Tensor, weights: Tensor, joints: Tensor) -> dict[str, Tensor]:
    """(V,) vertex masks from (V, 3) rest vertices, (V, 5) interface-order weights and (5, 3) joints.

    ``eyes``: the eyeballs, skinned mostly to the eye joints. ``neck``: skinned mostly to the root (the
    neck below the head joint). ``face``: the rest that lies in front of a plane ``_FACE_DEPTH_M`` behind
    the eyeball centres (forehead, cheeks, nose, mouth, chin; not ears or scalp). Approximate.
    """
    eyes = weights[:, 3:].sum(1) > _DOMINANT_WEIGHT
    neck = weights[:, 0] > _DOMINANT_WEIGHT
    front = template[:, 2] > joints[3:, 2].mean() - _FACE_DEPTH_M
    return {"face": front & ~eyes & ~neck, "neck": neck, "eyes": eyes}


def _cylindrical_uvs(vertices: np.ndarray) -> np.ndarray:
    """(V, 2) UVs in [0, 1] from (V, 3) vertices: a cylinder around the vertical axis through the head's centre.

    u is the angle around y (0.5 straight ahead, the seam at the back of the head), v the height. A
    stand-in that keeps textures working without FLAME's UV layout; triangles across the seam stretch.
    """
    centre = (vertices.max(0) + vertices.min(0)) / 2
    u = 0.5 + np.arctan2(vertices[:, 0] - centre[0], vertices[:, 2] - centre[2]) / (2 * math.pi)
    y = vertices[:, 1]
    v = (y - y.min()) / max(float(np.ptp(y)), 1e-12)
    return np.clip(np.stack([u, v], 1), 0.0, 1.0)


def _read_obj_uvs(path: Path, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) UVs and (F, 3) per-corner UV indices from FLAME's ``head_template.obj``.

    The OBJ's triangles must be the pickle's ``faces`` (F, 3): in the same order, or else the same
    triangles in another order or corner rotation, which are matched back to the pickle's.
    """
    if not path.is_file():
        raise InputError(f"UV template not found: {path} (FLAME's head_template.obj, with vt and f v/vt lines)")
    uvs, obj_faces, obj_uv_faces = _parse_obj(path)
    if len(uvs) == 0 or len(obj_faces) != len(faces):
        raise InputError(f"{path} has {len(uvs)} UVs and {len(obj_faces)} triangles; FLAME's template has UVs and "
                         f"{len(faces)} triangles")
    if not np.isfinite(uvs).all():
        raise InputError(f"{path}: a vt line holds NaN or infinity")
    if obj_uv_faces.min() < 0 or obj_uv_faces.max() >= len(uvs):
        raise InputError(f"{path}: a face refers to a UV that does not exist (it has {len(uvs)})")
    if not np.array_equal(obj_faces, faces):
        obj_uv_faces = _match_corners(path, obj_faces, obj_uv_faces, faces)
    return uvs, obj_uv_faces


def _parse_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``vt`` lines and the vertex / UV indices of ``f`` lines (0-based; negative OBJ indices resolved)."""
    uvs: list[tuple[float, float]] = []
    faces: list[list[int]] = []
    uv_faces: list[list[int]] = []
    num_v = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        try:
            if parts and parts[0] == "v":
                num_v += 1
            elif parts and parts[0] == "vt":
                uvs.append((float(parts[1]), float(parts[2])))
            elif parts and parts[0] == "f":
                corners = [p.split("/") for p in parts[1:]]
                if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                    raise ValueError("FLAME's template faces are triangles written v/vt or v/vt/vn")
                faces.append([_obj_index(int(c[0]), num_v) for c in corners])
                uv_faces.append([_obj_index(int(c[1]), len(uvs)) for c in corners])
        except (ValueError, IndexError) as e:
            raise InputError(f"{path}, line {lineno}: cannot read {line.strip()!r} ({e})") from None
    return np.asarray(uvs, np.float64).reshape(-1, 2), np.asarray(faces, np.int64), np.asarray(uv_faces, np.int64)


def _obj_index(index: int, count: int) -> int:
    """OBJ indices count from 1, or back from the latest element when negative."""
    return index - 1 if index > 0 else count + index


def _match_corners(path: Path, obj_faces: np.ndarray, obj_uv_faces: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The OBJ's UV indices rearranged to the pickle's triangle order and corner order."""
    index = {tuple(sorted(t)): i for i, t in enumerate(obj_faces.tolist())}
    rows = [index.get(tuple(sorted(t)), -1) for t in faces.tolist()]
    if len(index) != len(obj_faces) or min(rows) < 0:
        raise InputError(f"{path}: its triangles are not the FLAME model's (a UV template of another mesh?)")
    same = obj_faces[rows][:, None, :] == faces[:, :, None]  # (F, corner in pickle, corner in OBJ)
    return np.take_along_axis(obj_uv_faces[rows], same.argmax(2), 1)


# ------------------------------------------------------------------------------------------ landmarks


def nearest_surface_embedding(vertices: Tensor, faces: Tensor, points: Tensor, *,
                              chunk_size: int = 16) -> LandmarkEmbedding:
    """Embed points in a mesh at their closest surface points (triangle + barycentric weights).

    Args:
        vertices: (V, 3) mesh vertices, e.g. FLAME's template in metres.
        faces: (F, 3) long triangles.
        points: (L, 3) points in the same space, e.g. MediaPipe's 478 landmarks registered to the mesh.
        chunk_size: points compared with all triangles at once (memory grows as chunk_size * F).

    Returns:
        A LandmarkEmbedding with L points; on ``vertices`` it gives the closest surface point to each input.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"faces must have shape (F, 3) with F > 0, got {tuple(faces.shape)}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (L, 3), got {tuple(points.shape)}")
    corners = vertices.detach().double()[faces.long()].unbind(1)  # 3 x (F, 3)
    best_faces, best_bary = [], []
    for chunk in points.detach().double().to(vertices.device).split(chunk_size):
        dist2, bary = _closest_on_triangles(chunk[:, None], *corners)  # (l, F), (l, F, 3)
        best = dist2.argmin(1)
        best_faces.append(best)
        best_bary.append(bary[torch.arange(len(chunk), device=best.device), best])
    return LandmarkEmbedding(torch.cat(best_faces).cpu(), torch.cat(best_bary).float().cpu())


def _closest_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distance (l, F) from (l, 1, 3) points to (F, 3)-cornered triangles, and the closest points'
    barycentric weights (l, F, 3): the projection when it falls inside the triangle, else the nearest
    point of the three edges (the nearest surface point lies on an edge whenever the projection is out).
    """
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)  # (F,)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)  # (l, F)
    denom = d00 * d11 - d01 * d01
    flat = denom <= 1e-12 * d00 * d11  # degenerate triangles: edges only
    safe = torch.where(flat, torch.ones_like(denom), denom)
    v = (d11 * d20 - d01 * d21) / safe
    w = (d00 * d21 - d01 * d20) / safe
    plane = torch.stack([1 - v - w, v, w], -1)
    inside = ~flat & (plane >= 0).all(-1)
    plane_dist2 = ((p - (plane[..., :1] * a + v[..., None] * b + w[..., None] * c)) ** 2).sum(-1)

    best_dist2 = torch.full_like(plane_dist2, math.inf)
    best_bary = torch.zeros_like(plane)
    tri = (a, b, c)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        start, edge = tri[i], tri[j] - tri[i]
        t = (((p - start) * edge).sum(-1) / (edge * edge).sum(-1).clamp_min(1e-30)).clamp(0, 1)
        dist2 = ((p - start - t[..., None] * edge) ** 2).sum(-1)
        bary = torch.zeros_like(plane)
        bary[..., i], bary[..., j] = 1 - t, t
        closer = dist2 < best_dist2
        best_dist2 = torch.where(closer, dist2, best_dist2)
        best_bary = torch.where(closer[..., None], bary, best_bary)
    return torch.where(inside, plane_dist2, best_dist2), torch.where(inside[..., None], plane, best_bary)


def _landmark_source(landmark_embedding: LandmarkEmbedding | None, landmarks_npz: Path | None,
                     landmark_points: Tensor | None) -> LandmarkEmbedding | Tensor:
    """The one landmark source given: an embedding (as given or read from the .npz) or (478, 3) points.

    Checked before the model file is read, so that a missing or doubled source fails at once.
    """
    given = {"landmark_embedding": landmark_embedding, "landmarks_npz": landmarks_npz,
             "landmark_points": landmark_points}
    given = {k: x for k, x in given.items() if x is not None}
    if len(given) > 1:
        raise ValueError(f"pass one landmark source, got {', '.join(given)}")
    if not given:
        raise ValueError(
            f"FLAME's pickle does not place MediaPipe's {NUM_MEDIAPIPE} landmarks on its surface; pass "
            f"landmarks_npz= (an .npz with faces ({NUM_MEDIAPIPE},) and barycentric ({NUM_MEDIAPIPE}, 3) on the FLAME "
            f"mesh), landmark_embedding= (a LandmarkEmbedding), or landmark_points= (({NUM_MEDIAPIPE}, 3) points "
            "registered to FLAME's template, embedded at their closest surface points)")
    if landmark_points is not None:
        if tuple(landmark_points.shape) != (NUM_MEDIAPIPE, 3):
            raise ValueError(f"landmark_points must have shape ({NUM_MEDIAPIPE}, 3), got {tuple(landmark_points.shape)}")
        return landmark_points
    if landmarks_npz is not None:
        return _read_landmarks_npz(landmarks_npz)
    return landmark_embedding


def _embed(source: LandmarkEmbedding | Tensor, template: Tensor, faces: Tensor) -> LandmarkEmbedding:
    """The embedding on FLAME's (F, 3) triangles: points are embedded on the (V, 3) template."""
    if isinstance(source, Tensor):
        return nearest_surface_embedding(template, faces, source)
    if len(source.faces) and (source.faces.min() < 0 or source.faces.max() >= len(faces)):
        raise ValueError(f"the landmark embedding refers to triangles {int(source.faces.min())}.."
                         f"{int(source.faces.max())}; FLAME has {len(faces)}")
    return source


def _read_landmarks_npz(path: Path) -> LandmarkEmbedding:
    if not path.is_file():
        raise InputError(f"landmark embedding not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("faces", "barycentric") if k in npz.files}
    except Exception as e:
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if len(arrays) != 2:
        raise InputError(f"{path} must hold arrays 'faces' ({NUM_MEDIAPIPE},) and 'barycentric' ({NUM_MEDIAPIPE}, 3); "
                         f"it lacks {' and '.join(k for k in ('faces', 'barycentric') if k not in arrays)}")
    faces, bary = arrays["faces"], arrays["barycentric"]
    if faces.shape != (NUM_MEDIAPIPE,) or bary.shape != (NUM_MEDIAPIPE, 3) or faces.dtype.kind not in "iu":
        raise InputError(f"{path}: faces must be ({NUM_MEDIAPIPE},) integers and barycentric ({NUM_MEDIAPIPE}, 3), "
                         f"got {faces.shape} {faces.dtype} and {bary.shape}")
    return LandmarkEmbedding(torch.from_numpy(faces.astype(np.int64)), torch.from_numpy(bary.astype(np.float32)))


# ------------------------------------------------------------------------------------------------ model


class FlameHead(HeadModel):
    """FLAME behind the ``HeadModel`` interface. Build it with :func:`load_flame`.

    Attributes:
        version: "2020" or "2023", the FLAME release the file belongs to (see ``load_flame``).
    """

    name = "flame"

    def __init__(self, *, version: FlameVersion, **buffers: Any):
        super().__init__(**buffers)
        self.version = version


def load_flame(path: Path | str, *, landmark_embedding: LandmarkEmbedding | None = None,
               landmarks_npz: Path | str | None = None, landmark_points: Tensor | None = None,
               uv_obj: Path | str | None = None, num_shape: int = 300, num_expression: int = 100,
               version: FlameVersion | None = None) -> FlameHead:
    """Load a FLAME 2020 / 2023 pickle the user supplies, without chumpy and without running its code.

    Args:
        path: generic_model.pkl, male_model.pkl, female_model.pkl (FLAME 2020), flame2023.pkl or
            flame2023_no_jaw.pkl.
        landmark_embedding: MediaPipe's 478 points on FLAME's triangles. Exactly one of this,
            ``landmarks_npz`` and ``landmark_points`` is required (the pickle has no such embedding).
        landmarks_npz: an .npz with ``faces`` (478,) int and ``barycentric`` (478, 3).
        landmark_points: (478, 3) points registered to FLAME's template (metres), embedded at their
            closest surface points by :func:`nearest_surface_embedding`.
        uv_obj: FLAME's head_template.obj (``vt`` and ``f v/vt`` lines on the pickle's triangles). Without
            it, UVs come from a cylindrical projection around the vertical axis (``_cylindrical_uvs``).
        num_shape: identity components to keep (FLAME has 300).
        num_expression: expression components to keep (FLAME has 100).
        version: overrides the release detected from the file (below).

    Returns:
        A FlameHead on the CPU, float32 buffers, joints in the interface's order.

    Raises:
        InputError: the file is missing, not a pickle, truncated, names a class outside the allow-list,
            is another model (SMPL, ...) or lacks or misshapes a FLAME array; the UV template or landmark
            file is unusable; num_shape / num_expression exceed what the file holds.
        ValueError: a bad argument (negative counts, landmark sources missing or given twice).
    """
    path = Path(path)
    if version not in (None, "2020", "2023"):
        raise ValueError(f"version must be '2020', '2023' or None, got {version!r}")
    if num_shape < 0 or num_expression < 0:
        raise ValueError(f"num_shape and num_expression must be >= 0, got {num_shape} and {num_expression}")
    landmarks = _landmark_source(landmark_embedding, None if landmarks_npz is None else Path(landmarks_npz),
                                 landmark_points)
    raw, written_by_python2 = _read_pickle(path)
    arrays = _flame_arrays(path, raw)
    available = arrays["shapedirs"].shape[2] - FLAME_NUM_IDENTITY
    if num_shape > FLAME_NUM_IDENTITY or num_expression > available:
        raise InputError(f"{path} has {FLAME_NUM_IDENTITY} identity and {available} expression components; asked "
                         f"for num_shape={num_shape}, num_expression={num_expression}")
    buffers = _interface_buffers(arrays, num_shape, num_expression)
    template, faces = buffers["template"], buffers["faces"]
    if uv_obj is not None:
        uvs, face_uvs = (torch.from_numpy(x) for x in _read_obj_uvs(Path(uv_obj), arrays["f"].astype(np.int64)))
    else:
        uvs, face_uvs = torch.from_numpy(_cylindrical_uvs(arrays["v_template"])), faces
    joints = buffers["joint_regressor"] @ template
    return FlameHead(version=version or _release(written_by_python2), uvs=uvs.float(), face_uvs=face_uvs.long(),
                     landmarks_mediapipe=_embed(landmarks, template, faces),
                     regions=_regions(template, buffers["lbs_weights"], joints), **buffers)


def _release(written_by_python2: bool) -> FlameVersion:
    """The FLAME release, told by the pickle's writer.

    FLAME 2020 (like 2017 and 2019 before it) was pickled by Python 2, whose 8-bit strings (STRING /
    BINSTRING opcodes) are why every loader passes encoding="latin1". FLAME 2023 came after Python 2's
    end of life and is taken to be Python 3's, which never writes those opcodes. No key or shape tells
    the releases apart (both: 5023 vertices, 300 + 100 components, 36 correctives). Not checked against
    a real flame2023.pkl, hence ``load_flame(version=...)``.
    """
    return "2020" if written_by_python2 else "2023"
