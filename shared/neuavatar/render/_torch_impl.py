"""Pure-torch twins of the four rendering ops, with nvdiffrast's semantics (CPU, or any device).

Each ``_op`` mirrors the public ``neuavatar.render.rasterize.op``; the wrappers there check the
arguments, so these only assert. They follow nvdiffrast's CUDA kernels closely enough that the
two backends agree pixel for pixel:

- Coverage is decided as cudaraster decides it: vertices snapped to 1/16 pixel (round to nearest
  even, as ``cvt.rni``), exact integer edge functions at pixel centres, and its fill rule for
  samples exactly on an edge (an edge whose direction has dy < 0, or dy == 0 and dx > 0, once the
  triangle is wound counter-clockwise in (x right, y = row) coordinates, owns its samples). A pixel
  on an edge shared by two triangles therefore belongs to exactly one of them: no cracks, no double
  hits. Both windings render (no back-face culling).
- The nearest triangle (smallest z/w) wins; ties go to the lower triangle index.
- (u, v) are the perspective-correct barycentrics of the triangle's 1st and 2nd vertex, computed
  from the unsnapped clip positions at the pixel centre; gradients use nvdiffrast's epsilon.

Difference from nvdiffrast: a triangle with any vertex outside the depth range (w < |z|, which
includes everything at or behind the camera plane) is skipped instead of being clipped, and so
is one with a vertex beyond +-2^24 pixels of the image centre (int64 edge functions stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["_rasterize", "_interpolate", "_texture", "_antialias", "opposite_vertices"]

_SUBPIXELS = 16  # cudaraster's CR_SUBPIXEL_LOG2 = 4
_GUARD = 1 << 28  # |snapped coordinate| limit in subpixels: products of two stay below 2^62
_ID_BITS = 24  # triangle index bits in the depth-test key; nvdiffrast's float ids are exact to 2^24 too
_ID_MASK = (1 << _ID_BITS) - 1
_DEPTH_SCALE = float(1 << 38)  # z/w in [-1, 1] -> [0, 2^39): 39 + 24 bits fit in a signed int64
_EMPTY = torch.iinfo(torch.int64).max  # background key: loses every depth test
_CHUNK = 1 << 18  # candidate samples handled at once (bounds memory at large batch / resolution)
_RAST_EPS = 1e-6  # nvdiffrast's epsilon on the clip-space triangle area, in gradients only
_AA_EPS = 1e-3  # nvdiffrast's epsilon on an edge's pixel-space height, in gradients only
_AA_SLACK = 0.0625  # an edge may cross up to 1/16 pixel outside the pixel pair


# ------------------------------------------------------------------------------------------------
# rasterize


@dataclass(frozen=True)
class _Triangles:
    """Visible triangles (n of them), set up for coverage and depth tests at integer pixel indices.

    Sample (row i, column j) is inside edge k when ``edge[k, 0] * i + edge[k, 2] > edge[k, 1] * j``,
    exactly cudaraster's test (integer arithmetic, fill rule folded into the constant), and its
    depth z/w is ``plane[0] + plane[1] * i + plane[2] * j``.
    """

    edge: Tensor  # (n, 3, 3) int64 per edge: row coefficient, column coefficient, constant
    box: Tensor  # (n, 4) int64 first row, last row, first column, last column of candidate pixels
    base: Tensor  # (n,) int64 flat index of the triangle's image (b H W)
    face: Tensor  # (n,) int64 face index
    plane: Tensor  # (n, 3) float64 depth plane over (1, i, j)


def _rasterize(clip: Tensor, faces: Tensor, resolution: tuple[int, int]) -> Tensor:
    """Twin of ``rasterize``: (B, V, 4) clip positions, (F, 3) faces -> (B, H, W, 4) (u, v, z/w, id + 1)."""
    height, width = resolution
    batch = clip.shape[0]
    assert faces.shape[0] <= _ID_MASK, "too many faces for the depth-test key"
    with torch.no_grad():
        tris = _setup_triangles(clip.detach(), faces, height, width)
        keys = _nearest_keys(tris, batch, height, width)
    pixels = (keys != _EMPTY).nonzero().squeeze(1)  # (P,) flat indices of covered pixels
    face = keys[pixels] & _ID_MASK
    values = _pixel_barycentrics(clip, faces, pixels, face, height, width)  # (P, 4)
    rast = clip.new_zeros(batch * height * width, 4).index_put((pixels,), values)
    return rast.view(batch, height, width, 4)


def _setup_triangles(clip: Tensor, faces: Tensor, height: int, width: int) -> _Triangles:
    w = clip[..., 3]
    rcp = 1.0 / w
    # Same float operations as cudaraster's snapTriangle: x * (1/w) * (8 W), rounded half to even.
    sx = torch.round(clip[..., 0] * rcp * float(width * _SUBPIXELS // 2))
    sy = torch.round(clip[..., 1] * rcp * float(height * _SUBPIXELS // 2))
    usable = (w > 0) & (clip[..., 2].abs() <= w) & (sx.abs() <= _GUARD) & (sy.abs() <= _GUARD)  # (B, V)
    snapped = torch.stack([torch.where(usable, sy, 0), torch.where(usable, sx, 0)], dim=-1).long()  # (B, V, 2)

    faces = faces.long()
    corner = snapped[:, faces]  # (B, F, 3, 2) as (y, x)
    d1, d2 = corner[:, :, 1] - corner[:, :, 0], corner[:, :, 2] - corner[:, :, 0]  # (B, F, 2)
    area = d1[..., 1] * d2[..., 0] - d1[..., 0] * d2[..., 1]
    lo = torch.minimum(torch.minimum(corner[:, :, 0], corner[:, :, 1]), corner[:, :, 2])  # (B, F, 2)
    hi = torch.maximum(torch.maximum(corner[:, :, 0], corner[:, :, 1]), corner[:, :, 2])
    first, last = _sample_range(lo, hi, height, width)  # (B, F, 2) rows and columns
    keep = (usable[:, faces].all(-1) & (area != 0) & (first <= last).all(-1))
    b, f = keep.nonzero(as_tuple=True)
    # Wind every triangle counter-clockwise (area > 0) so that one edge test and one fill rule serve all.
    swap = (area[b, f] < 0)[:, None]
    corners = torch.where(swap, faces[f][:, [0, 2, 1]], faces[f])  # (n, 3)
    at = (b[:, None] * clip.shape[1] + corners).view(-1)
    yx = snapped.view(-1, 2).index_select(0, at).view(-1, 3, 2)
    y, x = yx[..., 0], yx[..., 1]
    zw = (clip[..., 2].double() / w.double()).view(-1).index_select(0, at).view(-1, 3)
    box = torch.stack([first[b, f, 0], last[b, f, 0], first[b, f, 1], last[b, f, 1]], dim=-1)
    return _Triangles(_edge_equations(x, y, height, width), box, b * (height * width), f,
                      _depth_planes(x, y, zw, height, width))


def _sample_range(lo: Tensor, hi: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Snapped (..., 2) (y, x) box corners -> first and last (row, column) whose pixel centre is inside."""
    # Pixel k's centre is at 16 k + 8 - 8 size subpixels from the image centre.
    size = torch.tensor([height, width], device=lo.device)
    offset = _SUBPIXELS // 2 * size - _SUBPIXELS // 2
    first = -torch.div(-(lo + offset), _SUBPIXELS, rounding_mode="floor")  # ceil
    last = torch.div(hi + offset, _SUBPIXELS, rounding_mode="floor")
    return first.clamp(min=0), torch.minimum(last, size - 1)


def _edge_equations(x: Tensor, y: Tensor, height: int, width: int) -> Tensor:
    """(n, 3) snapped counter-clockwise corners -> (n, 3, 3) integer edge tests over pixel indices.

    Edge k runs from corner k+1 to corner k+2 with direction (dx, dy). cudaraster covers sample s
    when dx (s_y - a_y) - dy (s_x - a_x) > 0, or == 0 on an inclusive edge (dy < 0, or dy == 0 and
    dx > 0); on integers "== 0 counts" is "+1 > 0". With s = 16 (j, i) + 8 - 8 (W, H) this becomes
    16 dx i + constant > 16 dy j.
    """
    a, b = [1, 2, 0], [2, 0, 1]
    dx, dy = x[:, b] - x[:, a], y[:, b] - y[:, a]
    inclusive = ((dy < 0) | ((dy == 0) & (dx > 0))).long()
    origin_x = _SUBPIXELS // 2 * (1 - width)  # sample x of column 0
    origin_y = _SUBPIXELS // 2 * (1 - height)
    constant = dx * (origin_y - y[:, a]) - dy * (origin_x - x[:, a]) + inclusive
    return torch.stack([_SUBPIXELS * dx, _SUBPIXELS * dy, constant], dim=-1)


def _depth_planes(x: Tensor, y: Tensor, zw: Tensor, height: int, width: int) -> Tensor:
    """(n, 3) plane of z/w over (1, row, column) through the snapped corners (as cudaraster's plane)."""
    x, y = x.double(), y.double()
    d1x, d1y, d2x, d2y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0], x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    z1, z2 = zw[:, 1] - zw[:, 0], zw[:, 2] - zw[:, 0]
    area = d1x * d2y - d1y * d2x
    grad_x, grad_y = (z1 * d2y - z2 * d1y) / area, (z2 * d1x - z1 * d2x) / area  # per subpixel
    at_origin = (zw[:, 0] + grad_x * (_SUBPIXELS // 2 * (1 - width) - x[:, 0])
                 + grad_y * (_SUBPIXELS // 2 * (1 - height) - y[:, 0]))
    return torch.stack([at_origin, _SUBPIXELS * grad_y, _SUBPIXELS * grad_x], dim=-1)


def _nearest_keys(tris: _Triangles, batch: int, height: int, width: int) -> Tensor:
    """(B*H*W,) int64 per pixel: (quantised z/w << 24 | face) of the nearest covering triangle, or _EMPTY."""
    keys = torch.full((batch * height * width,), _EMPTY, dtype=torch.int64, device=tris.edge.device)
    tris, groups = _box_groups(tris)
    for start, stop, side in groups:
        step = max(1, _CHUNK // (side * side))
        for first in range(start, stop, step):
            _cover_block(tris, slice(first, min(first + step, stop)), side, width, keys)
    return keys


def _box_groups(tris: _Triangles) -> tuple[_Triangles, list[tuple[int, int, int]]]:
    """Triangles sorted by box size, and groups (start, stop, side) of them sharing a square box side.

    Each group tests one dense (triangles, side, side) block of samples, side being the longer box
    side rounded up to a power of two. Neighbouring groups are merged while the extra samples cost
    less than another round of calls would (per-call overhead dominates for small groups on CPU).
    """
    box = tris.box
    longer = torch.maximum(box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]) + 1
    log_side = torch.ceil(torch.log2(longer.double())).long()
    order = log_side.argsort()
    tris = _Triangles(*(t[order] for t in (tris.edge, tris.box, tris.base, tris.face, tris.plane)))
    logs, counts = torch.unique_consecutive(log_side[order], return_counts=True)
    groups, start, stop, cost, previous = [], 0, 0, 0, 0  # pending group [start, stop), its samples apart, its side
    for log, count in zip(logs.tolist(), counts.tolist()):
        if stop > start and (stop - start + count) << (2 * log) > cost + (count << (2 * log)) + 16384:
            groups.append((start, stop, 1 << previous))
            start, cost = stop, 0
        stop, cost, previous = stop + count, cost + (count << (2 * log)), log
    if stop > start:
        groups.append((start, stop, 1 << previous))
    return tris, groups


def _cover_block(tris: _Triangles, part: slice, side: int, width: int, keys: Tensor) -> None:
    """Depth-test the samples of triangles ``part`` (boxes at most side x side) into ``keys``."""
    edge, box = tris.edge[part], tris.box[part]
    steps = torch.arange(side, device=box.device)
    rows, cols = box[:, :1] + steps, box[:, 2:3] + steps  # (n, side) each
    # Each edge test compares an (n, side, 1) row term with an (n, 1, side) column term.
    inside = None
    for k in range(3):
        row_term = edge[:, k, 0:1] * rows + edge[:, k, 2:3]
        col_term = edge[:, k, 1:2] * cols
        if k == 0:  # samples in the rounded-up box but outside the real one never pass
            row_term = row_term.masked_fill(rows > box[:, 1:2], torch.iinfo(torch.int64).min)
            col_term = col_term.masked_fill(cols > box[:, 3:4], torch.iinfo(torch.int64).max)
        test = row_term[:, :, None] > col_term[:, None, :]
        inside = test if inside is None else inside & test
    t, r, c = inside.nonzero(as_tuple=True)
    if t.numel() == 0:
        return
    at_row, at_col = t * side + r, t * side + c  # flat indices into the (n, side) row and column tensors
    plane = tris.plane[part]
    depth = (plane[:, :1] + plane[:, 1:2] * rows).view(-1)[at_row] + (plane[:, 2:3] * cols).view(-1)[at_col]
    pixel = (tris.base[part, None] + rows * width).view(-1)[at_row] + cols.view(-1)[at_col]
    quantised = ((depth + 1.0) * _DEPTH_SCALE).clamp(0, 2 * _DEPTH_SCALE - 1).long()
    keys.scatter_reduce_(0, pixel, (quantised << _ID_BITS) | tris.face[part][t], reduce="amin")


def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward pass (exactly), the gradient of ``surrogate`` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def _gather_corners(values: Tensor, faces: Tensor, batch: Tensor, face: Tensor) -> Tensor:
    """(B, V, C) per-vertex values -> (P, 3, C) at the corners of faces ``face`` in images ``batch`` (P,)."""
    at = batch[:, None] * values.shape[1] + faces.long()[face]  # (P, 3) rows of the flattened values
    return values.reshape(-1, values.shape[-1]).index_select(0, at.view(-1)).view(-1, 3, values.shape[-1])


def _pixel_barycentrics(clip: Tensor, faces: Tensor, pixels: Tensor, face: Tensor, height: int,
                        width: int) -> Tensor:
    """(P, 4) rows (u, v, z/w, id + 1) of covered pixels, as nvdiffrast's pixel shader computes them."""
    b = pixels // (height * width)
    row = pixels % (height * width) // width
    col = pixels % width
    # NDC of the pixel centre, as nvdiffrast: xs * px + xo with xs = 2/W, xo = 1/W - 1.
    ndc_x = col.to(clip.dtype) * (2.0 / width) + (1.0 / width - 1.0)
    ndc_y = row.to(clip.dtype) * (2.0 / height) + (1.0 / height - 1.0)
    p = _gather_corners(clip, faces, b, face)  # (P, 3, 4)
    px = p[..., 0] - ndc_x[:, None] * p[..., 3]
    py = p[..., 1] - ndc_y[:, None] * p[..., 3]
    a = torch.stack([px[:, 1] * py[:, 2] - py[:, 1] * px[:, 2],
                     px[:, 2] * py[:, 0] - py[:, 2] * px[:, 0],
                     px[:, 0] * py[:, 1] - py[:, 0] * px[:, 1]], dim=-1)  # (P, 3)
    total = a.sum(-1, keepdim=True)
    bary = (a[:, :2] * (1.0 / total)).clamp(0.0, 1.0)  # forward: clamped, as nvdiffrast
    smooth = a[:, :2] / (total + torch.copysign(torch.full_like(total, _RAST_EPS), total))
    uv = _straight_through(bary, smooth)
    with torch.no_grad():
        depth = ((p[..., 2] * a).sum(-1) / (p[..., 3] * a).sum(-1)).clamp(-1.0, 1.0)
    return torch.cat([uv, depth[:, None], (face + 1).to(clip.dtype)[:, None]], dim=-1)


# ------------------------------------------------------------------------------------------------
# interpolate


def _interpolate(attributes: Tensor, rast: Tensor, faces: Tensor) -> Tensor:
    """Twin of ``interpolate``: (V, C) or (B|1, V, C) attributes -> (B, H, W, C); background 0."""
    batch, height, width, _ = rast.shape
    flat = rast.reshape(-1, 4)
    ids = flat[:, 3].detach().long()
    pixels = (ids > 0).nonzero().squeeze(1)
    face = ids[pixels] - 1
    if attributes.ndim == 2:
        values = _gather_corners(attributes[None], faces, torch.zeros_like(face), face)  # (P, 3, C)
    else:
        b = pixels // (height * width) if attributes.shape[0] > 1 else torch.zeros_like(face)
        values = _gather_corners(attributes, faces, b, face)
    uv = flat.index_select(0, pixels)  # (P, 4); u and v carry gradients to clip
    u, v = uv[:, 0:1], uv[:, 1:2]
    mixed = u * values[:, 0] + v * values[:, 1] + (1.0 - u - v) * values[:, 2]
    out = mixed.new_zeros(batch * height * width, attributes.shape[-1]).index_put((pixels,), mixed)
    return out.view(batch, height, width, -1)


# ------------------------------------------------------------------------------------------------
# texture


def _texture(image: Tensor, uv: Tensor, filter: str, boundary: str) -> Tensor:
    """Twin of ``texture``: (B|1, Ht, Wt, C) image sampled at (B, H, W, 2) uv -> (B, H, W, C)."""
    tex_h, tex_w, channels = image.shape[1:]
    batch = uv.shape[0]
    u, v = uv[..., 0], uv[..., 1]
    if boundary == "wrap":
        u, v = u - torch.floor(u), v - torch.floor(v)
    # Texel k of the batch image b, as a row of the flattened texture.
    b = torch.arange(batch, device=uv.device).view(-1, 1, 1) if image.shape[0] > 1 else 0
    texels = image.reshape(-1, channels)

    def fetch(ix: Tensor, iy: Tensor) -> Tensor:
        return texels[(b * tex_h + iy) * tex_w + ix]

    if filter == "nearest":
        ix = torch.floor(u.detach() * tex_w).long().clamp(0, tex_w - 1)
        iy = torch.floor(v.detach() * tex_h).long().clamp(0, tex_h - 1)
        return fetch(ix, iy)

    x, y = u * tex_w - 0.5, v * tex_h - 0.5  # texel-centre coordinates
    ix0, iy0, ix1, iy1, x, y = _bilinear_corners(x, y, tex_w, tex_h, boundary)
    fx, fy = (x - torch.floor(x))[..., None], (y - torch.floor(y))[..., None]
    top = fetch(ix0, iy0) * (1 - fx) + fetch(ix1, iy0) * fx
    bottom = fetch(ix0, iy1) * (1 - fx) + fetch(ix1, iy1) * fx
    return top * (1 - fy) + bottom * fy


def _bilinear_corners(x: Tensor, y: Tensor, tex_w: int, tex_h: int, boundary: str):
    if boundary == "clamp":
        x, y = x.clamp(0, tex_w - 1), y.clamp(0, tex_h - 1)
    ix0, iy0 = torch.floor(x.detach()).long(), torch.floor(y.detach()).long()
    ix1, iy1 = ix0 + 1, iy0 + 1
    if boundary == "wrap":
        ix0, ix1, iy0, iy1 = ix0 % tex_w, ix1 % tex_w, iy0 % tex_h, iy1 % tex_h
    else:  # clamped onto an edge texel centre: both corners are that texel (zero uv gradient, as nvdiffrast)
        on_x = (x.detach() == 0) | (x.detach() == tex_w - 1)
        on_y = (y.detach() == 0) | (y.detach() == tex_h - 1)
        ix1, iy1 = torch.where(on_x, ix0, ix1), torch.where(on_y, iy0, iy1)
    return ix0, iy0, ix1, iy1, x, y


# ------------------------------------------------------------------------------------------------
# antialias


def opposite_vertices(faces: Tensor) -> Tensor:
    """For each face and edge k (from corner k+1 to k+2), the far corner of the face across it.

    Args:
        faces: (F, 3) vertex indices.

    Returns:
        (F, 3) int64: the vertex of the other face sharing edge k, or -1 where the edge is on the
        boundary, is shared by more than two faces, or the face is degenerate. nvdiffrast keeps the
        first two faces it hashes for an edge shared by three or more; here all of them count as
        silhouette candidates.
    """
    faces = faces.long()
    num_faces = faces.shape[0]
    a, b = faces[:, [1, 2, 0]], faces[:, [2, 0, 1]]  # edge k: corners k+1, k+2
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    span = int(faces.max()) + 1 if num_faces else 1
    key = (torch.minimum(a, b) * span + torch.maximum(a, b)).flatten()  # (3F,)
    key = torch.where(degenerate.repeat_interleave(3), -1 - torch.arange(3 * num_faces, device=key.device), key)
    order = key.argsort()
    sorted_key = key[order]
    _, inverse, counts = torch.unique_consecutive(sorted_key, return_inverse=True, return_counts=True)
    pair = counts[inverse] == 2
    # In a group of two, the partner of position i is i+1 or i-1.
    position = torch.arange(order.numel(), device=key.device)
    first = torch.ones_like(pair)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    partner = torch.where(first, position + 1, position - 1).clamp(0, order.numel() - 1)
    own = faces.flatten()  # corner k of face f sits opposite edge k
    result = torch.full_like(key, -1)
    far = own[order[partner]]
    # Two faces with the same far corner (a doubled face) hash as one in nvdiffrast: silhouette.
    far = torch.where(pair & (far != own[order]), far, -1)
    result[order] = far
    return result.view(num_faces, 3)


def _same_sign(a: Tensor, b: Tensor) -> Tensor:
    return torch.signbit(a) == torch.signbit(b)


def _rational_gt(n0: Tensor, n1: Tensor, d0: Tensor, d1: Tensor) -> Tensor:
    """n0/d0 > n1/d1 without dividing, as nvdiffrast compares crossing positions."""
    return (n0 * d1 > n1 * d0) == _same_sign(d0, d1)


@dataclass(frozen=True)
class _Crossings:
    """Pixel pairs (E of them) where a silhouette edge crosses between the two pixel centres."""

    pixel0: Tensor  # (E,) flat index of the left / upper pixel
    pixel1: Tensor  # (E,) flat index of its right / lower neighbour
    down: Tensor  # (E,) bool, True for a vertical pair
    sign: Tensor  # (E,) +1 if the occluding triangle is pixel0's, -1 if pixel1's ("ds" in nvdiffrast)
    origin: Tensor  # (E,) flat index of the pixel whose triangle is used (pixel0 or pixel1)
    ends: Tensor  # (E, 2) rows of the flattened (B V, 4) clip tensor: the crossing edge's two vertices


def _antialias(color: Tensor, rast: Tensor, clip: Tensor, faces: Tensor, opposite: Tensor | None = None) -> Tensor:
    """Twin of ``antialias``: blends colours across silhouette edges, gradients to ``color`` and ``clip``.

    ``opposite`` (from ``opposite_vertices(faces)``) may be passed to skip recomputing the topology.
    """
    batch, height, width, channels = color.shape
    if opposite is None:
        opposite = opposite_vertices(faces)
    with torch.no_grad():
        found = _silhouette_crossings(rast, clip.detach(), faces.long(), opposite)
    if found is None:
        return color.clone()
    alpha = _blend_weight(clip, found, height, width)  # (E,)
    flat = color.reshape(-1, channels)
    delta = alpha[:, None].to(flat.dtype) * (flat.index_select(0, found.pixel1) - flat.index_select(0, found.pixel0))
    # A positive alpha pulls pixel0 towards pixel1's colour, a negative one pixel1 towards pixel0's.
    target = torch.where(alpha > 0, found.pixel0, found.pixel1)
    return flat.index_add(0, target, delta).view(batch, height, width, channels)


def _discontinuities(rast: Tensor) -> tuple[Tensor, Tensor] | None:
    """Flat indices of the pixels whose right (first) and lower (second) neighbour sees another triangle."""
    batch, height, width, _ = rast.shape
    ids = rast[..., 3]
    b, i, j = (ids[:, :, :-1] != ids[:, :, 1:]).nonzero(as_tuple=True)
    right = (b * height + i) * width + j
    b, i, j = (ids[:, :-1, :] != ids[:, 1:, :]).nonzero(as_tuple=True)
    below = (b * height + i) * width + j
    return None if right.numel() + below.numel() == 0 else (right, below)


def _pixel_space(p: Tensor, px: Tensor, py: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Clip positions (..., 4) -> pixel-space (x, y) relative to the centre of pixel (px, py) (...)."""
    half_w, half_h = width / 2.0, height / 2.0
    rcp = 1.0 / p[..., 3]
    x = p[..., 0] * rcp * half_w - (px.to(p.dtype) + 0.5 - half_w)
    y = p[..., 1] * rcp * half_h - (py.to(p.dtype) + 0.5 - half_h)
    return x, y


def _silhouette_crossings(rast: Tensor, clip: Tensor, faces: Tensor, opposite: Tensor) -> _Crossings | None:
    """Pixel pairs where a silhouette edge of the occluding triangle crosses between the two centres.

    Follows nvdiffrast's AntialiasFwdAnalysisKernel: take the nearer (or only) triangle of the pair;
    edge k (corner k+1 to k+2) is a silhouette edge when the far corner across it (from
    ``opposite``) lies on the triangle's own side, or there is none; among the edges crossing the
    line through both centres take the crossing farthest towards the other pixel, and accept it if
    that edge is a silhouette, is steeper than 45 degrees to the pair, and crosses the segment
    between the centres (1/16 pixel slack).
    """
    batch, height, width, _ = rast.shape
    pairs = _discontinuities(rast)
    if pairs is None:
        return None
    pixel0 = torch.cat(pairs)
    down = torch.cat([torch.zeros_like(pairs[0], dtype=torch.bool), torch.ones_like(pairs[1], dtype=torch.bool)])
    pixel1 = pixel0 + torch.where(down, width, 1)
    flat = rast.reshape(-1, 4)
    r0, r1 = flat.index_select(0, pixel0), flat.index_select(0, pixel1)
    t0, t1 = r0[:, 3].long() - 1, r1[:, 3].long() - 1
    use0 = (t0 >= 0) & ((t1 < 0) | (r0[:, 2] < r1[:, 2]))
    tri = torch.where(use0, t0, t1)
    origin = torch.where(use0, pixel0, pixel1)
    image = origin // (height * width)
    # Most pairs lie inside the surface, between triangles without a silhouette edge: drop them first.
    keep = _may_have_silhouette(clip, faces, opposite, image * faces.shape[0] + tri)
    pixel0, pixel1, down, tri, origin, image, use0 = (t[keep] for t in (pixel0, pixel1, down, tri, origin, image, use0))
    sign = torch.where(use0, 1.0, -1.0).to(clip.dtype)
    py, px = origin % (height * width) // width, origin % width

    # Corner positions of the occluding triangle and the far corners across its edges.
    base = (image * clip.shape[1])[:, None]
    corners, far = base + faces.index_select(0, tri), opposite.index_select(0, tri)  # (E, 3)
    far = torch.where(far >= 0, base + far, corners)  # no neighbour: the corner itself, always a silhouette
    rows = clip.reshape(-1, 4)
    x, y = _pixel_space(rows.index_select(0, corners.view(-1)).view(-1, 3, 4), px[:, None], py[:, None], height, width)
    ox, oy = _pixel_space(rows.index_select(0, far.view(-1)).view(-1, 3, 4), px[:, None], py[:, None], height, width)
    silhouette = _wing_signs(x, y, ox, oy)  # (E, 3)

    x, y = torch.where(down[:, None], y, x), torch.where(down[:, None], x, y)  # vertical pairs: swap axes
    nxt, nxt2 = [1, 2, 0], [2, 0, 1]
    dx, dy = x[:, nxt2] - x[:, nxt], y[:, nxt2] - y[:, nxt]  # edge k: corner k+1 -> k+2
    cross = ~_same_sign(y[:, nxt], y[:, nxt2])  # the edge crosses the line through both centres
    d = torch.where(cross, sign[:, None] * (x[:, nxt] * dy - y[:, nxt] * dx), torch.finfo(torch.float32).min)
    dy = torch.where(cross, dy, 1.0)
    k = _max_index3(d, dy)[:, None]  # (E, 1) edge with the farthest crossing
    dk, dyk, dxk = d.gather(1, k)[:, 0], dy.gather(1, k)[:, 0], dx.gather(1, k)[:, 0]
    crossing = dk / dyk
    ok = (silhouette.any(-1) & silhouette.gather(1, k)[:, 0] & (dyk.abs() >= dxk.abs())
          & (crossing > -_AA_SLACK) & (crossing < 1.0 + _AA_SLACK))
    if not bool(ok.any()):
        return None
    ends = torch.cat([corners.gather(1, (k + 1) % 3), corners.gather(1, (k + 2) % 3)], dim=1)
    return _Crossings(pixel0[ok], pixel1[ok], down[ok], sign[ok], origin[ok], ends[ok])


def _may_have_silhouette(clip: Tensor, faces: Tensor, opposite: Tensor, which: Tensor) -> Tensor:
    """(E,) False where triangle ``which`` (b F + f) surely has no silhouette edge.

    The wing test's signs do not depend on the pixel it is evaluated from (translation and positive
    per-axis scaling keep them), so it can run once per triangle in NDC. Rounding differs from the
    per-pixel test, so near-zero signs count as "maybe" and the exact per-pair test decides.
    """
    num_faces, num_verts = faces.shape[0], clip.shape[1]
    seen = torch.zeros(clip.shape[0] * num_faces, dtype=torch.bool, device=clip.device)
    seen[which] = True
    present = seen.nonzero().squeeze(1)  # distinct (b, f) among the pairs
    base = (present // num_faces * num_verts)[:, None]
    f = present % num_faces
    corners, far = base + faces.index_select(0, f), opposite.index_select(0, f)
    far = torch.where(far >= 0, base + far, corners)
    rows = clip.reshape(-1, 4)
    p, o = rows.index_select(0, corners.view(-1)).view(-1, 3, 4), rows.index_select(0, far.view(-1)).view(-1, 3, 4)
    x, y = p[..., 0] / p[..., 3], p[..., 1] / p[..., 3]
    ox, oy = o[..., 0] / o[..., 3], o[..., 1] / o[..., 3]
    own, wings = _wing_areas(x, y, ox, oy)
    scale = 1e-3 * (own.abs()[:, None] + wings.abs())
    maybe = _same_sign(wings, own[:, None]) | (wings.abs() <= scale) | (own.abs()[:, None] <= scale)
    seen[present] = maybe.any(-1)
    return seen[which]


def _wing_areas(x: Tensor, y: Tensor, ox: Tensor, oy: Tensor) -> tuple[Tensor, Tensor]:
    """Signed area of each (E,) triangle and (E, 3) of its wings: edge k with the far corner ``o_k``."""
    def cross(ax, ay, bx, by, cx, cy):
        return (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)

    own = cross(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    wings = torch.stack([cross(ox[:, 0], oy[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2]),
                         cross(ox[:, 1], oy[:, 1], x[:, 2], y[:, 2], x[:, 0], y[:, 0]),
                         cross(ox[:, 2], oy[:, 2], x[:, 0], y[:, 0], x[:, 1], y[:, 1])], dim=-1)
    return own, wings


def _wing_signs(x: Tensor, y: Tensor, ox: Tensor, oy: Tensor) -> Tensor:
    """(E, 3) True where edge k is a silhouette: the far corner across it lies on the triangle's side."""
    own, wings = _wing_areas(x, y, ox, oy)
    return _same_sign(wings, own[:, None])


def _max_index3(n: Tensor, d: Tensor) -> Tensor:
    """Index of the largest n_k / d_k of three, ties to the lower index (nvdiffrast's max_idx3)."""
    g10 = _rational_gt(n[:, 1], n[:, 0], d[:, 1], d[:, 0])
    g20 = _rational_gt(n[:, 2], n[:, 0], d[:, 2], d[:, 0])
    g21 = _rational_gt(n[:, 2], n[:, 1], d[:, 2], d[:, 1])
    return torch.where(g20 & g21, 2, torch.where(g10, 1, 0))


def _blend_weight(clip: Tensor, found: _Crossings, height: int, width: int) -> Tensor:
    """(E,) signed blend weight alpha = sign (1/2 - crossing), differentiable in the edge's clip positions."""
    ends = clip.reshape(-1, 4).index_select(0, found.ends.view(-1)).view(-1, 2, 4)  # with gradients
    py, px = found.origin % (height * width) // width, found.origin % width
    x, y = _pixel_space(ends, px[:, None], py[:, None], height, width)  # (E, 2)
    down = found.down[:, None]
    x, y = torch.where(down, y, x), torch.where(down, x, y)
    dx, dy = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    db = x[:, 0] * dy - y[:, 0] * dx
    crossing = found.sign * db / dy
    # nvdiffrast's gradient divides by dy + copysign(1e-3, dy), and vanishes once alpha saturates.
    smooth = found.sign * db / (dy + torch.copysign(torch.full_like(dy, _AA_EPS), dy))
    crossing = _straight_through(crossing, smooth)
    inner = (crossing > 0) & (crossing < 1)
    crossing = torch.where(inner, crossing, crossing.detach().clamp(0.0, 1.0))
    return found.sign * (0.5 - crossing)
