"""3D Gaussians bound to the triangles of a deforming mesh (GaussianAvatars, Qian et al. 2024).

Gaussian i lives in the local frame of its parent triangle f = parent[i]: with the triangle's
centroid c_f, rotation R_f (edge, binormal, normal) and size k_f (mean edge length),

    μ_i = c_f + k_f R_f p_i,     R_i = R_f r(q_i),     s_i = k_f exp(σ_i)

so the Gaussians follow the mesh through every expression and pose, and stretch with it. Colour is
a base colour plus a low-rank correction driven by the expression code (wrinkles, mouth shading):

    colour_i = sigmoid(a_i + Σ_r (c U)_r W_ir)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from neuavatar.avatar.mesh import triangle_frames

__all__ = ["BoundGaussians", "WorldGaussians", "matrix_to_quaternion", "quaternion_multiply"]


@dataclass
class WorldGaussians:
    """Gaussians placed in space, per batch item: means (B, N, 3), quats (B, N, 4) wxyz, scales (B, N, 3),
    opacities (B, N), colours (B, N, 3); and, where the avatar ends, the ring (B, K, 3) of its neck
    cut in the same space (``neuavatar.avatar.cut``; None: no cut)."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colours: Tensor
    ring: Tensor | None = None


def matrix_to_quaternion(rot: Tensor) -> Tensor:
    """(..., 4) unit quaternions wxyz of rotation matrices (..., 3, 3), stable for every rotation
    (each of the four candidate formulas is used where its divisor is largest)."""
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack([
        torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # (..., 4 candidates, 4)
    diag = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1, keepdim=True)  # (..., 1)
    q = candidates.gather(-2, best[..., None].expand(*best.shape, 4))[..., 0, :]
    return q / q.norm(dim=-1, keepdim=True)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of wxyz quaternions (..., 4): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


class BoundGaussians(nn.Module):
    """The avatar's Gaussians, each bound to one triangle (parameters in that triangle's frame)."""

    def __init__(self, parent: Tensor, code_size: int, colour_rank: int):
        super().__init__()
        n = len(parent)
        self.register_buffer("parent", parent.long())
        # k Gaussians on every triangle, in triangle order (as on_surface makes them): place() then
        # broadcasts each triangle's frame over its k Gaussians instead of gathering it N times
        f = int(parent.max()) + 1 if n else 0
        uniform = n > 0 and n % f == 0 and torch.equal(parent.cpu(), torch.arange(f).repeat_interleave(n // f))
        self.per_triangle = n // f if uniform else None
        self.position = nn.Parameter(torch.zeros(n, 3))  # p_i, in triangle sizes
        self.rotation = nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(n, 1))  # q_i, wxyz
        self.log_scale = nn.Parameter(torch.zeros(n, 3))  # σ_i
        self.opacity_logit = nn.Parameter(torch.zeros(n))
        self.colour_logit = nn.Parameter(torch.zeros(n, 3))  # a_i
        self.colour_rank = colour_rank
        if colour_rank:
            self.code_to_colour = nn.Parameter(torch.randn(code_size, colour_rank) * 0.01)  # U (C, r)
            self.colour_basis = nn.Parameter(torch.zeros(n, colour_rank, 3))  # W (N, r, 3): starts at 0

    @classmethod
    def on_surface(cls, vertices: Tensor, faces: Tensor, per_triangle: int, code_size: int, colour_rank: int,
                   colours: Tensor | None = None, opacity: float = 0.7, generator: torch.Generator | None = None
                   ) -> BoundGaussians:
        """``per_triangle`` Gaussians spread over every triangle of the rest mesh (V, 3).

        Args:
            colours: (F, per_triangle, 3) starting colours in [0, 1] (e.g. the tracker's albedo at
                each point), or None for grey.
        """
        f = len(faces)
        parent = torch.arange(f, device=faces.device).repeat_interleave(per_triangle)
        g = cls(parent, code_size, colour_rank).to(vertices.device)
        # Uniform points on each triangle (the square-root trick), in the triangle's frame.
        r = torch.rand(f * per_triangle, 2, generator=generator).to(vertices.device)
        a = r[:, 0].sqrt()
        bary = torch.stack([1 - a, a * (1 - r[:, 1]), a * r[:, 1]], -1)
        if per_triangle == 1:
            bary = torch.full_like(bary, 1 / 3)
        centroid, rot, size = triangle_frames(vertices[None], faces)
        corners = vertices[faces[parent]]  # (N, 3, 3)
        point = (bary[..., None] * corners).sum(1)
        local = (rot[0, parent].transpose(1, 2) @ (point - centroid[0, parent])[..., None])[..., 0] / size[0, parent, None]
        with torch.no_grad():
            g.position.copy_(local)
            g.log_scale.fill_(float(torch.log(torch.tensor(0.4 / per_triangle ** 0.5))))
            g.opacity_logit.fill_(float(torch.logit(torch.tensor(opacity))))
            if colours is not None:
                g.colour_logit.copy_(torch.logit(colours.reshape(-1, 3).clamp(0.02, 0.98)))
        return g

    def __len__(self) -> int:
        return len(self.parent)

    def place(self, vertices: Tensor, faces: Tensor, code: Tensor) -> WorldGaussians:
        """The Gaussians on the mesh (B, V, 3) (any space: the result is in the same one), for
        condition codes (B, C)."""
        centroid, rot, size = triangle_frames(vertices, faces)  # (B, F, 3), (B, F, 3, 3), (B, F)
        b, n, k = len(vertices), len(self), self.per_triangle
        q = nn.functional.normalize(self.rotation, dim=-1)
        if k is not None:  # (B, F, k, ...): each triangle's frame broadcast over its k Gaussians
            f = centroid.shape[1]
            position = self.position.view(1, f, k, 1, 3)
            means = centroid[:, :, None] + size[:, :, None, None] * (rot[:, :, None] * position).sum(-1)
            quats = quaternion_multiply(matrix_to_quaternion(rot)[:, :, None], q.view(f, k, 4))
            scales = size[:, :, None, None] * self.log_scale.exp().view(f, k, 3)
            means, quats, scales = means.reshape(b, n, 3), quats.reshape(b, n, 4), scales.reshape(b, n, 3)
        else:
            p = self.parent
            means = centroid[:, p] + size[:, p, None] * (rot[:, p] @ self.position[None, :, :, None])[..., 0]
            quats = quaternion_multiply(matrix_to_quaternion(rot)[:, p], q)
            scales = size[:, p, None] * self.log_scale.exp()
        logits = self.colour_logit.expand(len(vertices), -1, -1)
        if self.colour_rank:
            logits = logits + torch.einsum("br,nrc->bnc", code @ self.code_to_colour, self.colour_basis)
        opacities = torch.sigmoid(self.opacity_logit).expand(len(vertices), -1)
        return WorldGaussians(means=means, quats=quats, scales=scales, opacities=opacities, colours=torch.sigmoid(logits))
