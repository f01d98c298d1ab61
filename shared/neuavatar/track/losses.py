"""The tracker's energy terms. Each returns a scalar tensor; weights are applied by the caller."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["landmark_error", "landmark_loss", "acceleration", "velocity", "masked_l1", "silhouette_iou"]


def landmark_error(projected: Tensor, detected: Tensor, pixel_scale: float) -> Tensor:
    """(B, L) distance between projected and detected landmarks, in pixels at the reference size.

    Args:
        projected, detected: (B, L, 2) image points.
        pixel_scale: reference size over the image's size (512 / S reports errors at 512x512).
    """
    return torch.linalg.norm(projected - detected, dim=-1) * pixel_scale


def landmark_loss(error: Tensor, valid: Tensor, weights: Tensor, delta: float = 2.0) -> Tensor:
    """Robust (pseudo-Huber, ``delta`` pixels) mean landmark error over valid frames.

    Args:
        error: (B, L) pixels. valid: (B,) bool. weights: (L,) per-landmark weights.
    """
    robust = delta * delta * (torch.sqrt(1 + (error / delta) ** 2) - 1)
    per_frame = (robust * weights).sum(-1) / weights.sum()
    v = valid.float()
    return (per_frame * v).sum() / v.sum().clamp_min(1)


def velocity(x: Tensor) -> Tensor:
    """Mean squared first difference over frames of (T, ...) values."""
    return (x[1:] - x[:-1]).pow(2).mean() if len(x) > 1 else x.sum() * 0


def acceleration(x: Tensor) -> Tensor:
    """Mean squared second difference over frames of (T, ...) values."""
    return (x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).mean() if len(x) > 2 else x.sum() * 0


def masked_l1(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean |a - b| over the pixels of ``mask``; a, b (B, H, W, C), mask (B, H, W, 1) in [0, 1]."""
    return ((a - b).abs() * mask).sum() / (mask.sum() * a.shape[-1]).clamp_min(1)


def silhouette_iou(predicted: Tensor, target: Tensor, ignore: Tensor) -> Tensor:
    """(B,) intersection over union of two masks (B, H, W) bool, not counting ``ignore`` pixels."""
    keep = ~ignore
    inter = (predicted & target & keep).flatten(1).sum(1).float()
    union = ((predicted | target) & keep).flatten(1).sum(1).float()
    return inter / union.clamp_min(1)
