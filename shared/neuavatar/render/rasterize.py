"""Differentiable mesh rendering in four verbs, with nvdiffrast's semantics and layouts.

    rast = rasterize(clip, faces, (H, W))            # (B, H, W, 4): u, v, z/w, triangle_id + 1
    feat = interpolate(attributes, rast, faces)       # (B, H, W, C) per-pixel vertex attributes
    rgb = texture(image, feat[..., :2])               # (B, H, W, C) bilinear texture lookup
    rgb = antialias(rgb, rast, clip, faces)           # silhouette-aware blend, gradients to clip

Each op runs on nvdiffrast when its tensors are on CUDA and nvdiffrast is installed
(``backend="auto"``), else on the pure-torch twin in ``_torch_impl`` (any device, any float
dtype; nvdiffrast computes in float32). Both give the same pixels (they snap vertices to the same
1/16 pixel grid and share the fill rule; depth near-ties and float rounding aside) and the same
gradients: (u, v) carry gradients to ``clip`` through the rasterizer's backward; z/w and the ids
do not. One difference: the torch twin skips a triangle with a vertex outside the near/far range
(including behind the camera), where nvdiffrast clips it.

Row 0 of every image is the top row when ``clip`` comes from ``camera.clip_space``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal, assert_never, get_args

import torch
from torch import Tensor

from neuavatar.render import _nvdiffrast, _torch_impl
from neuavatar.render.camera import _check_resolution

__all__ = ["Backend", "Fragments", "rasterize", "interpolate", "texture", "antialias"]

_MAX_FACES = 1 << 24

Backend = Literal["auto", "torch", "nvdiffrast"]
"""``auto``: nvdiffrast for CUDA tensors when it imports, else torch. The others force one."""


@dataclass(frozen=True)
class Fragments:
    """The rasterizer output unpacked for shading (cf. pytorch3d's ``Fragments``)."""

    triangle_id: Tensor  # (B, H, W) int64 face index, -1 on background
    bary: Tensor  # (B, H, W, 3) weights of the face's corners 0, 1, 2; zeros on background
    depth: Tensor  # (B, H, W) z/w in [-1, 1] (smaller is nearer); 0 on background

    @classmethod
    def from_rast(cls, rast: Tensor) -> Fragments:
        """Unpack ``rasterize``'s (B, H, W, 4) output; ``bary`` keeps its gradients."""
        _check_rast(rast)
        covered = rast[..., 3:] > 0
        u, v = rast[..., 0:1], rast[..., 1:2]
        bary = torch.cat([u, v, torch.where(covered, 1.0 - u - v, 0.0)], dim=-1)
        return cls(rast[..., 3].detach().long() - 1, bary, rast[..., 2].detach())

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a triangle covers the pixel centre."""
        return self.triangle_id >= 0


def rasterize(clip: Tensor,  # (B, V, 4)
              faces: Tensor,  # (F, 3)
              resolution: tuple[int, int],
              backend: Backend = "auto") -> Tensor:  # (B, H, W, 4)
    """Rasterize triangles at pixel centres, nearest triangle wins (as ``nvdiffrast.torch.rasterize``).

    Args:
        clip: (B, V, 4) float clip-space vertex positions, e.g. from ``camera.clip_space``.
        faces: (F, 3) integer vertex indices, F > 0; both windings render.
        resolution: (H, W) output size in pixels.
        backend: see ``Backend``.

    Returns:
        (B, H, W, 4) float, per pixel (u, v, z/w, triangle_id + 1). u and v are the
        perspective-correct barycentric weights of the face's corner 0 and corner 1 (corner 2 has
        1 - u - v), clamped to [0, 1]; z/w is the depth in [-1, 1]; the last channel is 0 on
        background. u and v are differentiable w.r.t. ``clip``.

    Raises:
        ValueError: on a bad shape, dtype, resolution or backend.
    """
    _check_clip(clip)
    _check_faces(faces)
    height, width = _check_resolution(resolution)
    faces = faces.to(clip.device)
    if _use_nvdiffrast(backend, clip):
        return _nvdiffrast.rasterize(clip, faces, (height, width))
    return _torch_impl._rasterize(clip, faces, (height, width))


def interpolate(attributes: Tensor,  # (V, C) or (B, V, C)
                rast: Tensor,  # (B, H, W, 4)
                faces: Tensor,  # (F, 3)
                backend: Backend = "auto") -> Tensor:  # (B, H, W, C)
    """Interpolate vertex attributes at every covered pixel (as ``nvdiffrast.torch.interpolate``).

    Because ``rast``'s (u, v) are perspective-correct, so is the result: a linear function of the
    3D position interpolates to its value at the pixel's 3D point.

    Args:
        attributes: (V, C) shared by the batch, or (B, V, C) / (1, V, C) float per-vertex values.
        rast: (B, H, W, 4) output of ``rasterize``.
        faces: (F, 3) the faces given to ``rasterize``.
        backend: see ``Backend``.

    Returns:
        (B, H, W, C) u a0 + v a1 + (1 - u - v) a2 of the covering face's corners; 0 on background.
        Differentiable w.r.t. ``attributes`` and, through u and v, ``rast`` (hence ``clip``).

    Raises:
        ValueError: on a bad shape or backend.
    """
    _check_rast(rast)
    _check_faces(faces)
    if attributes.ndim not in (2, 3) or not attributes.is_floating_point():
        raise ValueError(f"attributes must be a float tensor of shape (V, C) or (B, V, C), "
                         f"got {tuple(attributes.shape)} {attributes.dtype}")
    if attributes.ndim == 3 and attributes.shape[0] not in (1, rast.shape[0]):
        raise ValueError(f"attributes batch must be 1 or B={rast.shape[0]}, got shape {tuple(attributes.shape)}")
    _check_devices(attributes=attributes, rast=rast)
    faces = faces.to(rast.device)
    if _use_nvdiffrast(backend, attributes, rast):
        return _nvdiffrast.interpolate(attributes, rast, faces)
    return _torch_impl._interpolate(attributes, rast, faces)


def texture(image: Tensor,  # (B, Ht, Wt, C)
            uv: Tensor,  # (B, H, W, 2)
            filter: Literal["linear", "nearest"] = "linear",
            boundary: Literal["wrap", "clamp"] = "wrap",
            backend: Backend = "auto") -> Tensor:  # (B, H, W, C)
    """Sample a texture (as ``nvdiffrast.torch.texture`` without mipmaps).

    Texture coordinates follow nvdiffrast: u runs along the texture's width, v along its height,
    and uv (0, 0) is the outer corner of texel [0, 0] (the first row of the tensor, no flip);
    texel [i, j]'s centre is at uv ((j + 0.5) / Wt, (i + 0.5) / Ht).

    Args:
        image: (B, Ht, Wt, C) or (1, Ht, Wt, C) float texture.
        uv: (B, H, W, 2) texture coordinates.
        filter: ``linear`` (bilinear between the four nearest texel centres) or ``nearest``.
        boundary: ``wrap`` (repeat: the fractional part of uv) or ``clamp`` (to the edge texel centres).
        backend: see ``Backend``.

    Returns:
        (B, H, W, C) samples. Differentiable w.r.t. ``image``, and w.r.t. ``uv`` with ``linear``.

    Raises:
        ValueError: on a bad shape, filter, boundary or backend.
    """
    if image.ndim != 4 or not image.is_floating_point():
        raise ValueError(f"image must be a float tensor of shape (B, Ht, Wt, C), got {tuple(image.shape)} {image.dtype}")
    if uv.ndim != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape (B, H, W, 2), got {tuple(uv.shape)}")
    if image.shape[0] not in (1, uv.shape[0]):
        raise ValueError(f"image batch must be 1 or B={uv.shape[0]}, got image shape {tuple(image.shape)}")
    if filter not in ("linear", "nearest"):
        raise ValueError(f"filter must be 'linear' or 'nearest', got {filter!r}")
    if boundary not in ("wrap", "clamp"):
        raise ValueError(f"boundary must be 'wrap' or 'clamp', got {boundary!r}")
    _check_devices(image=image, uv=uv)
    if _use_nvdiffrast(backend, image, uv):
        return _nvdiffrast.texture(image, uv, filter, boundary)
    return _torch_impl._texture(image, uv, filter, boundary)


def antialias(color: Tensor,  # (B, H, W, C)
              rast: Tensor,  # (B, H, W, 4)
              clip: Tensor,  # (B, V, 4)
              faces: Tensor,  # (F, 3)
              backend: Backend = "auto") -> Tensor:  # (B, H, W, C)
    """Analytic antialiasing of silhouette edges (as ``nvdiffrast.torch.antialias``).

    Laine et al. 2020, "Modular Primitives for High-Performance Differentiable Rendering", sec. 3.4:
    for every horizontal or vertical pair of neighbouring pixels that see different faces (or a
    face and background), take the nearer face; if one of its silhouette edges (an edge whose
    neighbouring face folds back, or that has no neighbour) crosses the segment between the two
    pixel centres, blend the two colours by where it crosses. The crossing point moves with the
    edge's vertices, so ``clip`` gets the gradients that make silhouettes trackable.

    Args:
        color: (B, H, W, C) float shaded image.
        rast: (B, H, W, 4) output of ``rasterize`` for the same ``clip`` and ``faces``.
        clip: (B, V, 4) clip-space positions given to ``rasterize``.
        faces: (F, 3) faces given to ``rasterize``.
        backend: see ``Backend``.

    Returns:
        (B, H, W, C) antialiased colour, differentiable w.r.t. ``color`` and ``clip``.

    Raises:
        ValueError: on a bad shape or backend.
    """
    _check_rast(rast)
    _check_clip(clip)
    _check_faces(faces)
    if color.ndim != 4 or color.shape[:3] != rast.shape[:3] or not color.is_floating_point():
        raise ValueError(f"color must be a float tensor of shape (B, H, W, C) with (B, H, W) = "
                         f"{tuple(rast.shape[:3])} from rast, got {tuple(color.shape)} {color.dtype}")
    if clip.shape[0] != rast.shape[0]:
        raise ValueError(f"clip batch {clip.shape[0]} differs from rast batch {rast.shape[0]} "
                         f"(clip shape {tuple(clip.shape)}, rast shape {tuple(rast.shape)})")
    _check_devices(color=color, rast=rast, clip=clip)
    faces = faces.to(clip.device)
    if _use_nvdiffrast(backend, color, rast, clip):
        return _nvdiffrast.antialias(color, rast, clip, faces)
    return _torch_impl._antialias(color, rast, clip, faces)


# ------------------------------------------------------------------------------------------------


@cache
def _nvdiffrast_available() -> bool:
    return _nvdiffrast.available()


def _use_nvdiffrast(backend: Backend, *tensors: Tensor) -> bool:
    if backend not in get_args(Backend):
        raise ValueError(f"backend must be one of {get_args(Backend)}, got {backend!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "torch":
        return False
    if backend == "nvdiffrast":
        if not on_cuda:
            raise ValueError(f"backend='nvdiffrast' needs CUDA tensors, got devices {[str(t.device) for t in tensors]}")
        return True
    if backend == "auto":
        return on_cuda and _nvdiffrast_available()
    assert_never(backend)


def _check_clip(clip: Tensor) -> None:
    if clip.ndim != 3 or clip.shape[-1] != 4 or not clip.is_floating_point():
        raise ValueError(f"clip must be a float tensor of shape (B, V, 4), got {tuple(clip.shape)} {clip.dtype}")


def _check_faces(faces: Tensor) -> None:
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.shape[0] == 0 or faces.is_floating_point():
        raise ValueError(f"faces must be an integer tensor of shape (F, 3) with F > 0, "
                         f"got {tuple(faces.shape)} {faces.dtype}")
    if faces.shape[0] >= _MAX_FACES:
        raise ValueError(f"faces: at most {_MAX_FACES - 1} triangles (ids are exact float32 integers), "
                         f"got shape {tuple(faces.shape)}")


def _check_devices(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must share one device, got {', '.join(f'{n} on {d}' for n, d in devices.items())}")


def _check_rast(rast: Tensor) -> None:
    if rast.ndim != 4 or rast.shape[-1] != 4:
        raise ValueError(f"rast must have shape (B, H, W, 4) as rasterize returns, got {tuple(rast.shape)}")
