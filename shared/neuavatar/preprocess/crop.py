"""A steady square crop around the head, and its mapping back to the source frame.

Coordinates are continuous pixel coordinates: the centre of pixel (row i, column j) is at
(x, y) = (j + 0.5, i + 0.5). A crop is a square box (x0, y0, side) in source pixels, resampled to
``size`` x ``size``; crop point (u, v) maps to source point (x0 + u * side / size, y0 + v * side / size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["CropTrack", "plan_crops", "crop_to_source_matrix", "source_to_crop_matrix"]


@dataclass
class CropTrack:
    """Per-frame crop boxes. ``side`` is the same for every frame, so focal length in crop pixels is too."""

    origins: np.ndarray  # (T, 2) x0, y0 of each box, smoothed
    side: float  # box side in source pixels
    raw_centres: np.ndarray  # (T, 2) centre implied by each frame's detection, NaN when missing
    face_side: float  # median detected face-box side in source pixels
    notes: list[str] = field(default_factory=list)

    @property
    def centres(self) -> np.ndarray:
        """(T, 2) box centres in source pixels."""
        return self.origins + self.side / 2


def plan_crops(boxes: np.ndarray, frame_size: tuple[int, int], fps: float, *, crop_scale: float, crop_shift: float,
               mode: Literal["track", "fixed"], smooth_seconds: float) -> CropTrack:
    """Square crop boxes for every frame from the subject's face boxes.

    Args:
        boxes: (T, 4) face boxes x0, y0, x1, y1 in source pixels, NaN where the face was not found
            (at least one row must be finite).
        frame_size: (width, height) of the source frames.
        fps: frame rate, to turn ``smooth_seconds`` into frames.
        crop_scale: crop side as a multiple of the median face-box side.
        crop_shift: upward shift of the crop centre, as a fraction of the face-box side.
        mode: ``track`` follows the head (smoothed); ``fixed`` uses one box for all frames.
        smooth_seconds: standard deviation of the temporal Gaussian, in seconds.
    """
    width, height = frame_size
    found = ~np.isnan(boxes[:, 0])
    if not found.any():
        raise ValueError("plan_crops needs at least one frame with a face box")
    sides = np.sqrt((boxes[found, 2] - boxes[found, 0]) * (boxes[found, 3] - boxes[found, 1]))
    face_side = float(np.median(sides))
    raw = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - crop_shift * face_side], -1)
    centres = _fill_missing(raw, found)
    notes: list[str] = []

    side = crop_scale * face_side
    if mode == "track":
        sigma = max(smooth_seconds * fps, 0.0)
        if sigma > 0:
            centres = gaussian_filter1d(centres, sigma, axis=0, mode="nearest")
    else:
        lo, hi = centres.min(0), centres.max(0)
        side = side + float((hi - lo).max())
        centres = np.broadcast_to((lo + hi) / 2, centres.shape).copy()

    limit = float(min(width, height))
    if side > limit:
        notes.append(
            f"the video frames the head tightly: the crop is limited to the frame ({limit:.0f} px) instead of "
            f"{side:.0f} px, so some hair or neck may be cut"
        )
        side = limit
    half = side / 2
    centres[:, 0] = np.clip(centres[:, 0], half, width - half)
    centres[:, 1] = np.clip(centres[:, 1], half, height - half)
    return CropTrack(origins=centres - half, side=side, raw_centres=raw, face_side=face_side, notes=notes)


def _fill_missing(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where ``found`` is False (nearest value at the ends)."""
    t = np.arange(len(values))
    out = values.copy()
    for c in range(values.shape[1]):
        out[:, c] = np.interp(t, t[found], values[found, c])
    return out


def crop_to_source_matrix(origin: np.ndarray, side: float, size: int) -> np.ndarray:
    """(2, 3) affine taking crop coordinates (u, v, 1) to source coordinates (x, y)."""
    k = side / size
    return np.array([[k, 0.0, origin[0]], [0.0, k, origin[1]]], np.float64)


def source_to_crop_matrix(origin: np.ndarray, side: float, size: int) -> np.ndarray:
    """(2, 3) affine taking source coordinates (x, y, 1) to crop coordinates (u, v)."""
    k = size / side
    return np.array([[k, 0.0, -origin[0] * k], [0.0, k, -origin[1] * k]], np.float64)
