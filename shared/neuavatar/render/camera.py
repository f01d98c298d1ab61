"""Camera conventions: model space -> OpenCV camera -> pixels -> nvdiffrast clip space.

- Model space (head models): metres, y up, the face looks along +z, x to the subject's left.
- Camera space: OpenCV, x right, y down, z forward; a point in front of the camera has z > 0.
  ``p_cam = diag(1, -1, -1) @ p_model``, so a head at rest with model translation (0, 0, -0.6)
  sits 0.6 m in front of the camera and faces it.
- Images: continuous pixel coordinates. The centre of pixel (row i, column j) is at
  (x, y) = (j + 0.5, i + 0.5); an H x W image spans [0, W] x [0, H]. Pinhole intrinsics are
  (fx, fy, cx, cy) in pixels: u = fx x / z + cx, v = fy y / z + cy.
- Clip space (what ``rasterize`` takes): homogeneous (x, y, z, w) with w = camera depth. The
  rasterizer's output row 0 is the top image row (v small) and output pixel (i, j) samples
  exactly the image point (j + 0.5, i + 0.5), because nvdiffrast puts NDC (-1, -1) at the
  outer corner of the first pixel of the first row and samples pixel centres.

Every function is batched, differentiable, and keeps tensors on the caller's device and dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MODEL_TO_CAMERA", "model_to_camera", "project", "clip_space"]

MODEL_TO_CAMERA = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
"""(3, 3) rotation from model space (y up, face along +z) to the OpenCV camera (y down, z forward)."""


def model_to_camera(points: Tensor) -> Tensor:
    """Model-space points in OpenCV camera coordinates.

    Args:
        points: (..., 3) metres, model space.

    Returns:
        (..., 3) metres, camera space: ``diag(1, -1, -1) @ p``.
    """
    if points.ndim < 1 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {tuple(points.shape)}")
    # An elementwise sign flip is the same rotation, without a matmul or a host-to-device copy of a
    # constant (which CUDA-graph capture, used by the real-time tracker, does not allow).
    x, y, z = points.unbind(-1)
    return torch.stack([x, -y, -z], dim=-1)


def project(points_cam: Tensor, intrinsics: Tensor) -> Tensor:
    """Pinhole projection to continuous pixel coordinates.

    Args:
        points_cam: (B, N, 3) camera-space points, z > 0 in front of the camera.
        intrinsics: (B, 4) or (1, 4) as (fx, fy, cx, cy) in pixels.

    Returns:
        (B, N, 2) pixel coordinates (u, v) = (fx x / z + cx, fy y / z + cy).
    """
    _check_points(points_cam, intrinsics)
    fx, fy, cx, cy = (intrinsics[:, k, None] for k in range(4))  # each (B, 1)
    x, y, z = points_cam.unbind(-1)
    return torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)


def clip_space(points_cam: Tensor, intrinsics: Tensor, resolution: tuple[int, int], near: float = 0.01,
               far: float = 100.0) -> Tensor:
    """Homogeneous clip coordinates for ``rasterize`` (OpenGL-style depth, nvdiffrast pixel layout).

    With (u, v) = ``project(points_cam, intrinsics)``: x_ndc = 2u/W - 1, y_ndc = 2v/H - 1, w = z and
    clip = (x_ndc z, y_ndc z, a z + b, z), a = (far + near)/(far - near), b = -2 far near/(far - near),
    so z/w runs from -1 at ``near`` to +1 at ``far``. Written without a division, so points behind
    the camera stay finite (the rasterizer culls them).

    Args:
        points_cam: (B, N, 3) camera-space points in metres.
        intrinsics: (B, 4) or (1, 4) as (fx, fy, cx, cy) in pixels.
        resolution: (H, W) of the image the intrinsics belong to.
        near, far: clipping depths in metres, 0 < near < far.

    Returns:
        (B, N, 4) clip-space positions.
    """
    _check_points(points_cam, intrinsics)
    height, width = _check_resolution(resolution)
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    fx, fy, cx, cy = (intrinsics[:, k, None] for k in range(4))  # each (B, 1)
    x, y, z = points_cam.unbind(-1)
    a = (far + near) / (far - near)
    b = -2.0 * far * near / (far - near)
    clip_x = (2.0 / width) * fx * x + (2.0 * cx / width - 1.0) * z
    clip_y = (2.0 / height) * fy * y + (2.0 * cy / height - 1.0) * z
    return torch.stack([clip_x, clip_y, a * z + b, z], dim=-1)


def _check_points(points_cam: Tensor, intrinsics: Tensor) -> None:
    if points_cam.ndim != 3 or points_cam.shape[-1] != 3:
        raise ValueError(f"points_cam must have shape (B, N, 3), got {tuple(points_cam.shape)}")
    if intrinsics.ndim != 2 or intrinsics.shape[-1] != 4 or intrinsics.shape[0] not in (1, points_cam.shape[0]):
        raise ValueError(f"intrinsics must have shape (B, 4) or (1, 4) with B={points_cam.shape[0]}, "
                         f"got {tuple(intrinsics.shape)}")


def _check_resolution(resolution: tuple[int, int]) -> tuple[int, int]:
    if len(resolution) != 2 or not all(int(r) == r and r > 0 for r in resolution):
        raise ValueError(f"resolution must be (H, W) with positive integers, got {resolution!r}")
    return int(resolution[0]), int(resolution[1])
