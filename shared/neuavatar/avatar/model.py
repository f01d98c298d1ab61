"""The avatar: a head model refined by learned offsets, dressed in Gaussians bound to its triangles.

    head(θ) ──offsets(ψ, jaw, neck, eyes)──> mesh (B, V, 3) ──bind──> Gaussians ──splat──> image ──cut──> image

θ are the head model's parameters of a frame (from the tracker, or from a driver); identity β is
the person's and fixed. Everything after the head model is learned by the trainer. The learned
parts see θ's condition code clamped to the range the training frames spanned (``set_code_range``).
The image ends at a smooth cut across the neck (``neuavatar.avatar.cut``), as the training targets do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from neuavatar.avatar.cut import NeckCut, blend_cut, cut_mask
from neuavatar.avatar.gaussians import BoundGaussians, WorldGaussians
from neuavatar.avatar.mesh import (
    POSE_CODE_SIZE,
    MeshOffsets,
    condition_code,
    condition_code_size,
    expression_code_size,
    expression_region,
    head_turn,
    posed_with_offsets,
)
from neuavatar.avatar.mouth import CAVITY_COLOUR, MouthCavity
from neuavatar.head.model import HeadModel, HeadParams
from neuavatar.render import antialias, clip_space, model_to_camera, rasterize
from neuavatar.render.gaussians import rasterize_gaussians

__all__ = ["Avatar", "AvatarImages", "mesh_coverage", "splat"]


@dataclass
class AvatarImages:
    """One render: colour (B, H, W, 3) over the background, alpha (B, H, W, 1), the mesh (B, V, 3)
    in model space, its offsets (B, V, 3), and the Gaussians as placed (camera space)."""

    colour: Tensor
    alpha: Tensor
    vertices: Tensor
    offsets: Tensor
    gaussians: WorldGaussians


class Avatar(nn.Module):
    """A person's animatable head.

    Args:
        head: the head model (its buffers are not trained).
        shape: (S,) the person's identity coefficients (from tracking).
        gaussians: the Gaussians bound to ``head``'s triangles.
        offset_rank: rank of the conditioned vertex offsets.
    """

    def __init__(self, head: HeadModel, shape: Tensor, gaussians: BoundGaussians, offset_rank: int):
        super().__init__()
        self.head = head.requires_grad_(False)
        self.register_buffer("shape", shape.reshape(-1).float())
        # the template with this person's identity applied, computed once (the identity never changes)
        self.register_buffer("identity", head.identity_template(self.shape.to(head.template.device)), persistent=False)
        self.offsets = MeshOffsets(expression_region(head), expression_code_size(head), POSE_CODE_SIZE, offset_rank)
        self.gaussians = gaussians
        self.cut = NeckCut.from_head(head.template, head.faces)  # fixed by the head model: not saved
        # the mouth's cavity, where the Gaussians cover it (avatars trained before it existed have none)
        cavity = MouthCavity(head)
        with_cavity = len(gaussians) and int(gaussians.parent.max()) + 1 == len(head.faces) + len(cavity.faces)
        self.mouth = cavity if with_cavity else None
        faces = torch.cat([head.faces, cavity.faces]) if with_cavity else head.faces
        self.register_buffer("faces", faces, persistent=False)  # (F', 3) the triangles the Gaussians are bound to
        # the condition codes the training frames spanned (set_code_range); unbounded until then
        code_size = condition_code_size(head)
        self.register_buffer("code_low", torch.full((code_size,), -torch.inf, device=shape.device))
        self.register_buffer("code_high", torch.full((code_size,), torch.inf, device=shape.device))

    @classmethod
    def create(cls, head: HeadModel, shape: Tensor, *, gaussians_per_triangle: int, offset_rank: int,
               colour_rank: int, albedo: Tensor | None = None, seed: int = 0) -> Avatar:
        """A fresh avatar: zero offsets, Gaussians spread over the person's rest mesh and coloured
        from ``albedo`` (Ht, Wt, 3) in [0, 1] (the tracker's texture) where given."""
        device = head.template.device
        params = head.zero_params(1)
        params.shape = shape.reshape(1, -1).to(device)
        rest = head(params).vertices
        cavity = MouthCavity(head)
        forward = torch.tensor([[0.0, 0.0, 1.0]], device=device)  # the head at rest faces +z
        surface = torch.cat([rest, cavity.vertices(rest, forward)], 1)[0]
        generator = torch.Generator().manual_seed(seed)
        colours = torch.full((len(head.faces), 3), 0.5, device=device)
        if albedo is not None:
            # the texture at each triangle's centre uv (good enough to start; training refines it)
            uv = head.uvs[head.face_uvs].mean(1)  # (F, 2)
            h, w = albedo.shape[:2]
            x = (uv[:, 0] * w).long().clamp(0, w - 1)  # nvdiffrast's convention: v runs down the rows
            y = (uv[:, 1] * h).long().clamp(0, h - 1)
            colours = albedo.to(device)[y, x]
        colours = torch.cat([colours, torch.tensor(CAVITY_COLOUR, device=device).expand(len(cavity.faces), 3)])
        code_size = condition_code_size(head)
        gaussians = BoundGaussians.on_surface(surface, torch.cat([head.faces, cavity.faces]), gaussians_per_triangle,
                                              code_size, colour_rank, generator=generator,
                                              colours=colours[:, None].expand(-1, gaussians_per_triangle, -1))
        with torch.no_grad():  # the cavity's Gaussians start smaller: they must not show through the lips
            gaussians.log_scale[len(head.faces) * gaussians_per_triangle:] += math.log(0.5)
        return cls(head, shape.to(device), gaussians, offset_rank).to(device)

    @classmethod
    def from_state(cls, head: HeadModel, state: dict[str, Tensor], *, offset_rank: int, colour_rank: int) -> Avatar:
        """An avatar with the weights ``state`` (from :meth:`state_dict`), on ``head``'s device."""
        code_size = condition_code_size(head)
        gaussians = BoundGaussians(state["gaussians.parent"], code_size, colour_rank)
        avatar = cls(head, state["shape"], gaussians, offset_rank).to(head.template.device)
        avatar.load_state_dict(state)
        return avatar

    def state_dict(self, *args, **kwargs):
        """The learned weights and the identity; not the head model's own arrays (it is rebuilt on load)."""
        state = super().state_dict(*args, **kwargs)
        return type(state)((k, v) for k, v in state.items() if not k.startswith(("head.", "cut.", "mouth.")))

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        # avatars trained before the code range existed keep it unbounded
        derived = {"head": self.head, "cut": self.cut, "mouth": self.mouth}  # rebuilt from the head model
        full = {**{f"{name}.{k}": v for name, part in derived.items() if part is not None
                   for k, v in part.state_dict().items()},
                "code_low": self.code_low, "code_high": self.code_high, **state}
        result = super().load_state_dict(full, strict=strict, assign=assign)
        self.identity = self.head.identity_template(self.shape.to(self.head.template.device))
        return result

    @torch.no_grad()
    def set_code_range(self, params: HeadParams) -> None:
        """Bound the condition codes that the learned offsets and colour corrections see to the
        range of ``params`` (B), the training frames': beyond it their linear maps would only
        extrapolate (speckled, misshapen faces on a driver's wider grimaces and turns)."""
        code = condition_code(self.with_identity(params))
        self.code_low.copy_(code.min(0).values)
        self.code_high.copy_(code.max(0).values)

    def with_identity(self, params: HeadParams) -> HeadParams:
        """``params`` with the avatar's own identity (a driver's identity never leaks in)."""
        return HeadParams(**{k: getattr(params, k) for k in ("expression", "jaw", "neck", "eyes", "rotation",
                                                             "translation")}, shape=self.shape.expand(params.batch_size, -1))

    def mesh(self, params: HeadParams) -> tuple[Tensor, Tensor]:
        """(B, V, 3) the refined mesh in model space, and its (B, V, 3) offsets."""
        vertices, offsets, _ = posed_with_offsets(self.head, self.with_identity(params), self.offsets, self.identity,
                                                  (self.code_low, self.code_high))
        return vertices, offsets

    def ring(self, vertices: Tensor, offsets: Tensor, turn: Tensor) -> Tensor:
        """(B, K, 3) the neck cut's ring in model space on the head model's own posed mesh: the refined
        mesh (B, V, 3) less its offsets (B, V, 3), turned by ``turn`` (B, 3, 3) (:func:`head_turn`).
        The same ring the training targets were cut with; worked out on the ring's points alone."""
        return self.cut.ring(vertices) - self.cut.ring(offsets) @ turn.transpose(1, 2)

    def surface(self, vertices: Tensor, turn: Tensor) -> Tensor:
        """(B, V', 3) what the Gaussians are bound to (triangles ``faces``): the refined mesh
        (B, V, 3) of a head turned by ``turn`` (B, 3, 3), and the mouth's cavity behind its lips."""
        if self.mouth is None:
            return vertices
        return torch.cat([vertices, self.mouth.vertices(vertices, turn[:, :, 2])], 1)

    def place(self, params: HeadParams, view: Tensor | None = None) -> tuple[WorldGaussians, Tensor, Tensor]:
        """The Gaussians (camera space) for head parameters ``params`` (B), the refined mesh (B, V, 3)
        in model space and its offsets (B, V, 3): everything before the rasterizer.
        ``view`` (B, 3, 3) turns the head about its centre, as a camera orbiting it would see it."""
        vertices, offsets, code = posed_with_offsets(self.head, self.with_identity(params), self.offsets, self.identity,
                                                     (self.code_low, self.code_high))
        turn = head_turn(params)
        ring, surface = self.ring(vertices, offsets, turn), self.surface(vertices, turn)
        if view is not None:
            centre = vertices.mean(1, keepdim=True)
            surface = (surface - centre) @ view.transpose(1, 2) + centre
            ring = (ring - centre) @ view.transpose(1, 2) + centre
        placed = self.gaussians.place(model_to_camera(surface), self.faces, code)
        placed.ring = model_to_camera(ring)
        return placed, surface[:, : vertices.shape[1]], offsets

    def forward(self, params: HeadParams, intrinsics: Tensor, size: int, background: Tensor | None = None,
                backend: str = "auto", view: Tensor | None = None) -> AvatarImages:
        """Render frames with head parameters ``params`` (B) through cameras ``intrinsics`` (B, 4)
        (fx, fy, cx, cy in pixels of a ``size`` x ``size`` image), over ``background`` (3,);
        ``view`` as in :meth:`place`."""
        placed, vertices, offsets = self.place(params, view)
        colour, alpha = splat(placed, intrinsics, size, background, backend)
        return AvatarImages(colour=colour, alpha=alpha, vertices=vertices, offsets=offsets, gaussians=placed)


def splat(placed: WorldGaussians, intrinsics: Tensor, size: int, background: Tensor | None = None,
          backend: str = "auto", cut: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(B, S, S, 3) colour and (B, S, S, 1) alpha of Gaussians placed in camera space, cut at their
    neck ring where they have one (``cut``: its (B, S, S, 1) mask, when already made)."""
    colour, alpha = rasterize_gaussians(placed.means, placed.quats, placed.scales, placed.opacities, placed.colours,
                                        intrinsics, size, size, background=background, backend=backend)
    if cut is None and placed.ring is None:
        return colour, alpha
    # the cut is where the avatar ends, nothing to learn: no gradient through it (its backward
    # scatters every pixel's gradient into 64 bins: four times its forward's cost on the CPU)
    cut = cut_mask(placed.ring.detach(), intrinsics, size) if cut is None else cut
    return blend_cut(colour, alpha, cut, background)


def mesh_coverage(vertices: Tensor, faces: Tensor, intrinsics: Tensor, size: int, backend: str = "auto") -> Tensor:
    """(B, H, W, 1) antialiased coverage of the mesh (B, V, 3), model space: differentiable at the
    silhouette, for the geometry stage."""
    clip = clip_space(model_to_camera(vertices), intrinsics, (size, size))
    faces = faces.int().contiguous()
    rast = rasterize(clip, faces, (size, size), backend=backend)
    covered = (rast[..., 3:] > 0).float()
    return antialias(covered.contiguous(), rast, clip, faces)
