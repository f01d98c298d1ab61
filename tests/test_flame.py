"""The FLAME loader, on FLAME-format files the tests write themselves.

The files have the real ones' keys, shapes and dtypes, random values, a valid kinematic tree and
skinning weights summing to 1. They are pickled the way the real ones are: chumpy ``Ch`` objects (a
stand-in module registered in ``sys.modules`` while writing, removed before loading), scipy sparse
matrices, protocol 2; the "2020" file as Python 2 wrote it (8-bit strings, numpy.core and
scipy.sparse.csc paths), the "2023" file as Python 3 writes it. Posing is checked by hand and against
FLAME's own LBS written out below in FLAME's joint order.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.abc
import pickle
import struct
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.transform import Rotation
from torch.testing import assert_close

from neuavatar.errors import InputError
from neuavatar.head.flame import FLAME_NUM_FACES, FLAME_NUM_VERTICES, FlameHead, load_flame, nearest_surface_embedding
from neuavatar.head.model import HeadParams, LandmarkEmbedding

V, F = FLAME_NUM_VERTICES, FLAME_NUM_FACES
ROOT, NECK, JAW, LEFT_EYE, RIGHT_EYE = range(5)  # FLAME's joint order
FLAME_PARENTS = (-1, 0, 1, 1, 1)
LEFT_EYEBALL, RIGHT_EYEBALL = slice(3931, 4477), slice(4477, V)  # 546 vertices each, as in FLAME
JAW_ONLY, ROOT_ONLY, NECK_ONLY = slice(0, 100), slice(100, 200), slice(200, 300)  # fully skinned to one joint
NUM_UVS = 5118  # FLAME's head_template.obj


# ------------------------------------------------------------------------------------- writing files


@contextlib.contextmanager
def fake_chumpy():
    """``chumpy`` and ``chumpy.ch`` with a ``Ch`` class in sys.modules while files are written."""

    class Ch:
        """Pickles as chumpy's does: NEWOBJ of chumpy.ch.Ch, then its __dict__ with the array in 'x'."""

        def __init__(self, x):
            self.x = np.asarray(x, np.float64)
            self._dirty_vars = {"x"}
            self._itr = None
            self._make_dense = False
            self._make_sparse = False
            self._depends_on_deps = {}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    ch.Ch = chumpy.Ch = Ch
    chumpy.ch = ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
    try:
        yield Ch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote at protocol 2: 8-bit strings as (SHORT_)BINSTRING, and the
    module paths of numpy 1 and scipy < 1.8 (numpy.core.multiarray, scipy.sparse.csc, __builtin__)."""

    dispatch = dict(pickle._Pickler.dispatch)
    renames = {"numpy._core.multiarray": "numpy.core.multiarray", "scipy.sparse._csc": "scipy.sparse.csc",
               "builtins": "__builtin__"}

    def save_8bit(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_8bit

    def save_global(self, obj, name=None):
        module = self.renames.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def write_pickle(path: Path, obj, *, python2: bool = False) -> Path:
    """Pickle ``obj`` at protocol 2, as Python 2 or 3 would (inside ``fake_chumpy()`` when it holds Ch objects)."""
    with open(path, "wb") as f:
        if python2:
            Python2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=2)
    return path


def flame_model(rng: np.random.Generator, num_components: int = 400) -> dict[str, np.ndarray]:
    """A FLAME-format model as plain arrays: an ellipsoid head, two eyeballs, a neck-to-eyes tree."""
    directions = rng.normal(size=(V, 3))
    template = directions / np.linalg.norm(directions, axis=1, keepdims=True) * (0.08, 0.11, 0.10)
    for eyeball, x in ((LEFT_EYEBALL, 0.032), (RIGHT_EYEBALL, -0.032)):  # x points to the subject's left
        template[eyeball] = template[eyeball] * 0.15 + (x, 0.03, 0.06)

    weights = rng.dirichlet((1.0, 1.0, 1.0), V)  # head vertices: root, neck, jaw
    weights = np.concatenate([weights, np.zeros((V, 2))], 1)
    for rows, joint in ((JAW_ONLY, JAW), (ROOT_ONLY, ROOT), (NECK_ONLY, NECK), (LEFT_EYEBALL, LEFT_EYE),
                        (RIGHT_EYEBALL, RIGHT_EYE)):
        weights[rows] = np.eye(5)[joint]

    regressor = np.zeros((5, V))
    for joint, rows in ((ROOT, ROOT_ONLY), (NECK, NECK_ONLY), (JAW, JAW_ONLY)):
        picked = rng.choice(np.arange(V)[rows], 20, replace=False)
        regressor[joint, picked] = 1 / 20
    regressor[LEFT_EYE, LEFT_EYEBALL] = 1 / 546
    regressor[RIGHT_EYE, RIGHT_EYEBALL] = 1 / 546
    return {
        "v_template": template,
        "f": triangles(rng),
        "shapedirs": rng.normal(0, 1e-3, (V, 3, num_components)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": regressor @ template,
    }


def triangles(rng: np.random.Generator) -> np.ndarray:
    """(F, 3) uint32 random triangles of three distinct vertices each (FLAME has no degenerate ones)."""
    f = rng.integers(0, V, (F, 3))
    while (bad := (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])).any():
        f[bad] = rng.integers(0, V, (int(bad.sum()), 3))
    return f.astype(np.uint32)


def as_pickled(model: dict[str, np.ndarray], Ch) -> dict[str, object]:
    """The dict as FLAME's files hold it: chumpy arrays, a sparse regressor, the blend-skinning style."""
    out: dict[str, object] = dict(model)
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        if key in model:
            out[key] = Ch(model[key])
    out["J_regressor"] = sp.csc_matrix(model["J_regressor"])
    out.update(bs_style="lbs", bs_type="lrotmin")
    return out


@dataclass
class FlameFiles:
    model: dict[str, np.ndarray]  # the arrays as written, for the reference computations
    generic_2020: Path
    flame_2023: Path
    landmarks: Path  # faces (478,), barycentric (478, 3)
    directory: Path

    def write(self, name: str, model: dict[str, object], *, python2: bool = False) -> Path:
        with fake_chumpy() as Ch:
            return write_pickle(self.directory / name, as_pickled(model, Ch), python2=python2)


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> FlameFiles:
    rng = np.random.default_rng(7)
    directory = tmp_path_factory.mktemp("flame")
    landmarks = directory / "landmarks.npz"
    np.savez(landmarks, faces=rng.integers(0, F, 478), barycentric=rng.dirichlet((1.0, 1.0, 1.0), 478))
    out = FlameFiles(flame_model(rng), directory / "generic_model.pkl", directory / "flame2023.pkl", landmarks,
                     directory)
    out.write("generic_model.pkl", out.model, python2=True)
    out.write("flame2023.pkl", out.model)
    return out


@pytest.fixture(scope="session")
def head2020(files) -> FlameHead:
    return load_flame(files.generic_2020, landmarks_npz=files.landmarks)


@pytest.fixture(scope="session")
def head(files) -> FlameHead:
    return load_flame(files.flame_2023, landmarks_npz=files.landmarks)


def small(model: dict[str, np.ndarray], **changes) -> dict[str, np.ndarray]:
    """A copy with 301 shape components (faster to write) and ``changes`` applied; None removes a key."""
    out = dict(model, shapedirs=model["shapedirs"][:, :, :301])
    out.update(changes)
    return {k: x for k, x in out.items() if x is not None}


# --------------------------------------------------------------------------------- FLAME, written out


def flame_reference(m: dict[str, np.ndarray], shape: np.ndarray, expression: np.ndarray, pose: np.ndarray,
                    translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's LBS as its authors' loaders compute it, float64, FLAME's joint order.

    pose: (5, 3) axis-angles of global, neck, jaw, left eye, right eye. Returns (V, 3) vertices, (5, 3) joints.
    """
    dirs = np.concatenate([m["shapedirs"][:, :, :len(shape)], m["shapedirs"][:, :, 300:300 + len(expression)]], 2)
    v_shaped = m["v_template"] + dirs @ np.concatenate([shape, expression])
    joints = m["J_regressor"] @ v_shaped
    rot = Rotation.from_rotvec(pose).as_matrix()
    lrotmin = (rot[1:] - np.eye(3)).reshape(-1)  # (R_j - I) row-major, joints 1..4
    v_posed = v_shaped + m["posedirs"] @ lrotmin
    world = np.zeros((5, 4, 4))
    for j, parent in enumerate(FLAME_PARENTS):
        local = np.eye(4)
        local[:3, :3] = rot[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world[j] = local if parent < 0 else world[parent] @ local
    rest = world.copy()
    rest[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    blended = np.einsum("vj,jab->vab", m["weights"], rest)
    vertices = np.einsum("vab,vb->va", blended[:, :3, :3], v_posed) + blended[:, :3, 3]
    return vertices + translation, world[:, :3, 3] + translation


def params(head: FlameHead, *, shape=None, expression=None, pose=None, translation=None) -> HeadParams:
    """Interface parameters (batch 1) from FLAME-order ``pose`` (5, 3)."""
    p = head.zero_params(1)
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]  # noqa: E731
    if shape is not None:
        p.shape = t(shape)
    if expression is not None:
        p.expression = t(expression)
    if pose is not None:
        p.rotation, p.neck, p.jaw = t(pose[ROOT]), t(pose[NECK]), t(pose[JAW])
        p.eyes = t(np.stack([pose[RIGHT_EYE], pose[LEFT_EYE]]))  # the interface's [right, left]
    if translation is not None:
        p.translation = t(translation)
    return p


def np32(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


# ---------------------------------------------------------------------------------------- loading


def test_loads_a_2020_file(head2020, files):
    h = head2020
    assert (h.name, h.version) == ("flame", "2020")
    assert (h.num_vertices, h.num_shape, h.num_expression) == (V, 300, 100)
    assert h.faces.shape == (F, 3) and h.faces.dtype == torch.long
    assert h.pose_correctives.shape == (36, 3 * V)
    assert h.joint_regressor.shape == (5, V) and h.lbs_weights.shape == (V, 5)
    assert h.uvs.shape == (V, 2) and 0 <= h.uvs.min() and h.uvs.max() <= 1 and torch.equal(h.face_uvs, h.faces)
    assert set(h.regions) == {"face", "neck", "eyes"}
    assert len(h.landmarks_mediapipe.faces) == 478
    assert_close(np32(h.template), files.model["v_template"], rtol=0, atol=1e-7)
    assert np.array_equal(h.faces.numpy(), files.model["f"])


def test_2023_file_loads_to_the_same_model(head2020, head):
    assert head.version == "2023"
    for name, buffer in head2020.state_dict().items():
        assert torch.equal(buffer, head.state_dict()[name]), name


def test_buffers_are_float32_on_the_cpu(head):
    for name, buffer in head.state_dict().items():
        assert buffer.device.type == "cpu", name
        assert buffer.dtype in (torch.float32, torch.long, torch.bool), (name, buffer.dtype)
    assert head.template.dtype == head.pose_correctives.dtype == torch.float32


def test_version_can_be_overridden(files):
    assert load_flame(files.generic_2020, landmarks_npz=files.landmarks, version="2023").version == "2023"
    with pytest.raises(ValueError, match="'2021'"):
        load_flame(files.generic_2020, landmarks_npz=files.landmarks, version="2021")


def test_loading_never_imports_chumpy(files):
    class Refuse(importlib.abc.MetaPathFinder):
        asked: list[str] = []

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "chumpy":
                self.asked.append(name)
                raise ImportError("chumpy must not be imported")
            return None

    assert "chumpy" not in sys.modules
    finder = Refuse()
    sys.meta_path.insert(0, finder)
    try:
        load_flame(files.generic_2020, landmarks_npz=files.landmarks)
    finally:
        sys.meta_path.remove(finder)
    assert finder.asked == [] and "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules


def test_keeps_the_leading_components(files):
    h = load_flame(files.flame_2023, landmarks_npz=files.landmarks, num_shape=50, num_expression=10)
    assert_close(np32(h.shape_basis), files.model["shapedirs"][:, :, :50], rtol=1e-6, atol=1e-9)
    assert_close(np32(h.expression_basis), files.model["shapedirs"][:, :, 300:310], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("counts", [{"num_shape": 301}, {"num_expression": 101}])
def test_rejects_more_components_than_the_file_has(files, counts):
    with pytest.raises(InputError, match=f"300 identity and 100 expression.*{'|'.join(counts)}"):
        load_flame(files.flame_2023, landmarks_npz=files.landmarks, **counts)
    with pytest.raises(ValueError, match="-1"):
        load_flame(files.flame_2023, landmarks_npz=files.landmarks, num_shape=-1)


# ---------------------------------------------------------------------------------- unsafe and broken


class Call:
    """Unpickles to ``function(*args)``: what an attacker's pickle does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(("protocol", "make", "named"), [
    (2, lambda marker: Call(__import__("os").system, f"touch {marker}"), r"(posix|nt|os)\.system"),
    (4, lambda marker: Call(exec, f"open({str(marker)!r}, 'w').close()"), r"builtins\.exec"),
    # protocol 2 names subprocess by its Python 2 name, commands
    (2, lambda marker: Call(__import__("subprocess").call, ["touch", str(marker)]), r"(subprocess|commands)\.call"),
])
def test_refuses_a_pickle_that_runs_code(tmp_path, protocol, make, named):
    marker = tmp_path / "side_effect"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((V, 3)), "f": make(marker)}, protocol=protocol))
    with pytest.raises(InputError, match=f"evil.pkl asks to load {named}"):
        load_flame(path, landmark_points=torch.zeros(478, 3))
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: plain pickle does run it
    assert marker.exists()


def test_refuses_harmless_classes_outside_the_allow_list(tmp_path):
    from collections import OrderedDict

    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(v_template=1), protocol=2))
    with pytest.raises(InputError, match=r"collections\.OrderedDict"):
        load_flame(path, landmark_points=torch.zeros(478, 3))


def test_rejects_missing_truncated_and_foreign_files(files, tmp_path):
    data, data2020 = files.flame_2023.read_bytes(), files.generic_2020.read_bytes()
    cases = {
        "truncated.pkl": (data[: len(data) // 2], "truncated or corrupt"),
        "truncated_2020.pkl": (data2020[: len(data2020) - 100], "truncated or corrupt"),
        "header_only.pkl": (data[:40], "truncated or corrupt"),
        "empty.pkl": (b"", "is empty"),
        "notes.pkl": (b"FLAME 2020 is on the website\n", "not a pickle"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=f"{name}.*{message}|{message}.*{name}"):
            load_flame(tmp_path / name, landmarks_npz=files.landmarks)
    np.savez(tmp_path / "model.npz", v_template=np.zeros((V, 3)))
    with pytest.raises(InputError, match="npz"):
        load_flame(tmp_path / "model.npz", landmarks_npz=files.landmarks)
    with pytest.raises(InputError, match="not found.*missing.pkl"):
        load_flame(tmp_path / "missing.pkl", landmarks_npz=files.landmarks)
    with pytest.raises(InputError, match="directory"):
        load_flame(tmp_path, landmarks_npz=files.landmarks)


def test_rejects_an_smpl_body_model(files, tmp_path):
    n, j = 6890, 24
    smpl = {"v_template": np.zeros((n, 3)), "f": np.zeros((13776, 3), np.uint32),
            "shapedirs": np.zeros((n, 3, 10)), "posedirs": np.zeros((n, 3, 207)),
            "J_regressor": np.full((j, n), 1 / n), "weights": np.full((n, j), 1 / j),
            "kintree_table": np.stack([np.r_[2**32 - 1, np.arange(j - 1)], np.arange(j)]), "J": np.zeros((j, 3))}
    path = files.write("basicModel_neutral.pkl", smpl, python2=True)
    with pytest.raises(InputError, match="6890 vertices and 24 joints.*SMPL body model"):
        load_flame(path, landmarks_npz=files.landmarks)


@pytest.mark.parametrize(("changes", "message"), [
    ({"posedirs": None, "weights": None}, "lacks posedirs, weights"),
    ({"posedirs": np.zeros((V, 3, 27))}, r"posedirs has shape \(5023, 3, 27\), FLAME's is \(5023, 3, 36\)"),
    ({"f": np.zeros((9000, 3), np.uint32)}, r"f has shape \(9000, 3\)"),
    ({"shapedirs": np.zeros((V, 3, 300))}, r"shapedirs has shape \(5023, 3, 300\)"),
    ({"f": np.full((F, 3), 0.5)}, "f holds float64"),
    ({"kintree_table": np.array([[2**32 - 1, 0, 0, 0, 0], [0, 1, 2, 3, 4]])}, "not FLAME's tree"),
    ({"posedirs": np.full((V, 3, 36), np.nan)}, "posedirs holds NaN"),
])
def test_rejects_a_dict_that_is_not_flame(files, changes, message):
    path = files.write("broken.pkl", small(files.model, **changes))
    with pytest.raises(InputError, match=f"broken.pkl.*{message}"):
        load_flame(path, landmarks_npz=files.landmarks)


def test_rejects_weights_that_do_not_sum_to_one(files):
    path = files.write("heavy.pkl", small(files.model, weights=files.model["weights"] * 2))
    with pytest.raises(InputError, match=r"weights of vertex \d+ sum to 2.0000, not 1"):
        load_flame(path, landmarks_npz=files.landmarks)


def test_rejects_mirrored_eyes(files):
    """A file whose "left" eye sits on the subject's right is not in FLAME's convention."""
    mirrored = files.model["v_template"] * (-1, 1, 1)
    path = files.write("mirrored.pkl", small(files.model, v_template=mirrored))
    with pytest.raises(InputError, match="left eye joint is at x = -0.03"):
        load_flame(path, landmarks_npz=files.landmarks)


def test_rejects_another_pose_mapping(files):
    with fake_chumpy() as Ch:
        raw = as_pickled(small(files.model), Ch)
        raw["bs_type"] = "lrotmin_quaternion"
        path = write_pickle(files.directory / "quaternion.pkl", raw)
    with pytest.raises(InputError, match="bs_type is 'lrotmin_quaternion'"):
        load_flame(path, landmarks_npz=files.landmarks)


def test_rejects_a_list(files, tmp_path):
    path = write_pickle(tmp_path / "list.pkl", [np.zeros(3)])
    with pytest.raises(InputError, match="holds a list, not FLAME's dict"):
        load_flame(path, landmarks_npz=files.landmarks)


# ------------------------------------------------------------------------------------------ posing


def test_rest_pose_is_the_template(head, files):
    out = head(head.zero_params(2))
    m = files.model
    assert_close(np32(out.vertices[1]), m["v_template"], rtol=0, atol=1e-7)
    assert_close(np32(out.joints[0]), (m["J_regressor"] @ m["v_template"])[list((0, 1, 2, 4, 3))], rtol=0,
                 atol=1e-7)


def test_jaw_rotates_its_vertices_about_the_jaw_joint(head, files):
    m = files.model
    axis_angle = np.array([0.3, 0.05, -0.02])
    rot = Rotation.from_rotvec(axis_angle).as_matrix()
    pose = np.zeros((5, 3))
    pose[JAW] = axis_angle
    out = np32(head(params(head, pose=pose)).vertices[0])
    jaw = (m["J_regressor"] @ m["v_template"])[JAW]
    # Every vertex first moves by the jaw's pose correctives: FLAME's columns 9..17 times (R - I).
    v = m["v_template"] + m["posedirs"][:, :, 9:18] @ (rot - np.eye(3)).ravel()
    assert_close(out[JAW_ONLY], (v[JAW_ONLY] - jaw) @ rot.T + jaw, rtol=0, atol=1e-6)
    assert_close(out[ROOT_ONLY], v[ROOT_ONLY], rtol=0, atol=1e-6)
    assert_close(out[NECK_ONLY], v[NECK_ONLY], rtol=0, atol=1e-6)


def test_global_rotation_turns_everything_about_the_root(head, files):
    m = files.model
    axis_angle = np.array([-0.2, 0.7, 0.1])
    rot = Rotation.from_rotvec(axis_angle).as_matrix()
    pose = np.zeros((5, 3))
    pose[ROOT] = axis_angle
    out = head(params(head, pose=pose))
    joints = m["J_regressor"] @ m["v_template"]
    root = joints[ROOT]  # no correctives: the root's rotation is not in FLAME's pose feature
    assert_close(np32(out.vertices[0]), (m["v_template"] - root) @ rot.T + root, rtol=0, atol=1e-6)
    assert_close(np32(out.joints[0]), ((joints - root) @ rot.T + root)[[0, 1, 2, 4, 3]], rtol=0, atol=1e-6)


def test_translation_moves_vertices_and_joints(head, files):
    m = files.model
    out = head(params(head, translation=[0.1, -0.2, 1.5]))
    assert_close(np32(out.vertices[0]), m["v_template"] + (0.1, -0.2, 1.5), rtol=0, atol=1e-6)
    assert_close(np32(out.joints[0, ROOT]), m["J_regressor"][ROOT] @ m["v_template"] + (0.1, -0.2, 1.5),
                 rtol=0, atol=1e-6)


def test_shape_and_expression_add_linearly(head, files):
    m = files.model
    rng = np.random.default_rng(1)
    s1, s2, e1, e2 = rng.normal(size=300), rng.normal(size=300), rng.normal(size=100), rng.normal(size=100)
    verts = lambda s, e: np32(head(params(head, shape=s, expression=e)).vertices[0])  # noqa: E731
    rest = m["v_template"]
    assert_close(verts(s1, 0 * e1) - rest, m["shapedirs"][:, :, :300] @ s1, rtol=0, atol=2e-6)
    assert_close(verts(0 * s1, e1) - rest, m["shapedirs"][:, :, 300:] @ e1, rtol=0, atol=2e-6)
    assert_close(verts(s1 + s2, e1 + e2) - rest, (verts(s1, e1) - rest) + (verts(s2, e2) - rest), rtol=0, atol=4e-6)
    joints = np32(head(params(head, shape=s1, expression=e1)).joints[0])
    v_shaped = rest + m["shapedirs"] @ np.concatenate([s1, e1])
    assert_close(joints, (m["J_regressor"] @ v_shaped)[[0, 1, 2, 4, 3]], rtol=0, atol=2e-6)


@pytest.mark.parametrize(("joint", "eyeball", "block"), [(RIGHT_EYE, RIGHT_EYEBALL, 3), (LEFT_EYE, LEFT_EYEBALL, 2)])
def test_an_eye_joint_rotates_only_its_eyeball(head, files, joint, eyeball, block):
    m = files.model
    axis_angle = np.array([0.2, -0.3, 0.1])
    rot = Rotation.from_rotvec(axis_angle).as_matrix()
    pose = np.zeros((5, 3))
    pose[joint] = axis_angle
    out = np32(head(params(head, pose=pose)).vertices[0])
    centre = (m["J_regressor"] @ m["v_template"])[joint]
    v = m["v_template"] + m["posedirs"][:, :, 9 * block:9 * block + 9] @ (rot - np.eye(3)).ravel()
    rest = np.ones(V, bool)
    rest[eyeball] = False
    assert_close(out[eyeball], (v[eyeball] - centre) @ rot.T + centre, rtol=0, atol=1e-6)
    assert_close(out[rest], v[rest], rtol=0, atol=1e-6)
    side = np.sign(m["v_template"][eyeball, 0].mean())
    assert side == (-1 if joint == RIGHT_EYE else 1)  # the subject's right eye is at negative x


def test_matches_flame_lbs_in_flames_own_joint_order(head, files):
    rng = np.random.default_rng(2)
    for _ in range(3):
        shape, expression = rng.normal(size=300), rng.normal(size=100)
        pose, translation = rng.normal(0, 0.3, (5, 3)), rng.normal(0, 0.5, 3)
        out = head(params(head, shape=shape, expression=expression, pose=pose, translation=translation))
        vertices, joints = flame_reference(files.model, shape, expression, pose, translation)
        # float32 posing of 0.1 m offsets: errors ~1e-7 m; 5e-6 leaves room without hiding a wrong layout
        assert_close(np32(out.vertices[0]), vertices, rtol=0, atol=5e-6)
        assert_close(np32(out.joints[0]), joints[[0, 1, 2, 4, 3]], rtol=0, atol=5e-6)


def test_batches_pose_independently(head):
    p = HeadParams.cat([params(head, pose=np.full((5, 3), 0.1 * k), translation=[0, 0, k]) for k in range(3)])
    batched = head(p).vertices
    for k in range(3):
        assert_close(batched[k], head(p[k:k + 1]).vertices[0])


# --------------------------------------------------------------------------------- landmarks and UVs


def test_landmarks_are_barycentric_sums_of_triangle_corners(head, files):
    rng = np.random.default_rng(3)
    vertices = head(params(head, pose=rng.normal(0, 0.2, (5, 3)), shape=rng.normal(size=300))).vertices
    landmarks = np32(head.landmarks(vertices)[0])
    with np.load(files.landmarks) as npz:
        faces, bary = npz["faces"], npz["barycentric"]
    v = np32(vertices[0])
    for k in (0, 1, 250, 477):
        a, b, c = files.model["f"][faces[k]]
        expected = bary[k, 0] * v[a] + bary[k, 1] * v[b] + bary[k, 2] * v[c]
        assert_close(landmarks[k], expected, rtol=0, atol=1e-6)
    assert head.landmarks68(vertices).shape == (1, 68, 3)


def test_landmark_points_embed_at_their_closest_surface_points(files):
    rng = np.random.default_rng(4)
    faces, bary = rng.integers(0, F, 478), rng.dirichlet((2.0, 2.0, 2.0), 478)
    corners = files.model["v_template"][files.model["f"][faces].astype(np.int64)]  # (478, 3, 3)
    points = torch.from_numpy((corners * bary[..., None]).sum(1))
    h = load_flame(files.flame_2023, landmark_points=points)
    assert_close(np32(h.landmarks(h.template[None])[0]), points.numpy(), rtol=0, atol=1e-6)


def test_nearest_surface_embedding_by_hand():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])  # the same triangle at z = 0 and z = 1
    points = torch.tensor([[0.2, 0.3, 0.4], [0.2, 0.3, 0.6], [2.0, -1, 0], [0.5, -1, 0.1], [-1, -1, -1]])
    e = nearest_surface_embedding(vertices, faces, points)
    assert e.faces.tolist() == [0, 1, 0, 0, 0]
    expected = [[0.5, 0.2, 0.3], [0.5, 0.2, 0.3], [0, 1, 0], [0.5, 0.5, 0], [1, 0, 0]]
    assert_close(e.barycentric, torch.tensor(expected))
    with pytest.raises(ValueError, match=r"points must have shape \(L, 3\), got \(5, 2\)"):
        nearest_surface_embedding(vertices, faces, points[:, :2])


def test_landmark_sources(files, tmp_path):
    with pytest.raises(ValueError, match="landmarks_npz=.*landmark_points="):
        load_flame(files.flame_2023)
    with pytest.raises(ValueError, match="one landmark source, got landmarks_npz, landmark_points"):
        load_flame(files.flame_2023, landmarks_npz=files.landmarks, landmark_points=torch.zeros(478, 3))
    with pytest.raises(ValueError, match=r"\(478, 3\), got \(68, 3\)"):
        load_flame(files.flame_2023, landmark_points=torch.zeros(68, 3))
    np.savez(tmp_path / "faces_only.npz", faces=np.zeros(478, int))
    with pytest.raises(InputError, match="faces_only.npz.*lacks barycentric"):
        load_flame(files.flame_2023, landmarks_npz=tmp_path / "faces_only.npz")
    np.savez(tmp_path / "short.npz", faces=np.zeros(68, int), barycentric=np.zeros((68, 3)))
    with pytest.raises(InputError, match=r"short.npz.*\(68,\)"):
        load_flame(files.flame_2023, landmarks_npz=tmp_path / "short.npz")
    outside = LandmarkEmbedding(torch.full((478,), F), torch.full((478, 3), 1 / 3))
    with pytest.raises(ValueError, match=f"triangles {F}..{F}; FLAME has {F}"):
        load_flame(files.flame_2023, landmark_embedding=outside)


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, uv_faces: np.ndarray) -> Path:
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [f"vt {u} {v}" for u, v in uvs]
    lines += ["f " + " ".join(f"{a + 1}/{t + 1}" for a, t in zip(f, ft)) for f, ft in zip(faces, uv_faces)]
    path.write_text("# FLAME-like template\n" + "\n".join(lines) + "\n")
    return path


def test_uvs_from_the_template_obj(files, tmp_path):
    rng = np.random.default_rng(5)
    m = files.model
    faces = m["f"].astype(np.int64)
    uvs, uv_faces = rng.random((NUM_UVS, 2)), rng.integers(0, NUM_UVS, (F, 3))
    obj = write_obj(tmp_path / "head_template.obj", m["v_template"], faces, uvs, uv_faces)
    h = load_flame(files.flame_2023, landmarks_npz=files.landmarks, uv_obj=obj)
    assert_close(np32(h.uvs), uvs, rtol=0, atol=1e-7)
    assert np.array_equal(h.face_uvs.numpy(), uv_faces)

    # The same triangles listed in another order, corners rotated: matched back to the pickle's.
    order, turn = rng.permutation(F), rng.integers(0, 3, F)
    rotate = lambda x: np.stack([np.roll(row, r) for row, r in zip(x[order], turn)])  # noqa: E731
    obj = write_obj(tmp_path / "shuffled.obj", m["v_template"], rotate(faces), uvs, rotate(uv_faces))
    h = load_flame(files.flame_2023, landmarks_npz=files.landmarks, uv_obj=obj)
    assert np.array_equal(h.face_uvs.numpy(), uv_faces)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("f 1/", "f 9/", 1), "not the FLAME model's"),
    (lambda text: text.replace("\nf ", "\nf 1/1 ", 1), "line .*triangles"),
    (lambda text: text.replace("/", "//"), "line .*triangles"),
    (lambda text: text.replace("vt ", "vt x", 1), "line .*cannot read"),
])
def test_rejects_a_uv_template_that_does_not_fit(files, tmp_path, edit, message):
    rng = np.random.default_rng(6)
    obj = write_obj(tmp_path / "t.obj", files.model["v_template"], files.model["f"].astype(np.int64),
                    rng.random((NUM_UVS, 2)), rng.integers(0, NUM_UVS, (F, 3)))
    obj.write_text(edit(obj.read_text()))
    with pytest.raises(InputError, match=f"t.obj.*{message}"):
        load_flame(files.flame_2023, landmarks_npz=files.landmarks, uv_obj=obj)


def test_cylindrical_uvs_put_the_face_in_the_middle(head):
    front = head.template[:, 2] > 0.09  # the ellipsoid's front cap
    assert (head.uvs[front, 0] - 0.5).abs().max() < 0.15
    top = head.template[:, 1].argmax()
    assert head.uvs[top, 1] == 1 and head.uvs[head.template[:, 1].argmin(), 1] == 0


def test_regions_follow_the_skinning_weights(head, files):
    w = files.model["weights"]
    regions = {k: m.numpy() for k, m in head.regions.items()}
    assert np.array_equal(regions["eyes"], w[:, LEFT_EYE] + w[:, RIGHT_EYE] > 0.5)
    assert np.array_equal(regions["neck"], w[:, ROOT] > 0.5)
    assert not (regions["face"] & (regions["eyes"] | regions["neck"])).any()
    eye_depth = (files.model["J_regressor"] @ files.model["v_template"])[[LEFT_EYE, RIGHT_EYE], 2].mean()
    assert (files.model["v_template"][regions["face"], 2] > eye_depth - 0.03).all()
    assert regions["face"].sum() > 100


# ------------------------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_poses_on_cuda_as_on_the_cpu(head):
    rng = np.random.default_rng(8)
    p = params(head, shape=rng.normal(size=300), pose=rng.normal(0, 0.3, (5, 3)), translation=[0, 0, 1])
    cuda = copy.deepcopy(head).to("cuda")
    out = cuda(p.to("cuda"))
    assert out.vertices.device.type == "cuda"
    assert_close(out.vertices.cpu(), head(p).vertices, rtol=0, atol=1e-5)  # TF32 / fused kernels differ slightly
    assert_close(cuda.landmarks(out.vertices).cpu(), head.landmarks(head(p).vertices), rtol=0, atol=1e-5)
