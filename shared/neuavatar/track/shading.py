"""Lambertian shading under spherical-harmonics lighting (order 2, 9 coefficients per colour).

    colour(p) = albedo(p) * sum_k L_k Y_k(n(p))

with Y_k the real spherical harmonics of the surface normal n (camera space) and L (9, 3) the
frame's lighting; the cosine lobe's convolution constants are folded into L.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sh_basis", "sh_shading", "ambient_lighting", "vertex_normals"]


def sh_basis(normals: Tensor) -> Tensor:
    """(..., 9) real spherical harmonics up to order 2 of unit ``normals`` (..., 3)."""
    x, y, z = normals.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.282095),
        0.488603 * y, 0.488603 * z, 0.488603 * x,
        1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1), 1.092548 * x * z,
        0.546274 * (x * x - y * y),
    ], -1)


def sh_shading(normals: Tensor, lighting: Tensor) -> Tensor:
    """Irradiance (B, ..., 3) at ``normals`` (B, ..., 3) under ``lighting`` (B, 9, 3)."""
    basis = sh_basis(normals)  # (B, ..., 9)
    flat = basis.reshape(basis.shape[0], -1, 9)
    return torch.bmm(flat, lighting).reshape(*normals.shape[:-1], 3)


def ambient_lighting(batch: int, device: torch.device | str, level: float = 1.0) -> Tensor:
    """(B, 9, 3) lighting that shades every normal with ``level`` (only the constant term)."""
    light = torch.zeros(batch, 9, 3, device=device)
    light[:, 0] = level / 0.282095
    return light


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(B, V, 3) unit normals: the area-weighted sum of the adjacent triangles' normals.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) long, counter-clockwise seen from outside.
    """
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), length = 2 * area
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(1, faces[:, i], face_n)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
