"""The avatar's mesh: the head model refined by learned vertex offsets, and the mesh terms.

Offsets follow Neural Head Avatars: a static part (the person's hair volume, ears, neck) plus a
part conditioned on expression and joints, here low rank,

    v = head(θ) + R(θ) · (δ_static + w ⊙ B (A e(θ)) + P p(θ)),   e = [ψ, jaw, eyes], p = [neck, Rᵀ e_up - e_up]

so mouth and cheek shapes the head model cannot make are learned from the video. The expression
part acts on the face only (weights w): let it move the hair and it learns each training frame's
hair outline from that frame's expression, which does not carry over to new frames. Offsets are in
the head's rest frame and turn with the root and neck (R), like the landmark offsets of the
tracker; the up direction in the head's frame lets hanging hair move as the head turns and tilts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuavatar.head.lbs import axis_angle_to_matrix
from neuavatar.head.model import HeadModel, HeadParams

__all__ = ["MeshOffsets", "condition_code", "condition_code_size", "expression_code", "expression_code_size", "pose_code",
           "POSE_CODE_SIZE", "expression_region", "head_turn", "posed_with_offsets", "face_normals",
           "triangle_frames", "laplacian", "uniform_laplacian_loss", "adjacent_faces", "normal_consistency_loss"]


def head_turn(params: HeadParams) -> Tensor:
    """(B, 3, 3) the head's orientation in model space: the root rotation after the neck's."""
    return axis_angle_to_matrix(params.rotation) @ axis_angle_to_matrix(params.neck)


# The parts of the head whose shape follows the expression; hair, scalp, ears and neck do not.
EXPRESSION_REGIONS = ("face", "lips", "eyes", "mouth_interior", "brows")


POSE_CODE_SIZE = 6


def expression_code(params: HeadParams) -> Tensor:
    """(B, E + 9) expression, jaw and eyes: what the face's shape and shading follow."""
    return torch.cat([params.expression, params.jaw, params.eyes.flatten(1)], -1)


def expression_code_size(model: HeadModel) -> int:
    """Length of :func:`expression_code` for ``model``."""
    return model.num_expression + 9


def pose_code(params: HeadParams, turn: Tensor | None = None) -> Tensor:
    """(B, 6) the neck's rotation and which way is up in the head's frame (Rᵀ e_y - e_y, zero for an
    upright head): what hanging hair and the neck's skin follow. ``turn``: :func:`head_turn`, if known."""
    turn = head_turn(params) if turn is None else turn
    up = turn[:, 1, :]  # Rᵀ e_y: the second row of R
    # minus e_y, written without a constant tensor (a host-to-device copy breaks CUDA-graph capture)
    return torch.cat([params.neck, up[:, :1], up[:, 1:2] - 1, up[:, 2:]], -1)


def condition_code(params: HeadParams, turn: Tensor | None = None) -> Tensor:
    """(B, E + 15) the expression and pose codes together: what the learned offsets and colour
    corrections follow. ``turn``: :func:`head_turn`, if known."""
    return torch.cat([expression_code(params), pose_code(params, turn)], -1)


def condition_code_size(model: HeadModel) -> int:
    """Length of the condition code (expression and pose codes together; what colour corrections
    follow) that :func:`posed_with_offsets` returns."""
    return expression_code_size(model) + POSE_CODE_SIZE


def expression_region(model: HeadModel, rings: int = 4) -> Tensor:
    """(V,) weight of expression-driven offsets: 1 on the face, fading to 0 over ``rings`` rings of
    edges, so the face can move without dragging the hair along (and without a seam)."""
    inside = torch.zeros(model.num_vertices, dtype=torch.bool, device=model.template.device)
    for name in EXPRESSION_REGIONS:
        if name in model.regions:
            inside |= model.regions[name].bool()
    if not inside.any():  # a head model without regions: everything may follow the expression
        return torch.ones(model.num_vertices, device=inside.device)
    lap = laplacian(model.faces, model.num_vertices)
    weight = inside.float()[:, None]
    for _ in range(rings):
        neighbours = weight - torch.sparse.mm(lap, weight)  # D⁻¹ A w: the mean over each vertex's neighbours
        weight = torch.maximum(weight, neighbours)
    return torch.where(inside, 1.0, weight[:, 0].clamp(0, 1))


class MeshOffsets(nn.Module):
    """Learned per-vertex offsets (metres): static; low rank in the expression code, on the face
    only (``region`` (V,) weights); linear in the pose code everywhere."""

    def __init__(self, region: Tensor, expression_size: int, pose_size: int, rank: int):
        super().__init__()
        num_vertices = region.shape[0]
        self.register_buffer("region", region.reshape(-1, 1).float(), persistent=False)
        self.static = nn.Parameter(torch.zeros(num_vertices, 3))
        self.pose_to_offsets = nn.Parameter(torch.zeros(pose_size, num_vertices * 3))  # P (Cp, 3V)
        self.rank = rank
        if rank:
            self.code_to_rank = nn.Parameter(torch.randn(expression_size, rank) * 0.01)  # A (Ce, r)
            self.rank_to_offsets = nn.Parameter(torch.zeros(rank, num_vertices * 3))  # B (r, 3V): starts at 0

    def forward(self, expression: Tensor, pose: Tensor) -> Tensor:
        """(B, V, 3) offsets in the head's rest frame for codes ``expression`` (B, Ce), ``pose`` (B, Cp)."""
        b = expression.shape[0]
        out = self.static + (pose @ self.pose_to_offsets).view(b, -1, 3)
        if self.rank:
            out = out + self.region * ((expression @ self.code_to_rank) @ self.rank_to_offsets).view(b, -1, 3)
        return out


def posed_with_offsets(model: HeadModel, params: HeadParams, offsets: MeshOffsets, identity: Tensor | None = None,
                       code_range: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(B, V, 3) posed vertices with the offsets applied, the (B, V, 3) offsets themselves, and the
    (B, E + 15) condition code they were made from. ``identity``: see :meth:`HeadModel.forward`.

    ``code_range``: (low, high), each (E + 15,): the learned parts see the condition code clamped to
    it (the range the training frames spanned), so a new expression or pose never extrapolates
    them; the head model itself follows ``params`` all the way."""
    head = model(params, identity=identity)
    turn = head_turn(params)
    code = condition_code(params, turn)
    if code_range is not None:
        code = torch.minimum(torch.maximum(code, code_range[0]), code_range[1])
    split = code.shape[1] - POSE_CODE_SIZE
    delta = offsets(code[:, :split], code[:, split:])
    return head.vertices + delta @ turn.transpose(1, 2), delta, code


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

