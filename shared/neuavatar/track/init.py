"""Closed-form rigid initialisation: the head's rotation and translation from detected landmarks.

MediaPipe's landmarks come with a relative depth (z, in the units of x), so each frame gives a 3D
point cloud in camera axes up to scale. Umeyama's method aligns the model's neutral landmarks to
it (rotation and scale, in closed form, batched over frames); the depth follows from the scale and
the focal length, and the translation from a linear least-squares fit of the pinhole projection.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rigid_init", "matrix_to_axis_angle"]

_FLIP = torch.tensor([1.0, -1.0, -1.0])  # model axes -> camera axes (see neuavatar.render.camera)


def matrix_to_axis_angle(rot: Tensor) -> Tensor:
    """(..., 3) axis-angle of rotation matrices (..., 3, 3) (angles below pi)."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos)
    axis = torch.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                        rot[..., 1, 0] - rot[..., 0, 1]], -1)
    sin = torch.sin(angle)[..., None]
    small = sin.abs() < 1e-6
    return torch.where(small, axis / 2, axis / (2 * sin.clamp_min(1e-6)) * angle[..., None])


def rigid_init(model_points: Tensor, root: Tensor, detected: Tensor, intrinsics: Tensor,
               iterations: int = 4) -> tuple[Tensor, Tensor]:
    """Head rotation and translation (model space) that put ``model_points`` on ``detected``.

    Args:
        model_points: (L, 3) the model's landmarks at rest, model space (metres).
        root: (3,) the root joint at rest, which the head's rotation turns about.
        detected: (T, L, 3) detected landmarks: x, y in image pixels, z relative depth in pixels
            (larger is farther), as the dataset stores MediaPipe's.
        intrinsics: (T, 4) fx, fy, cx, cy of each frame, pixels.
        iterations: alignments, each correcting the previous one's perspective.

    Returns:
        rotation (T, 3) axis-angle and translation (T, 3), as ``HeadParams`` takes them.
    """
    flip = _FLIP.to(model_points)
    x = model_points * flip  # (L, 3) in camera axes, at rest
    y = detected.to(model_points)
    fx, fy, cx, cy = intrinsics.to(x).unbind(-1)
    du = y[..., 0] - cx[:, None]
    dv = y[..., 1] - cy[:, None]
    # As in POSIT: align in closed form as if the projection were orthographic, then undo each
    # point's perspective (scale its image offset by its depth over the mean depth) and align again.
    ortho = y.clone()
    for _ in range(iterations):
        rot_cam = _umeyama_rotation(x, ortho)
        t_cam = _translation(rot_cam, x, du, dv, fx, fy)
        depth = torch.einsum("tij,lj->tli", rot_cam, x)[..., 2] + t_cam[:, None, 2]  # (T, L)
        ratio = depth / depth.mean(1, keepdim=True)
        ortho = torch.stack([du * ratio + cx[:, None], dv * ratio + cy[:, None], y[..., 2]], -1)

    # Back to model space: p_cam = F (R_m (v - root) + root + t_m)  with  R_cam = F R_m F.
    rot_model = flip[:, None] * rot_cam * flip[None, :]
    translation = flip * t_cam - root + torch.einsum("tij,j->ti", rot_model, root)
    return matrix_to_axis_angle(rot_model), translation


def _umeyama_rotation(x: Tensor, y: Tensor) -> Tensor:
    """(T, 3, 3) rotations best aligning the centred (L, 3) points ``x`` with each (T, L, 3) cloud ``y``."""
    xc = x - x.mean(0)
    yc = y - y.mean(1, keepdim=True)
    cov = torch.einsum("li,tlj->tij", xc, yc) / len(x)  # (T, 3, 3)
    u, s, vt = torch.linalg.svd(cov)
    d = torch.ones_like(s)
    d[:, 2] = torch.sign(torch.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    return vt.transpose(1, 2) @ torch.diag_embed(d) @ u.transpose(1, 2)


def _translation(rot_cam: Tensor, x: Tensor, du: Tensor, dv: Tensor, fx: Tensor, fy: Tensor) -> Tensor:
    """(T, 3) camera-space translation for fixed rotations, by linear least squares.

    u - cx = fx (a_x + t_x) / (a_z + t_z) is linear in t once multiplied out; both image axes of
    every landmark are stacked.
    """
    a = torch.einsum("tij,lj->tli", rot_cam, x)  # (T, L, 3)
    zeros = torch.zeros_like(du)
    rows_u = torch.stack([fx[:, None].expand_as(du), zeros, -du], -1)
    rows_v = torch.stack([zeros, fy[:, None].expand_as(dv), -dv], -1)
    rhs_u = du * a[..., 2] - fx[:, None] * a[..., 0]
    rhs_v = dv * a[..., 2] - fy[:, None] * a[..., 1]
    lhs = torch.cat([rows_u, rows_v], 1)  # (T, 2L, 3)
    rhs = torch.cat([rhs_u, rhs_v], 1)[..., None]
    return torch.linalg.lstsq(lhs, rhs).solution[..., 0]

