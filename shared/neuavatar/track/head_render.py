"""Render a posed head model into images: rasterize -> interpolate -> shade -> antialias."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neuavatar.head.model import HeadModel
from neuavatar.render import antialias, clip_space, interpolate, model_to_camera, rasterize, texture
from neuavatar.track.shading import sh_shading, vertex_normals

__all__ = ["HeadImages", "HeadRenderer"]


@dataclass(frozen=True)
class HeadImages:
    """Rendered images, all (B, H, W, C) with row 0 at the top."""

    color: Tensor  # (B, H, W, 3) albedo x shading, 0 off the head, antialiased
    mask: Tensor  # (B, H, W, 1) coverage of the head, antialiased (carries silhouette gradients)
    rast: Tensor  # (B, H, W, 4) the rasterizer's output (u, v, z/w, triangle id + 1)


class HeadRenderer:
    """Draws a :class:`HeadModel`'s mesh through per-frame pinhole cameras."""

    def __init__(self, model: HeadModel, backend: str = "auto"):
        self.model = model
        self.backend = backend
        self.faces = model.faces.int().contiguous()
        self.face_uvs = model.face_uvs.int().contiguous()

    def __call__(self, vertices: Tensor, intrinsics: Tensor, size: int, albedo: Tensor | None = None,
                 lighting: Tensor | None = None) -> HeadImages:
        """
        Args:
            vertices: (B, V, 3) posed vertices in model space.
            intrinsics: (B, 4) fx, fy, cx, cy in pixels of a ``size`` x ``size`` image.
            albedo: (1 or B, Ht, Wt, 3) texture over the model's uvs; grey when None.
            lighting: (B, 9, 3) spherical-harmonics lighting; plain white when None.
        """
        cam = model_to_camera(vertices)
        clip = clip_space(cam, intrinsics, (size, size))
        rast = rasterize(clip, self.faces, (size, size), backend=self.backend)
        covered = (rast[..., 3:] > 0).float()
        normals = torch.nn.functional.normalize(interpolate(vertex_normals(cam, self.model.faces), rast, self.faces),
                                                dim=-1, eps=1e-8)
        shade = sh_shading(normals, lighting) if lighting is not None else torch.ones_like(normals)
        if albedo is None:
            base = torch.full_like(normals, 0.7)
        else:
            uv = interpolate(self.model.uvs, rast, self.face_uvs)
            tex = albedo.expand(len(vertices), -1, -1, -1) if albedo.shape[0] == 1 else albedo
            base = texture(tex.contiguous(), uv.contiguous())
        color = base * shade * covered
        both = antialias(torch.cat([color, covered], -1).contiguous(), rast, clip, self.faces)
        return HeadImages(color=both[..., :3], mask=both[..., 3:], rast=rast)
