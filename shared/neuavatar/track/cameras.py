"""The dataset's cameras: one physical pinhole camera, seen through a moving square crop.

The source video comes from one camera with focal length f (source pixels) and its principal point
at the frame's centre. Frame t's crop is the box (x0_t, y0_t, side) resampled to S x S pixels, so in
crop pixels its intrinsics are f / k and ((W/2, H/2) - (x0_t, y0_t)) / k with k = side / S. Only f is
unknown (fitted), as log(f / max(W, H)).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CropCameras"]


class CropCameras:
    """Per-frame intrinsics (fx, fy, cx, cy) in the pixels of an image of any size."""

    def __init__(self, crop_to_source: Tensor, source_size: tuple[int, int], crop_size: int):
        """
        Args:
            crop_to_source: (T, 2, 3) affine from crop to source pixels (the dataset's).
            source_size: (W, H) of the source frames.
            crop_size: S, the side of the dataset's crops.
        """
        if crop_to_source.ndim != 3 or crop_to_source.shape[1:] != (2, 3):
            raise ValueError(f"crop_to_source must be (T, 2, 3), got {tuple(crop_to_source.shape)}")
        self.scale = crop_to_source[:, 0, 0].float()  # (T,) source pixels per crop pixel
        self.origin = crop_to_source[:, :, 2].float()  # (T, 2)
        self.centre = torch.tensor([source_size[0] / 2, source_size[1] / 2], device=crop_to_source.device)
        self.reference = float(max(source_size))
        self.crop_size = crop_size

    def to(self, device: torch.device | str) -> CropCameras:
        out = CropCameras.__new__(CropCameras)
        out.scale, out.origin, out.centre = self.scale.to(device), self.origin.to(device), self.centre.to(device)
        out.reference, out.crop_size = self.reference, self.crop_size
        return out

    def focal_source(self, log_focal: Tensor) -> Tensor:
        """Focal length in source pixels from the fitted ``log_focal`` (a scalar tensor)."""
        return torch.exp(log_focal) * self.reference

    def intrinsics(self, log_focal: Tensor, frames: Tensor, size: int) -> Tensor:
        """(B, 4) intrinsics of ``frames`` (B,) for images of ``size`` x ``size`` pixels (the crop resized)."""
        k = self.scale[frames] * self.crop_size / size  # source pixels per image pixel
        f = self.focal_source(log_focal) / k
        c = (self.centre - self.origin[frames]) / k[:, None]
        return torch.stack([f, f, c[:, 0], c[:, 1]], -1)
