"""Where the avatar ends: one smooth cut across the neck, the same in the targets and every render.

The head model's mesh ends in the ragged edge of MakeHuman's neck, while the person's neck and
torso go on. The avatar ends instead at a smooth ring just above that edge (``NeckCut.from_head``). Posed with the head and projected, the ring gives the boundary: with u
a pixel's coordinate across the neck's image axis and v along it (downwards), e(u) the lowest point
of the projected ring at u (held constant beyond its ends), and f a feather width in pixels,

    m(u, v) = clamp((e(u) - v) / f + 1/2, 0, 1)

The training targets' alpha and the rendered alpha are both multiplied by m, so the boundary is
smooth (the ring is), moves with the neck, and is the same in data, training and rendering. The
ring follows the head model's posed mesh (not the learned offsets), so targets made from the
tracking and renders of the trained avatar agree exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuavatar.render.camera import project

__all__ = ["NeckCut", "cut_mask", "blend_cut", "CUT_MARGIN"]

CUT_MARGIN = 0.002
"""How far the cut plane clears the mesh's ragged neck edge, metres."""

_ENVELOPE_BINS = 64


class NeckCut(nn.Module):
    """The cut ring as fixed points on mesh edges: point k = (1 - w_k) v[a_k] + w_k v[b_k].

    Args:
        edges: (K, 2) long vertex pairs, in order around the neck.
        weights: (K,) position along each edge.
    """

    def __init__(self, edges: Tensor, weights: Tensor):
        super().__init__()
        self.register_buffer("edges", edges.long())
        self.register_buffer("weights", weights.float())

    @classmethod
    def from_head(cls, template: Tensor, faces: Tensor, margin: float = CUT_MARGIN) -> NeckCut:
        """The ring where a smooth surface crosses the neck of the mesh (V, 3) ``template``.

        Around the neck's vertical axis at angle θ, the mesh's open edge at the bottom of the neck
        zig-zags about a smooth height h(θ) (low at the throat and nape, high at the sides): a
        Fourier series of order 2 fitted to it. The cut surface is y = h(θ) + c, with c the
        least lift that clears the whole edge by ``margin`` metres; the ring is where the mesh's
        edges cross it, ordered around the neck.
        """
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
        edges, count = edges.unique(dim=0, return_counts=True)
        rim = edges[count == 1].flatten().unique()  # vertices on the mesh's open edges
        rim = rim[template[rim, 1] < template[:, 1].min() + 0.04]  # the neck's edge, not the eyes' or mouth's
        axis = template[rim].mean(0)

        def angle_basis(points: Tensor) -> Tensor:  # (P, 5): 1, cos θ, sin θ, cos 2θ, sin 2θ
            theta = torch.atan2(points[:, 0] - axis[0], points[:, 2] - axis[2])
            return torch.stack([torch.ones_like(theta), theta.cos(), theta.sin(), (2 * theta).cos(),
                                (2 * theta).sin()], -1)

        fit = torch.linalg.lstsq(angle_basis(template[rim]).double(), template[rim, 1:2].double()).solution.float()
        lift = float((template[rim, 1:2] - angle_basis(template[rim]) @ fit).max()) + margin
        height = template[:, 1] - (angle_basis(template) @ fit)[:, 0] - lift  # each vertex above the surface
        ha, hb = height[edges[:, 0]], height[edges[:, 1]]
        crossing = ha * hb < 0
        edges, ha, hb = edges[crossing], ha[crossing], hb[crossing]
        weights = ha / (ha - hb)
        points = template[edges[:, 0]] * (1 - weights[:, None]) + template[edges[:, 1]] * weights[:, None]
        # only the neck: crossings near its axis (no lobes of ears or hair far above it)
        radius = (points[:, [0, 2]] - axis[[0, 2]]).norm(dim=-1)
        near = (radius < 1.5 * radius.median()) & (points[:, 1] < axis[1] + 0.05)
        edges, weights, points = edges[near], weights[near], points[near]
        order = torch.atan2(points[:, 0] - axis[0], points[:, 2] - axis[2]).argsort()
        cut = cls(edges[order], weights[order])
        if _normal(cut.ring(template[None]))[0, 1] < 0:  # run the ring so that its normal points up, to the head
            cut = cls(edges[order.flip(0)], weights[order.flip(0)])
        return cut

    def ring(self, vertices: Tensor) -> Tensor:
        """(B, K, 3) the ring on the mesh (B, V, 3), in the vertices' space."""
        w = self.weights[None, :, None]
        return vertices[:, self.edges[:, 0]] * (1 - w) + vertices[:, self.edges[:, 1]] * w


def cut_mask(ring: Tensor, intrinsics: Tensor, size: int, feather: float | None = None) -> Tensor:
    """(B, S, S, 1) m in [0, 1]: 1 above the cut, 0 below, for the ring (B, K, 3) in camera space.

    Args:
        intrinsics: (B, 4) or (1, 4) of the ``size`` x ``size`` image.
        feather: width of the soft edge in pixels (default size / 128, at least 1).
    """
    f = max(1.0, size / 128) if feather is None else feather
    b = ring.shape[0]
    p = project(ring, intrinsics.expand(b, 4))  # (B, K, 2)
    # the neck's axis in the image: from a point 5 cm up the ring's normal (towards the head) to the ring
    centre = ring.mean(1, keepdim=True)
    above = project(centre + 0.05 * _normal(ring)[:, None], intrinsics.expand(b, 4))
    down = p.mean(1, keepdim=True) - above  # (B, 1, 2)
    down = down / down.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    across = torch.stack([-down[..., 1], down[..., 0]], -1)
    u, v = (p * across).sum(-1), (p * down).sum(-1)  # (B, K)

    # e(u): the ring's lowest point (largest v) over each of M bins across it
    low, high = u.amin(1, keepdim=True), u.amax(1, keepdim=True)
    grid = low + (high - low) * torch.linspace(0, 1, _ENVELOPE_BINS, device=ring.device)  # (B, M)
    u0, u1, v0, v1 = u[..., None], u.roll(-1, 1)[..., None], v[..., None], v.roll(-1, 1)[..., None]
    span = u1 - u0
    t = (grid[:, None] - u0) / torch.where(span.abs() < 1e-6, torch.full_like(span, 1e-6), span)
    on = (t >= -1e-4) & (t <= 1 + 1e-4) & (span.abs() >= 1e-6)
    env = torch.where(on, v0 + t.clamp(0, 1) * (v1 - v0), torch.full_like(t, -torch.inf)).amax(1)  # (B, M)
    nearest = v.gather(1, (u[:, :, None] - grid[:, None]).abs().argmin(1))  # a bin no segment reached (rounding)
    env = torch.where(torch.isfinite(env), env, nearest)

    # every pixel's (u, v), and e(u) interpolated between bins
    centres = torch.arange(size, device=ring.device, dtype=ring.dtype) + 0.5
    x, y = centres[None, None, :], centres[None, :, None]  # (1, 1, S), (1, S, 1)
    pu = x * across[:, :, None, 0] + y * across[:, :, None, 1]  # (B, S, S)
    pv = x * down[:, :, None, 0] + y * down[:, :, None, 1]
    pos = ((pu - low[..., None]) / (high - low).clamp_min(1e-6)[..., None] * (_ENVELOPE_BINS - 1))
    pos = pos.clamp(0, _ENVELOPE_BINS - 1)
    i0 = pos.floor().long().clamp(max=_ENVELOPE_BINS - 2)
    frac = pos - i0
    flat = i0.flatten(1)
    e0 = env.gather(1, flat).view_as(pos)
    e1 = env.gather(1, flat + 1).view_as(pos)
    e = e0 + frac * (e1 - e0)
    return ((e - pv) / f + 0.5).clamp(0, 1)[..., None]


def _normal(ring: Tensor) -> Tensor:
    """(B, 3) unit normal of the ring (B, K, 3), from two of its diameters."""
    k = ring.shape[1]
    normal = torch.linalg.cross(ring[:, k // 4] - ring[:, 3 * k // 4], ring[:, 0] - ring[:, k // 2])
    return normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def blend_cut(colour: Tensor, alpha: Tensor, mask: Tensor, background: Tensor | None) -> tuple[Tensor, Tensor]:
    """Colour (B, S, S, 3) rendered over ``background`` (3,) and its alpha (B, S, S, 1), with the
    avatar cut by ``mask`` (B, S, S, 1): out = m colour + (1 - m) background, alpha m α."""
    if background is None:
        return colour * mask, alpha * mask
    return mask * colour + (1 - mask) * background, alpha * mask
