"""Differentiable 3D Gaussian splatting with gsplat's "classic" semantics, on gsplat or in pure torch.

    colour, alpha = rasterize_gaussians(means, quats, scales, opacities, colors, intrinsics, W, H)

Gaussians are given in OpenCV camera space (the avatar poses them per frame, so the view matrix is
the identity); each batch item has its own Gaussians and its own camera. ``backend="auto"`` uses
gsplat 1.5.3 (``gsplat.rasterization``, batched, CUDA only) when the tensors are on CUDA and gsplat
imports, else the pure-torch twin below, which follows gsplat's CUDA kernels step by step:

1. Projection (``projection_ewa_3dgs_fused``): Σ = R S Sᵀ Rᵀ from the normalised quaternion; EWA
   cov2d = J Σ Jᵀ with the perspective Jacobian at (x, y) clamped to 1.3x the view frustum
   (x/z in [-cx/fx - 0.15 W/fx, (W - cx)/fx + 0.15 W/fx], likewise y); cov2d += eps2d I. A Gaussian is
   culled when z < near or z > far, det(cov2d) <= 0, opacity < 1/255, or its box misses the image.
   Its box has half-sides ceil(e sqrt(cov2d_xx)), ceil(e sqrt(cov2d_yy)) with the opacity-aware
   e = min(3.33, sqrt(2 ln(255 opacity))): exactly the region where its alpha can reach 1/255.
2. Per pixel (centre (j + 0.5, i + 0.5)), Gaussians in increasing z (ties: lower index first):
   alpha = min(0.999, opacity exp(-dᵀ cov2d⁻¹ d / 2)); skipped when below 1/255; compositing stops
   (exclusive) at the first Gaussian after which the transmittance would be <= 1e-4.
3. colour = sum_i c_i alpha_i T_i + T_final background, alpha = 1 - T_final.

Gradients flow to means, quats, scales, opacities, colors and background, not to the intrinsics
(gsplat does not differentiate its Ks, so the torch path detaches them too), with gsplat's rules:
a pixel where alpha hits the 0.999 clamp passes no gradient to that Gaussian's shape or opacity.

The torch path bins Gaussians into 8x8-pixel tiles by the boxes above, sorts each tile's list by
depth and composites a padded (tiles, pixels, Gaussians) block per chunk of tiles, with a
hand-written backward that recomputes the block, so memory stays bounded by ``_CHUNK``. Tiling
changes speed only, never the result. It matches a literal per-pixel loop over gsplat's rules to
float64 rounding (tests/test_gaussians.py) except in two measure-zero cases: gsplat skips a
Gaussian where rounding makes sigma slightly negative (only at its very centre; here it counts with
alpha = opacity), and it passes gradients where opacity exp(-sigma) is exactly 0.999 (here not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal, assert_never, get_args

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["GaussianBackend", "rasterize_gaussians"]

GaussianBackend = Literal["auto", "torch", "gsplat"]
"""``auto``: gsplat for CUDA tensors when it imports and its CUDA extension builds (on the first
CUDA call: about a minute), else torch. The others force one."""

_ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: fainter contributions are skipped
_ALPHA_MAX = 0.999  # gsplat's per-Gaussian alpha clamp
_T_MIN = 1e-4  # gsplat stops compositing a pixel before its transmittance drops to this
_EXTEND = 3.33  # gsplat's cap on the box half-side, in standard deviations
_FRUSTUM_MARGIN = 0.3  # the Jacobian's x/z, y/z clamp: 0.3 * tan(fov/2) beyond the image edge
_TILE = 8  # torch path: tile side in pixels (speed only; 8 beats 16 for the small Gaussians of an avatar)
_CHUNK = 1 << 20  # torch path: (tile, pixel, Gaussian) triples composited at once (4 MB per float32 block)


def rasterize_gaussians(means: Tensor,  # (B, N, 3)
                        quats: Tensor,  # (B, N, 4)
                        scales: Tensor,  # (B, N, 3)
                        opacities: Tensor,  # (B, N)
                        colors: Tensor,  # (B, N, C)
                        intrinsics: Tensor,  # (B, 4) or (1, 4)
                        width: int,
                        height: int,
                        *,
                        background: Tensor | None = None,  # (C,) or (B, C)
                        near: float = 0.01,
                        far: float = 100.0,
                        eps2d: float = 0.3,
                        backend: GaussianBackend = "auto") -> tuple[Tensor, Tensor]:  # (B, H, W, C), (B, H, W, 1)
    """Render 3D Gaussians, composited front to back over a background (gsplat's classic mode).

    Args:
        means: (B, N, 3) float centres in OpenCV camera space (x right, y down, z forward), metres.
        quats: (B, N, 4) rotations as quaternions (w, x, y, z); need not be normalised.
        scales: (B, N, 3) standard deviations along the rotated axes, metres (positive, not log).
        opacities: (B, N) in [0, 1].
        colors: (B, N, C) per-Gaussian colour or feature channels (C = 3 for RGB).
        intrinsics: (B, 4) or (1, 4) pinhole (fx, fy, cx, cy) in pixels; pixel (row i, column j)
            has its centre at (j + 0.5, i + 0.5). Not differentiated.
        width, height: image size in pixels.
        background: (C,) or (B, C) colour behind the Gaussians; None is black.
        near, far: Gaussians whose centre has z outside [near, far] are not drawn, 0 < near < far.
        eps2d: added to the diagonal of every projected 2D covariance (pixels²): a low-pass filter
            that keeps each Gaussian at least ~1 pixel wide.
        backend: see ``GaussianBackend``.

    Returns:
        colour (B, H, W, C) = sum_i c_i alpha_i T_i + T_final background, and alpha (B, H, W, 1)
        = 1 - T_final; both differentiable w.r.t. every input but ``intrinsics``. The dtype is the
        dtype of ``means`` (gsplat computes in float32 either way).

    Raises:
        ValueError: on a bad shape, dtype, device, size, depth range or backend.
        RuntimeError: ``backend="gsplat"`` and gsplat does not import or its CUDA extension does not build.
    """
    batch, count = _check_inputs(means, quats, scales, opacities, colors, intrinsics, width, height, near, far, eps2d)
    channels = colors.shape[-1]
    dtype = means.dtype
    quats, scales, opacities, colors = (t.to(dtype) for t in (quats, scales, opacities, colors))
    intrinsics = intrinsics.to(dtype).expand(batch, 4)
    if background is None:
        background = means.new_zeros(batch, channels)
    else:
        if background.shape not in ((channels,), (batch, channels)) or not background.is_floating_point():
            raise ValueError(f"background must be a float tensor of shape ({channels},) or ({batch}, {channels}), "
                             f"got {tuple(background.shape)} {background.dtype}")
        _check_devices(means=means, background=background)
        background = background.to(dtype).expand(batch, channels)
    use_gsplat = _use_gsplat(backend, means)
    width, height = int(width), int(height)
    if count == 0:
        return (background[:, None, None, :].expand(batch, height, width, channels).clone(),
                means.new_zeros(batch, height, width, 1))
    if use_gsplat:
        return _render_gsplat(means, quats, scales, opacities, colors, intrinsics, width, height, background,
                              near, far, eps2d)
    return _render_torch(means, quats, scales, opacities, colors, intrinsics, width, height, background,
                         near, far, eps2d)


# ------------------------------------------------------------------------------------------------
# checks and backend choice


def _check_inputs(means, quats, scales, opacities, colors, intrinsics, width, height, near, far, eps2d):
    if means.ndim != 3 or means.shape[-1] != 3 or not means.is_floating_point():
        raise ValueError(f"means must be a float tensor of shape (B, N, 3), got {tuple(means.shape)} {means.dtype}")
    batch, count = means.shape[:2]
    expected = {"quats": (quats, (batch, count, 4)), "scales": (scales, (batch, count, 3)),
                "opacities": (opacities, (batch, count))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a float tensor of shape {shape} (B, N from means), "
                             f"got {tuple(tensor.shape)} {tensor.dtype}")
    if colors.ndim != 3 or colors.shape[:2] != (batch, count) or colors.shape[2] == 0 or not colors.is_floating_point():
        raise ValueError(f"colors must be a float tensor of shape ({batch}, {count}, C) with C > 0 (B, N from means), "
                         f"got {tuple(colors.shape)} {colors.dtype}")
    if intrinsics.ndim != 2 or intrinsics.shape[1] != 4 or intrinsics.shape[0] not in (1, batch):
        raise ValueError(f"intrinsics must have shape ({batch}, 4) or (1, 4) as (fx, fy, cx, cy), "
                         f"got {tuple(intrinsics.shape)}")
    for name, size in (("width", width), ("height", height)):
        if isinstance(size, bool) or int(size) != size or size <= 0:
            raise ValueError(f"{name} must be a positive integer, got {size!r}")
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    if not eps2d >= 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    _check_devices(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, intrinsics=intrinsics)
    return batch, count


def _check_devices(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must share one device, got {', '.join(f'{n} on {d}' for n, d in devices.items())}")


@cache
def _gsplat_available() -> bool:
    try:
        _load_gsplat()
    except RuntimeError:
        return False
    return True


@cache
def _load_gsplat():
    """``gsplat.rasterization`` with gsplat's CUDA extension built (the first call compiles it: minutes).

    Raises:
        RuntimeError: gsplat does not import, or its extension did not build.
    """
    try:
        from gsplat import rasterization
        from gsplat.cuda._backend import _C
    except ImportError as e:
        raise RuntimeError("backend='gsplat' needs the `gsplat` package (pip install gsplat==1.5.3; it compiles "
                           f"its CUDA code with nvcc and ninja on first use): {e}") from e
    if _C is None:
        raise RuntimeError("gsplat imported but its CUDA extension did not build: it needs a CUDA toolkit (nvcc) "
                           "that torch finds, and ninja; run `python -c 'from gsplat.cuda._backend import _C'` "
                           "with VERBOSE=1 to see why")
    return rasterization


def _use_gsplat(backend: GaussianBackend, means: Tensor) -> bool:
    if backend not in get_args(GaussianBackend):
        raise ValueError(f"backend must be one of {get_args(GaussianBackend)}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "gsplat":
        _load_gsplat()
        if not means.is_cuda:
            raise ValueError(f"backend='gsplat' needs CUDA tensors, got device {means.device}")
        return True
    if backend == "auto":
        return means.is_cuda and _gsplat_available()
    assert_never(backend)


# ------------------------------------------------------------------------------------------------
# gsplat backend


def _render_gsplat(means, quats, scales, opacities, colors, intrinsics, width, height, background, near, far, eps2d):
    """One batched ``gsplat.rasterization`` call: batch dims (B,), one identity camera per item."""
    rasterization = _load_gsplat()
    batch, dtype = means.shape[0], means.dtype
    fx, fy, cx, cy = intrinsics.detach().float().unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    ks = torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], -1).view(batch, 1, 3, 3)
    viewmats = torch.eye(4, device=means.device).expand(batch, 1, 4, 4)
    colour, alpha, _ = rasterization(
        means.float(), quats.float(), scales.float(), opacities.float(), colors.float(), viewmats, ks,
        width, height, near_plane=near, far_plane=far, eps2d=eps2d, packed=False,
        backgrounds=background.float()[:, None], render_mode="RGB", rasterize_mode="classic")
    return colour[:, 0].to(dtype), alpha[:, 0].to(dtype)  # drop the camera dim: (B, H, W, C), (B, H, W, 1)


# ------------------------------------------------------------------------------------------------
# torch backend: projection


def _render_torch(means, quats, scales, opacities, colors, intrinsics, width, height, background, near, far, eps2d):
    batch, count, channels = colors.shape
    means2d, conics, depths, radii = _project(means, quats, scales, opacities, intrinsics.detach(), width, height,
                                              near, far, eps2d)
    plan = _plan_tiles(means2d.detach(), radii, depths.detach(), width, height)
    colour_tiles, trans_tiles = _Composite.apply(means2d.reshape(-1, 2), conics.reshape(-1, 3),
                                                 opacities.reshape(-1), colors.reshape(-1, channels), plan)
    tile = plan.tile

    def image(tiles: Tensor) -> Tensor:  # (B th tw, P, X) tile-major -> (B, H, W, X)
        x = tiles.view(batch, plan.tiles_y, plan.tiles_x, tile, tile, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, plan.tiles_y * tile, plan.tiles_x * tile, -1)[:, :height, :width]

    trans = image(trans_tiles[..., None])
    return image(colour_tiles) + trans * background[:, None, None, :], 1.0 - trans


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    """(..., 4) wxyz, any norm -> (..., 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).unflatten(-1, (3, 3))


def _project(means: Tensor,  # (B, N, 3)
             quats: Tensor,  # (B, N, 4)
             scales: Tensor,  # (B, N, 3)
             opacities: Tensor,  # (B, N)
             intrinsics: Tensor,  # (B, 4)
             width: int, height: int, near: float, far: float, eps2d: float,
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Twin of gsplat's fused EWA projection (pinhole, identity view).

    Returns (B, N, 2) pixel means, (B, N, 3) conics (upper triangle of cov2d⁻¹: xx, xy, yy),
    (B, N) depths z and (B, N, 2) int64 box half-sides in pixels, (0, 0) for a culled Gaussian.
    Culled Gaussians get finite stand-in values, so their (zero) gradients stay finite too.
    """
    fx, fy, cx, cy = (intrinsics[:, k, None] for k in range(4))  # each (B, 1)
    x, y, z = means.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    z = torch.where(in_depth, z, torch.ones_like(z))  # no division by ~0 for Gaussians about to be culled
    rz = 1.0 / z
    rot = _quat_to_rotmat(quats)
    m = rot * scales[..., None, :]
    cov3d = m @ m.transpose(-1, -2)  # (B, N, 3, 3)

    # gsplat clamps the Jacobian's x/z, y/z to the frustum widened by 0.3 tan(fov/2): Gaussians far
    # outside the image would otherwise get absurdly stretched footprints.
    margin_x, margin_y = _FRUSTUM_MARGIN * 0.5 * width / fx, _FRUSTUM_MARGIN * 0.5 * height / fy
    tx = z * torch.clamp(x * rz, min=-(cx / fx + margin_x), max=(width - cx) / fx + margin_x)
    ty = z * torch.clamp(y * rz, min=-(cy / fy + margin_y), max=(height - cy) / fy + margin_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1).unflatten(-1, (2, 3))
    cov2d = jac @ cov3d @ jac.transpose(-1, -2)  # (B, N, 2, 2)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    c00, c01, c11 = cov2d[..., 0, 0] + eps2d, cov2d[..., 0, 1], cov2d[..., 1, 1] + eps2d
    det = c00 * c11 - c01 * c01
    ok = in_depth & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], -1)

    with torch.no_grad():  # gsplat's opacity-aware box (Radl et al. 2024, "StopThePop", sec. B.2)
        keep_opacity = opacities >= _ALPHA_MIN
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp(min=_ALPHA_MIN) / _ALPHA_MIN)).clamp(max=_EXTEND)
        radius_x = torch.ceil(extend * c00.detach().clamp(min=0).sqrt())
        radius_y = torch.ceil(extend * c11.detach().clamp(min=0).sqrt())
        u, v = means2d.detach().unbind(-1)
        on_image = (u + radius_x > 0) & (u - radius_x < width) & (v + radius_y > 0) & (v - radius_y < height)
        drawn = ok & keep_opacity & ((radius_x > 0) | (radius_y > 0)) & on_image
        radii = torch.stack([radius_x, radius_y], -1).where(drawn[..., None], 0).long()
    return means2d, conics, z, radii


# ------------------------------------------------------------------------------------------------
# torch backend: binning into tiles


@dataclass(frozen=True)
class _Chunk:
    """Tiles composited together: ``ids[t, k]`` is the k-th nearest Gaussian touching ``tiles[t]``."""

    tiles: Tensor  # (n,) int64 tile index in [0, B th tw)
    ids: Tensor  # (n, K) int64 flat Gaussian index b N + i, in increasing depth; B N (a dummy) pads


@dataclass(frozen=True)
class _TilePlan:
    """Which Gaussians each tile of each image sees, grouped into chunks of at most ``_CHUNK`` triples."""

    tile: int  # tile side in pixels
    tiles_x: int
    tiles_y: int
    batch: int
    chunks: list[_Chunk]

    @property
    def n_tiles(self) -> int:
        return self.batch * self.tiles_y * self.tiles_x

    def pixel_axes(self, tiles: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(n,) tile indices -> (n, tile) x centres of the tile's pixel columns and y centres of its rows."""
        local = tiles % (self.tiles_x * self.tiles_y)
        offsets = torch.arange(self.tile, device=tiles.device, dtype=dtype) + 0.5
        px = (local % self.tiles_x * self.tile).to(dtype)[:, None] + offsets
        py = (local // self.tiles_x * self.tile).to(dtype)[:, None] + offsets
        return px, py


def _plan_tiles(means2d: Tensor,  # (B, N, 2)
                radii: Tensor,  # (B, N, 2)
                depths: Tensor,  # (B, N)
                width: int, height: int) -> _TilePlan:
    """Bin every drawn Gaussian into the tiles its box touches, each tile's list in increasing depth."""
    batch, count = depths.shape
    device, tile = depths.device, _TILE
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    drawn = (radii > 0).all(-1)
    # Depth order first (stable, so equal depths keep index order, as gsplat's radix sort does);
    # the stable sort by tile below keeps it within each tile.
    order = torch.where(drawn, depths, torch.inf).argsort(dim=1, stable=True)
    flat = (order + torch.arange(batch, device=device)[:, None] * count).reshape(-1)
    centre, radius = means2d.reshape(-1, 2)[flat] / tile, radii.reshape(-1, 2)[flat].to(means2d.dtype) / tile
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    lo = torch.minimum(torch.floor(centre - radius).long().clamp(min=0), limit)
    hi = torch.minimum(torch.ceil(centre + radius).long().clamp(min=0), limit)
    span = hi - lo
    per_gaussian = span.prod(-1) * drawn.reshape(-1)[flat]
    total = int(per_gaussian.sum())

    gaussian = flat.repeat_interleave(per_gaussian, output_size=total)
    k = torch.arange(total, device=device) - (per_gaussian.cumsum(0) - per_gaussian).repeat_interleave(
        per_gaussian, output_size=total)
    span_x = span[:, 0].repeat_interleave(per_gaussian, output_size=total)
    tx = lo[:, 0].repeat_interleave(per_gaussian, output_size=total) + k % span_x
    ty = lo[:, 1].repeat_interleave(per_gaussian, output_size=total) + k // span_x
    tile_id = gaussian // count * (tiles_x * tiles_y) + ty * tiles_x + tx

    # Busiest tiles first, so a chunk's padding to its first tile's length stays small.
    per_tile = torch.bincount(tile_id, minlength=batch * tiles_x * tiles_y)
    tile_order = torch.argsort(per_tile, descending=True, stable=True)
    rank = torch.empty_like(tile_order)
    rank[tile_order] = torch.arange(len(tile_order), device=device)
    pair_order = rank[tile_id].argsort(stable=True)
    gaussian, tile_rank = gaussian[pair_order], rank[tile_id][pair_order]
    sorted_counts = per_tile[tile_order]
    starts = sorted_counts.cumsum(0) - sorted_counts
    slot = torch.arange(total, device=device) - starts[tile_rank]  # position in its tile's list

    counts = sorted_counts.tolist()  # one host sync: the chunk shapes depend on it
    pixels = tile * tile
    chunks, first, lo_pair = [], 0, 0
    while first < len(counts) and counts[first] > 0:
        longest = counts[first]
        last, hi_pair = first + 1, lo_pair + longest
        while last < len(counts) and counts[last] > 0 and (last + 1 - first) * longest * pixels <= _CHUNK:
            hi_pair += counts[last]
            last += 1
        ids = torch.full((last - first, longest), batch * count, device=device, dtype=torch.long)
        ids[tile_rank[lo_pair:hi_pair] - first, slot[lo_pair:hi_pair]] = gaussian[lo_pair:hi_pair]
        chunks.append(_Chunk(tile_order[first:last], ids))
        first, lo_pair = last, hi_pair
    return _TilePlan(tile, tiles_x, tiles_y, batch, chunks)


# ------------------------------------------------------------------------------------------------
# torch backend: compositing


@dataclass(frozen=True)
class _Block:
    """One chunk's compositing state as gsplat's kernel sees it, over (n tiles, rows, columns, K Gaussians).

    A tile's pixels form a grid, so mean - pixel splits into a per-column dx and a per-row dy, and
    sigma = a/2 dx² + b dx dy + c/2 dy² is an outer sum of small factors; Gaussians are the last
    (contiguous) dimension, where CPU scans are fastest.
    """

    params: Tensor  # (n, K, 6 + C) gathered Gaussians: mean x, y, conic a, b, c, opacity, colour
    dx: Tensor  # (n, tile, K) mean x - centre of each pixel column
    dy: Tensor  # (n, tile, K) mean y - centre of each pixel row
    raw: Tensor  # (n, tile, tile, K) opacity exp(-sigma), before the 0.999 clamp
    alpha: Tensor  # (n, tile, tile, K) clamped; 0 where skipped (< 1/255) or after the early stop
    before: Tensor  # (n, tile, tile, K) transmittance in front of each Gaussian, T_k
    final: Tensor  # (n, tile, tile) transmittance behind the last drawn Gaussian


def _block(chunk: _Chunk, plan: _TilePlan, params: Tensor) -> _Block:
    params = params[chunk.ids]  # (n, K, 6 + C)
    px, py = plan.pixel_axes(chunk.tiles, params.dtype)  # (n, tile) column and row centres
    dx, dy = params[:, None, :, 0] - px[..., None], params[:, None, :, 1] - py[..., None]  # (n, tile, K)
    a, b, c, opacity = params[:, None, :, 2], params[:, None, :, 3], params[:, None, :, 4], params[:, None, None, :, 5]
    neg_sigma = ((-0.5 * c * dy * dy)[:, :, None] + (-0.5 * a * dx * dx)[:, None]).addcmul_(
        (-b * dy)[:, :, None], dx[:, None])
    # gsplat also skips sigma < 0, which a positive-definite conic reaches only by rounding at the
    # centre; there this computes alpha = opacity (up to one ulp) instead.
    raw = neg_sigma.exp_().mul_(opacity)
    alpha = torch.nn.functional.threshold_(raw.clamp(max=_ALPHA_MAX), _below(_ALPHA_MIN, raw.dtype), 0.0)
    after = torch.cumprod(1.0 - alpha, dim=-1)  # T_{k+1}: the same products in the same order as gsplat
    before = torch.cat([torch.ones_like(after[..., :1]), after[..., :-1]], dim=-1)
    # gsplat stops at the first Gaussian after which T would be <= 1e-4 and does not draw it; T only
    # falls along the list, so the drawn Gaussians are a prefix. Float masks: bool ones are slow on CPU.
    after = torch.nn.functional.threshold_(after, _T_MIN, 2.0)  # stopped -> 2
    final = after.amin(dim=-1)
    alpha.mul_(after.neg_().add_(2.0).ceil_().clamp_(max=1.0))  # 1 while drawing, 0 once stopped
    return _Block(params, dx, dy, raw, alpha, before, final)


@cache
def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``: ``x > _below(v)`` is ``x >= v`` in that dtype."""
    v = torch.tensor(value, dtype=dtype)
    return torch.nextafter(v, torch.zeros_like(v)).item()


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of projected Gaussians into tiles, with gsplat's backward rules.

    Inputs are flat over the batch (G = B N): means2d (G, 2), conics (G, 3), opacities (G,),
    colors (G, C), and the ``_TilePlan``. Outputs are tile-major: colour (B th tw, P, C) without
    the background, and the final transmittance (B th tw, P), P = tile² pixels in row-major order;
    tiles no Gaussian touches get 0 and 1. The backward recomputes each chunk instead of keeping it.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, plan):
        # One row per Gaussian, plus a padding row (index G) with opacity 0: always skipped.
        params = torch.cat([means2d, conics, opacities[:, None], colors], dim=1)
        params = torch.cat([params, torch.zeros_like(params[:1])])
        params[-1, 2] = params[-1, 4] = 1.0  # a finite conic for the padding row
        pixels = plan.tile ** 2
        colour = colors.new_zeros(plan.n_tiles, pixels, colors.shape[1])
        trans = colors.new_ones(plan.n_tiles, pixels)
        for chunk in plan.chunks:
            blk = _block(chunk, plan, params)
            n, k = chunk.ids.shape
            weight = blk.alpha.mul_(blk.before).view(n, pixels, k)  # alpha_k T_k
            colour[chunk.tiles] = torch.bmm(weight, blk.params[..., 6:])
            trans[chunk.tiles] = blk.final.view(n, pixels)
        ctx.plan = plan
        ctx.save_for_backward(params)
        return colour, trans

    @staticmethod
    @once_differentiable
    def backward(ctx, g_colour, g_trans):
        (params,) = ctx.saved_tensors
        plan = ctx.plan
        grads = torch.zeros_like(params)
        for chunk in plan.chunks:
            blk = _block(chunk, plan, params)
            n, k = chunk.ids.shape
            tile = plan.tile
            g_c, g_t = g_colour[chunk.tiles], g_trans[chunk.tiles].view(n, tile, tile, 1)  # (n, P, C), (n, t, t, 1)
            col = blk.params[..., 6:]  # (n, K, C)
            weight = blk.alpha * blk.before  # (n, t, t, K)
            v_col = torch.bmm(weight.view(n, -1, k).transpose(1, 2), g_c)  # (n, K, C)
            # d colour / d alpha_k = c_k T_k - (sum_{j>k} c_j w_j) / (1 - alpha_k),
            # d T_final / d alpha_k = -T_final / (1 - alpha_k)   (w_j = alpha_j T_j).
            c_dot_g = torch.bmm(g_c, col.transpose(1, 2)).view(n, tile, tile, k)
            weighted = weight.mul_(c_dot_g)
            behind = weighted.cumsum(-1).neg_().add_(weighted.sum(-1, keepdim=True))  # sum over j > k
            behind.addcmul_(g_t, blk.final[..., None]).div_(1.0 - blk.alpha)
            v_alpha = blk.before.mul_(c_dot_g).sub_(behind)
            # d alpha / d(-sigma) = alpha where drawn and unclamped (raw exactly 0.999 aside); else 0.
            unclamped = torch.nn.functional.threshold(-blk.alpha, -_ALPHA_MAX, 0.0)
            q = v_alpha.mul_(unclamped).neg_()  # = -dL/dsigma, (n, t, t, K)
            row_sum, col_sum = q.sum(2), q.sum(1)  # (n, t, K): over columns, over rows
            q_dx = (q * blk.dx[:, None]).sum(2)  # (n, t rows, K): sum over columns of q dx
            dx_sum, dy_sum = (col_sum * blk.dx).sum(1), (row_sum * blk.dy).sum(1)  # (n, K)
            a, b, c, opacity = blk.params[..., 2:6].unbind(-1)
            # dL/dopacity = sum exp(-sigma) dL/dalpha = sum q / opacity (the padding row has q = 0)
            v_opacity = row_sum.sum(1) / torch.where(opacity > 0, opacity, 1.0)
            v_con = (-0.5 * (col_sum * blk.dx * blk.dx).sum(1), -(q_dx * blk.dy).sum(1),
                     -0.5 * (row_sum * blk.dy * blk.dy).sum(1))
            v_mean = (-(a * dx_sum + b * dy_sum), -(b * dx_sum + c * dy_sum))
            v = torch.cat([torch.stack([*v_mean, *v_con, v_opacity], -1), v_col], -1)  # (n, K, 6 + C)
            grads.index_add_(0, chunk.ids.flatten(), v.flatten(0, 1))
        grads = grads[:-1]
        return grads[:, :2], grads[:, 2:5], grads[:, 5], grads[:, 6:], None
