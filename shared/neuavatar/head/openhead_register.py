"""Place MediaPipe's 478 landmarks on the open head model's surface, by our own registration.

The model is rendered (skin, lips, brows, irises painted from its regions, Lambert shading) from
several view points, with the mouth closed and slightly open; MediaPipe's Face Mesh finds its
landmarks in every picture; each landmark's pixel is traced back, through the rasterizer's triangle
ids and barycentric weights, to a point on the model's surface at rest (a surface point's
barycentric weights do not depend on the pose). The per-landmark median over views (robust to the
views where a landmark is hidden or misplaced) is snapped to the nearest surface point of the part
it belongs to: the irises to the eyeballs, everything else to the skin (never the teeth or the
eyeball, which move with the jaw and the eyes). The inner lip contour only counts views with the
mouth open, where it is visible. Output: a triangle and barycentric weights per landmark, added to
``openhead.npz``::

    python -m neuavatar.head.openhead_register [--views-yaw -20 -10 0 10 20] [--report docs/images/...]

It prints the reprojection error of the result in every view: MediaPipe run on the model's own
renderings against the embedded landmarks projected into them.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import torch

from neuavatar.head.model import HeadModel, HeadParams, LandmarkEmbedding
from neuavatar.head.openhead import OPENHEAD_FILE
from neuavatar.landmarks import REGION_LOOPS
from neuavatar.render import clip_space, interpolate, model_to_camera, project, rasterize
from neuavatar.track.shading import vertex_normals

__all__ = ["register_landmarks", "painted_colours", "view_params", "main"]

SIZE, FOCAL, DISTANCE = 512, 1400.0, 0.62


def _model(z: dict[str, np.ndarray]) -> HeadModel:
    t = lambda k: torch.from_numpy(np.ascontiguousarray(z[k]))  # noqa: E731
    placeholder = LandmarkEmbedding(torch.zeros(478, dtype=torch.long), torch.full((478, 3), 1 / 3))
    return HeadModel(template=t("template"), faces=t("faces").long(), uvs=t("uvs"), face_uvs=t("face_uvs").long(),
                     shape_basis=t("shape_basis"), expression_basis=t("expression_basis"),
                     joint_regressor=t("joint_regressor"), lbs_weights=t("lbs_weights"),
                     landmarks_mediapipe=placeholder,
                     regions={k[7:]: t(k) for k in z if k.startswith("region_")})


def painted_colours(model: HeadModel) -> torch.Tensor:
    """(V, 3) colours that make the bare mesh read as a face: skin, lips, dark brows, eyes with
    irises and pupils (from each eyeball vertex's angle to its eye's forward axis)."""
    r = model.regions
    colour = torch.tensor([0.86, 0.70, 0.60]).repeat(model.num_vertices, 1)
    colour[r["lips"]] = torch.tensor([0.66, 0.30, 0.32])
    colour[r["brows"]] = torch.tensor([0.30, 0.22, 0.17])
    colour[r["mouth_interior"]] = torch.tensor([0.35, 0.12, 0.12])
    joints = model.joint_regressor @ model.template
    for j in (3, 4):  # right_eye, left_eye
        ids = torch.nonzero(r["eyes"] & (torch.sign(model.template[:, 0]) == torch.sign(joints[j, 0])))[:, 0]
        direction = torch.nn.functional.normalize(model.template[ids] - joints[j], dim=-1)
        angle = torch.rad2deg(torch.acos(direction[:, 2].clamp(-1, 1)))
        colour[ids] = torch.tensor([0.95, 0.94, 0.92])
        colour[ids[angle < 33]] = torch.tensor([0.33, 0.24, 0.17])
        colour[ids[angle < 14]] = torch.tensor([0.04, 0.04, 0.04])
    return colour


_INNER_LIPS = list(REGION_LOOPS["lips_inner"])
_IRISES = list(range(468, 478))
OPEN_JAW = 0.12  # radians: enough for the inner lip contour to separate


def _views(yaws: list[float], pitches: list[float]) -> list[tuple[float, float, float]]:
    """(yaw, pitch, jaw) of every view: each direction with the mouth closed and open."""
    return [(y, p, j) for y in yaws for p in pitches for j in (0.0, OPEN_JAW)]


def view_params(model: HeadModel, yaw: float, pitch: float, jaw: float = 0.0) -> HeadParams:
    """The head turned by ``yaw`` and ``pitch`` degrees, jaw open by ``jaw`` radians, in front of the camera."""
    params = model.zero_params(1)
    params.rotation[0] = torch.tensor([np.radians(pitch), np.radians(yaw), 0.0])
    params.jaw[0, 0] = jaw
    centre = model.joint_regressor[1] @ model.template  # the neck joint: keep the head centred
    params.translation[0] = torch.tensor([0.0, 0.0, -DISTANCE]) - centre - torch.tensor([0.0, 0.04, 0.0])
    return params


def _render(model: HeadModel, colour: torch.Tensor, yaw: float, pitch: float, jaw: float = 0.0) -> tuple[np.ndarray, dict]:
    """One view: the picture (uint8), and what is needed to trace pixels back to the surface."""
    vertices = model(view_params(model, yaw, pitch, jaw)).vertices
    cam = model_to_camera(vertices)
    k = torch.tensor([[FOCAL, FOCAL, SIZE / 2, SIZE / 2]])
    clip = clip_space(cam, k, (SIZE, SIZE))
    rast = rasterize(clip, model.faces.int(), (SIZE, SIZE), backend="torch")
    col = interpolate(colour, rast, model.faces.int())
    normal = torch.nn.functional.normalize(interpolate(vertex_normals(cam, model.faces), rast, model.faces.int()), dim=-1)
    light = torch.nn.functional.normalize(torch.tensor([0.3, -0.4, -1.0]), dim=0)  # from the camera, above left
    shade = 0.35 + 0.65 * (normal @ light).clamp_min(0)[..., None]
    covered = rast[..., 3:] > 0
    image = torch.where(covered, col * shade, torch.tensor([0.16, 0.17, 0.18]))
    return (image[0].clamp(0, 1) * 255).round().byte().numpy(), {"rast": rast[0], "k": k, "cam": cam}


def register_landmarks(model: HeadModel, yaws: list[float], pitches: list[float]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(478,) triangles and (478, 3) barycentric weights of MediaPipe's landmarks on ``model``."""
    from neuavatar.preprocess.worker import image_landmarks, init_worker

    colour = painted_colours(model)
    views = _views(yaws, pitches)
    renders = [_render(model, colour, *view) for view in views]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker) as pool:
        found = list(pool.map(image_landmarks, [img for img, _ in renders]))

    faces = model.faces
    regions = model.regions
    eyeball = regions["eyes"][faces].all(1)  # (F,) triangles of the eyeballs
    inside = (regions["eyes"] | regions["mouth_interior"])[faces].any(1)  # eyeballs, teeth, tongue
    iris = torch.zeros(478, dtype=torch.bool)
    iris[_IRISES] = True
    rest_points, used_views = [], []
    for (img, aux), lmk, view in zip(renders, found, views):
        if lmk is None:
            continue
        # Where a landmark's pixel shows the wrong part (an eyelid point on the eyeball, an inner lip
        # point on the teeth), take the nearest pixel within 8 px that shows its own part.
        tri_image = aux["rast"][..., 3].long() - 1  # (H, W), -1 off the mesh
        on = tri_image >= 0
        skin_ok = on & ~inside[tri_image.clamp_min(0)]
        eye_ok = on & eyeball[tri_image.clamp_min(0)]
        px = np.clip(np.floor(lmk[:, :2]).astype(int), 0, SIZE - 1)
        px = np.stack([_nearest_allowed(eye_ok if iris[i] else skin_ok, px[i], 8) for i in range(478)])
        hit = aux["rast"][px[:, 1], px[:, 0]]  # (478, 4): u, v, z/w, triangle id + 1
        tri = hit[:, 3].long() - 1
        bary = torch.stack([hit[:, 0], hit[:, 1], 1 - hit[:, 0] - hit[:, 1]], -1)
        points = (model.template[faces[tri.clamp_min(0)]] * bary[..., None]).sum(1)
        points[tri < 0] = float("nan")  # fell off the mesh
        if view[2] == 0:
            points[_INNER_LIPS] = float("nan")  # the closed mouth hides the inner contour
        rest_points.append(points)
        used_views.append(view)
    stacked = torch.stack(rest_points)  # (N, 478, 3)
    median = torch.nanmedian(stacked, dim=0).values

    # Snap each landmark to its part of the surface: irises on the eyeballs, the rest on the skin.
    tri = torch.empty(478, dtype=torch.long)
    bary = torch.empty(478, 3)
    for select, allowed in ((iris, eyeball), (~iris, ~inside)):
        ids = torch.nonzero(allowed)[:, 0]
        t, b = _closest_surface_points(model.template, faces[ids], median[select])
        tri[select], bary[select] = ids[t], b

    # Check: project the embedding into every view and compare with MediaPipe's detections.
    embedding = LandmarkEmbedding(tri, bary)
    errors = {}
    for (img, aux), lmk, view in zip(renders, found, views):
        if lmk is None:
            continue
        points = embedding(model(view_params(model, *view)).vertices, faces)
        uv = project(model_to_camera(points), aux["k"])[0].numpy()
        errors[view] = float(np.linalg.norm(uv - lmk[:, :2], axis=1).mean())
    return tri, bary, {"views": len(views), "views_with_face": len(used_views), "reprojection_px": errors,
                       "renders": renders, "detections": found, "embedding": embedding}


def _nearest_allowed(allowed: torch.Tensor, xy: np.ndarray, radius: int) -> np.ndarray:
    """The pixel (x, y) nearest ``xy`` where ``allowed`` (H, W) is True, within ``radius``; else ``xy``."""
    x, y = int(xy[0]), int(xy[1])
    if allowed[y, x]:
        return xy
    h, w = allowed.shape
    y0, y1, x0, x1 = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
    ys, xs = torch.nonzero(allowed[y0:y1, x0:x1], as_tuple=True)
    if len(ys) == 0:
        return xy
    d = (ys + y0 - y) ** 2 + (xs + x0 - x) ** 2
    i = int(d.argmin())
    return np.array([int(xs[i]) + x0, int(ys[i]) + y0])


def _closest_surface_points(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor,
                            candidates: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of (L, 3) points, the nearest point on the mesh as (triangle, barycentric weights)."""
    corners = vertices[faces]  # (F, 3, 3)
    centroid = corners.mean(1)
    near = torch.cdist(points, centroid).topk(candidates, largest=False).indices  # (L, K)
    best_tri, best_bary = [], []
    for p, cand in zip(points, near):
        tri = corners[cand]  # (K, 3, 3)
        bary = _closest_on_triangles(p, tri)
        q = (tri * bary[..., None]).sum(1)
        i = torch.linalg.norm(q - p, dim=-1).argmin()
        best_tri.append(cand[i])
        best_bary.append(bary[i])
    return torch.stack(best_tri), torch.stack(best_bary)


def _closest_on_triangles(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """(K, 3) barycentric weights of the points of triangles (K, 3, 3) nearest to p (3,), by
    projecting onto each plane and clamping to the triangle (fine for the small distances here)."""
    a, b, c = tri.unbind(1)
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denom = (d00 * d11 - d01 * d01).clamp_min(1e-20)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    bary = torch.stack([1 - v - w, v, w], -1).clamp_min(0)
    return bary / bary.sum(-1, keepdim=True)


def _report(model: HeadModel, result: dict, views: list[tuple[float, float, float]], path: Path) -> None:
    """A picture: some views with MediaPipe's detections (green) and the embedding projected (red)."""
    tiles = []
    picks = list(range(0, len(result["renders"]), max(1, len(result["renders"]) // 4)))[:4]
    k = torch.tensor([[FOCAL, FOCAL, SIZE / 2, SIZE / 2]])
    for i in picks:
        img = result["renders"][i][0].copy()
        lmk = result["detections"][i]
        points = result["embedding"](model(view_params(model, *views[i])).vertices, model.faces)
        for x, y in project(model_to_camera(points), k)[0].numpy():
            cv2.circle(img, (int(x), int(y)), 2, (230, 30, 30), -1, cv2.LINE_AA)
        if lmk is not None:
            for x, y, _ in lmk:
                cv2.circle(img, (int(x), int(y)), 1, (0, 210, 0), -1, cv2.LINE_AA)
        tiles.append(img)
    cv2.imwrite(str(path), np.concatenate(tiles, 1)[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(__file__).parent / "data" / OPENHEAD_FILE)
    # Talking-head videos are mostly frontal: register where MediaPipe's contour points will be seen.
    parser.add_argument("--yaws", type=float, nargs="+", default=[-15, -8, 0, 8, 15])
    parser.add_argument("--pitches", type=float, nargs="+", default=[-8, 0, 8])
    parser.add_argument("--report", type=Path, help="write a picture of some views with the landmarks")
    args = parser.parse_args()
    with np.load(args.model) as f:
        z = {k: f[k] for k in f.files}
    model = _model(z)
    tri, bary, result = register_landmarks(model, args.yaws, args.pitches)
    z["landmark_faces"] = tri.numpy().astype(np.int32)
    z["landmark_barycentric"] = bary.numpy().astype(np.float32)
    np.savez_compressed(args.model, **z)
    errs = result["reprojection_px"]
    print(f"{result['views_with_face']} of {result['views']} views had a face; reprojection error of the embedding "
          f"against MediaPipe's detections, px at {SIZE}x{SIZE}:")
    for (yaw, pitch, jaw), e in errs.items():
        print(f"  yaw {yaw:+5.1f} pitch {pitch:+5.1f} jaw {jaw:.2f}: {e:.2f}")
    print(f"  mean {np.mean(list(errs.values())):.2f}")
    if args.report:
        _report(model, result, _views(args.yaws, args.pitches), args.report)


if __name__ == "__main__":
    main()
