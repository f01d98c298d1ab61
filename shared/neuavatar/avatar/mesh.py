"""The avatar's mesh: the head model refined by learned vertex offsets, and the mesh terms.

Offsets follow Neural Head Avatars: a static part (the person's hair volume, ears, neck) plus a
part conditioned on expression and joints, here low rank,

    v = head(θ) + R_root(θ) · (δ_static + B (A c(θ))),     c = [ψ, jaw, neck, eyes]

so mouth and cheek shapes the head model cannot make are learned from the video. Offsets are in
the head's rest frame and turn with the root and neck, like the landmark offsets of the tracker.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuavatar.head.lbs import axis_angle_to_matrix
from neuavatar.head.model import HeadModel, HeadParams

__all__ = ["MeshOffsets", "condition_code", "posed_with_offsets", "face_normals", "triangle_frames", "laplacian",
           "uniform_laplacian_loss", "adjacent_faces", "normal_consistency_loss"]


def condition_code(params: HeadParams) -> Tensor:
    """(B, E + 12) what offsets and colour corrections depend on: expression, jaw, neck and eyes."""
    return torch.cat([params.expression, params.jaw, params.neck, params.eyes.flatten(1)], -1)


class MeshOffsets(nn.Module):
    """Learned per-vertex offsets: static plus a low-rank, conditioned part (metres)."""

    def __init__(self, num_vertices: int, code_size: int, rank: int):
        super().__init__()
        self.static = nn.Parameter(torch.zeros(num_vertices, 3))
        self.rank = rank
        if rank:
            self.code_to_rank = nn.Parameter(torch.randn(code_size, rank) * 0.01)  # A (C, r)
            self.rank_to_offsets = nn.Parameter(torch.zeros(rank, num_vertices * 3))  # B (r, 3V): starts at 0

    def forward(self, code: Tensor) -> Tensor:
        """(B, V, 3) offsets in the head's rest frame for condition codes (B, C)."""
        out = self.static.expand(code.shape[0], -1, -1)
        if self.rank:
            out = out + ((code @ self.code_to_rank) @ self.rank_to_offsets).view(code.shape[0], -1, 3)
        return out


def posed_with_offsets(model: HeadModel, params: HeadParams, offsets: MeshOffsets) -> tuple[Tensor, Tensor]:
    """(B, V, 3) posed vertices with the offsets applied, and the (B, V, 3) offsets themselves."""
    head = model(params)
    delta = offsets(condition_code(params))
    turn = axis_angle_to_matrix(params.rotation) @ axis_angle_to_matrix(params.neck)  # (B, 3, 3)
    return head.vertices + delta @ turn.transpose(1, 2), delta


def face_normals(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Unit normals (B, F, 3) and areas (B, F) of triangles ``faces`` (F, 3) of (B, V, 3) vertices."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    cross = torch.linalg.cross(v1 - v0, v2 - v0)
    norm = cross.norm(dim=-1, keepdim=True)
    return cross / norm.clamp_min(1e-12), 0.5 * norm[..., 0]


def triangle_frames(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each triangle's local frame, as GaussianAvatars binds Gaussians to it.

    Returns:
        centroid (B, F, 3); rotation (B, F, 3, 3) with columns (edge 0 direction, binormal, normal);
        scale (B, F): the mean length of the triangle's edges.
    """
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    e0 = v1 - v0
    normal = torch.linalg.cross(e0, v2 - v0)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    tangent = e0 / e0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    binormal = torch.linalg.cross(normal, tangent)
    rotation = torch.stack([tangent, binormal, normal], -1)
    scale = ((v1 - v0).norm(dim=-1) + (v2 - v1).norm(dim=-1) + (v0 - v2).norm(dim=-1)) / 3
    return (v0 + v1 + v2) / 3, rotation, scale


def laplacian(faces: Tensor, num_vertices: int) -> Tensor:
    """(V, V) sparse uniform Laplacian L = I - D⁻¹ A of the mesh's edge graph."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)]).unique(dim=0)
    degree = torch.bincount(edges[:, 0], minlength=num_vertices).clamp_min(1).float()
    weights = -1.0 / degree[edges[:, 0]]
    eye = torch.arange(num_vertices, device=faces.device)
    index = torch.cat([edges.T, torch.stack([eye, eye])], 1)
    values = torch.cat([weights, torch.ones(num_vertices, device=faces.device)])
    return torch.sparse_coo_tensor(index, values, (num_vertices, num_vertices), check_invariants=True).coalesce()


def uniform_laplacian_loss(lap: Tensor, offsets: Tensor) -> Tensor:
    """Mean squared Laplacian of (B, V, 3) offsets, in cm²: offsets should vary smoothly."""
    b, v, _ = offsets.shape
    flat = offsets.permute(1, 0, 2).reshape(v, b * 3) * 100
    return torch.sparse.mm(lap, flat).pow(2).sum(-1).mean() / b


def normal_consistency_loss(vertices: Tensor, faces: Tensor, adjacent: Tensor) -> Tensor:
    """Mean (1 - cos) between the normals of triangle pairs ``adjacent`` (P, 2) sharing an edge."""
    normals, _ = face_normals(vertices, faces)
    return (1 - (normals[:, adjacent[:, 0]] * normals[:, adjacent[:, 1]]).sum(-1)).mean()


def adjacent_faces(faces: Tensor) -> Tensor:
    """(P, 2) pairs of triangles that share an edge."""
    f = faces.shape[0]
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
    owner = torch.arange(f, device=faces.device).repeat(3)
    key = edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]
    order = key.argsort()
    key, owner = key[order], owner[order]
    same = key[1:] == key[:-1]
    return torch.stack([owner[:-1][same], owner[1:][same]], 1)

