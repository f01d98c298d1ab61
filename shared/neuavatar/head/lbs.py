"""Linear blend skinning, as in SMPL / FLAME (Loper et al. 2015; Li et al. 2017).

With template T, identity basis S, expression basis E, joint regressor 𝒥, pose correctives P and
skinning weights W:

    v_shaped = T + S β + E ψ                       (V, 3)
    J        = 𝒥 v_shaped                          (J, 3)   joints follow the identity
    v_posed  = v_shaped + P vec(R(θ_1..) - I)       (V, 3)   optional pose correctives
    G_j      = G_parent(j) [R(θ_j) | J_j - J_parent(j)]     rigid transform of joint j
    v        = Σ_j W_vj G_j [I | -J_j] v_posed              (V, 3)

Every function is batched over B and differentiable; tensors stay on the caller's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["axis_angle_to_matrix", "blend_shapes", "skin"]


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula.

    Args:
        axis_angle: (..., 3) rotation axis times angle in radians.

    Returns:
        (..., 3, 3) rotation matrices. Smooth at zero (uses the Taylor series there).
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)  # (..., 1)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    # sin(t)/t and (1 - cos(t))/t^2, with their series near 0 so gradients stay finite; the second
    # as 2 (sin(t/2)/t)^2, which does not cancel digits in float32 at small angles as 1 - cos does.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    half = torch.sin(theta / 2) / theta
    b = torch.where(small, 0.5 - theta2 / 24, 2 * half * half)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def blend_shapes(coefficients: Tensor, basis: Tensor) -> Tensor:
    """Offsets from blend shapes.

    Args:
        coefficients: (B, K) weights.
        basis: (V, 3, K) one offset field per coefficient.

    Returns:
        (B, V, 3) the weighted sum of the offset fields.
    """
    return torch.einsum("bk,vck->bvc", coefficients, basis)


def skin(v_shaped: Tensor, joints: Tensor, pose: Tensor, parents: Tensor | Sequence[int], weights: Tensor,
         pose_correctives: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pose a shaped mesh with linear blend skinning.

    Args:
        v_shaped: (B, V, 3) vertices in the rest pose, identity and expression applied.
        joints: (B, J, 3) rest-pose joint positions.
        pose: (B, J, 3) axis-angle rotation of each joint relative to its parent.
        parents: (J,) parent index of each joint (a tensor or a sequence of ints: a sequence avoids
            a device sync), -1 for the root (which must come first, every parent before its children).
        weights: (V, J) skinning weights, rows summing to 1.
        pose_correctives: (P, V * 3) with P = 9 (J - 1), FLAME's pose-dependent offsets, or None.
            Row k = 9 (j - 1) + 3 r + c is entry (r, c) of R_j - I for joints j = 1..J-1; column
            3 v + d moves coordinate d of vertex v.

    Returns:
        vertices (B, V, 3) and posed joint positions (B, J, 3).
    """
    b, j = pose.shape[:2]
    rot = axis_angle_to_matrix(pose)  # (B, J, 3, 3)
    if pose_correctives is not None:
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feature = (rot[:, 1:] - eye).reshape(b, -1)  # (B, 9 (J - 1))
        v_shaped = v_shaped + (feature @ pose_correctives).reshape(b, -1, 3)

    # Rigid transform of each joint in world space, walking the chain from the root.
    parent_of = parents.tolist() if isinstance(parents, Tensor) else list(parents)
    # Slices, not a gather by a list of ints: that would copy the list to the device (a host sync,
    # and not allowed inside CUDA-graph capture).
    rel = torch.stack([joints[:, 0]] + [joints[:, i] - joints[:, parent_of[i]] for i in range(1, j)], 1)
    local = _transform(rot, rel)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[parent_of[i]] @ local[:, i])
    world = torch.stack(chain, 1)  # (B, J, 4, 4)
    posed_joints = world[:, :, :3, 3]

    # Transforms relative to the rest pose: G_j [I | -J_j]
    rest = world.clone()
    rest[:, :, :3, 3] = world[:, :, :3, 3] - (world[:, :, :3, :3] @ joints[..., None])[..., 0]
    blended = torch.einsum("vj,bjmn->bvmn", weights, rest)  # (B, V, 4, 4)
    vertices = (blended[..., :3, :3] @ v_shaped[..., None])[..., 0] + blended[..., :3, 3]
    return vertices, posed_joints


def _transform(rot: Tensor, trans: Tensor) -> Tensor:
    """(..., 4, 4) homogeneous transforms from (..., 3, 3) rotations and (..., 3) translations."""
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype, device=rot.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = trans
    out[..., 3, 3] = 1
    return out
