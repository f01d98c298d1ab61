"""Differentiable rendering: camera conventions, nvdiffrast's four verbs, and Gaussian splatting.

    clip = clip_space(model_to_camera(vertices), intrinsics, (H, W))
    rast = rasterize(clip, faces, (H, W))
    image = antialias(texture(tex, interpolate(uvs, rast, faces)), rast, clip, faces)

    colour, alpha = rasterize_gaussians(means, quats, scales, opacities, colors, intrinsics, W, H)

nvdiffrast and gsplat run the ops on CUDA when they are installed; pure-torch twins run them
anywhere else.
"""

from neuavatar.render.camera import MODEL_TO_CAMERA, clip_space, model_to_camera, project
from neuavatar.render.gaussians import GaussianBackend, rasterize_gaussians
from neuavatar.render.rasterize import Backend, Fragments, antialias, interpolate, rasterize, texture

__all__ = [
    "MODEL_TO_CAMERA",
    "model_to_camera",
    "project",
    "clip_space",
    "Backend",
    "Fragments",
    "rasterize",
    "interpolate",
    "texture",
    "antialias",
    "GaussianBackend",
    "rasterize_gaussians",
]
