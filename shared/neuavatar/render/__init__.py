"""Differentiable mesh rendering: camera conventions and nvdiffrast's four verbs.

    clip = clip_space(model_to_camera(vertices), intrinsics, (H, W))
    rast = rasterize(clip, faces, (H, W))
    image = antialias(texture(tex, interpolate(uvs, rast, faces)), rast, clip, faces)

nvdiffrast runs the ops on CUDA when it is installed; a pure-torch twin runs them anywhere else.
"""

from neuavatar.render.camera import MODEL_TO_CAMERA, clip_space, model_to_camera, project
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
]
