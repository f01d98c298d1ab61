"""The tracking file: what the tracker writes and the trainer and renderer read.

A tracking directory (documented in ``docs/tracking.md``)::

    tracking.json   format, version, head model, dataset, camera, metrics, resolved options
    tracking.npz    identity, focal length, and per-frame parameters, intrinsics and lighting
    albedo.png      the fitted albedo texture (the head model's uv layout)
    overlay.mp4     every frame with the fitted head drawn over it
    metrics.json    the figures below, and metrics.png plotting them per frame
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from neuavatar.errors import DatasetError
from neuavatar.head.model import HeadParams

__all__ = ["TRACKING_FORMAT", "TRACKING_VERSION", "META_FILE", "ARRAYS_FILE", "ALBEDO_FILE", "Tracking"]

TRACKING_FORMAT = "neuavatar.tracking"
TRACKING_VERSION = 1
META_FILE, ARRAYS_FILE, ALBEDO_FILE = "tracking.json", "tracking.npz", "albedo.png"
OVERLAY_FILE, METRICS_FILE, METRICS_PLOT = "overlay.mp4", "metrics.json", "metrics.png"

_PER_FRAME = ("expression", "jaw", "neck", "eyes", "rotation", "translation", "lighting", "intrinsics")


@dataclass
class Tracking:
    """A dataset's tracking: the head model's parameters for every frame, and its cameras.

    Arrays (T frames, S identity, E expression components):
        shape (S,); focal_source_px (); expression (T, E); jaw, neck, rotation, translation (T, 3);
        eyes (T, 2, 3); lighting (T, 9, 3); intrinsics (T, 4) fx, fy, cx, cy in the dataset's crop
        pixels; landmark_offsets (478, 3) metres; valid (T,) bool; landmark_error_px (T,) at 512x512;
        silhouette_iou (T,). See docs/tracking.md.
    """

    arrays: dict[str, np.ndarray]
    albedo: np.ndarray  # (Ht, Wt, 3) uint8
    meta: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return len(self.arrays["rotation"])

    def head_params(self, frames: np.ndarray | slice = slice(None), device: torch.device | str = "cpu") -> HeadParams:
        """The head parameters of ``frames``, batched, as tensors on ``device``."""
        a = {k: torch.from_numpy(np.ascontiguousarray(self.arrays[k][frames])).float().to(device)
             for k in ("expression", "jaw", "neck", "eyes", "rotation", "translation")}
        shape = torch.from_numpy(self.arrays["shape"]).float().to(device)
        return HeadParams(shape=shape.expand(len(a["rotation"]), -1), **a)

    def save(self, directory: Path) -> None:
        """Write tracking.json, tracking.npz and albedo.png into ``directory``."""
        directory = Path(directory)
        np.savez(directory / ARRAYS_FILE, **self.arrays)
        cv2.imwrite(str(directory / ALBEDO_FILE), self.albedo[..., ::-1])
        meta = {"format": TRACKING_FORMAT, "version": TRACKING_VERSION, **self.meta}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Tracking:
        """Read a tracking directory.

        Raises:
            DatasetError: not a tracking directory, incomplete, or of a version this code cannot read.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{directory} is not a NeuAvatar tracking (no {META_FILE}); run `neuavatar track` first")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path} is damaged: {e}") from None
        if meta.get("format") != TRACKING_FORMAT:
            raise DatasetError(f"{meta_path} is not a NeuAvatar tracking (format {meta.get('format')!r})")
        if meta.get("version") != TRACKING_VERSION:
            raise DatasetError(f"{directory} is tracking version {meta.get('version')}; this NeuAvatar reads version "
                               f"{TRACKING_VERSION}: track the dataset again")
        try:
            with np.load(directory / ARRAYS_FILE) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DatasetError(f"{directory / ARRAYS_FILE} is missing or damaged: {e}") from None
        missing = [k for k in ("shape", "focal_source_px", "valid", *_PER_FRAME) if k not in arrays]
        if missing:
            raise DatasetError(f"{directory / ARRAYS_FILE} lacks {', '.join(missing)}")
        albedo = cv2.imread(str(directory / ALBEDO_FILE), cv2.IMREAD_COLOR)
        if albedo is None:
            raise DatasetError(f"{directory / ALBEDO_FILE} is missing or damaged")
        return cls(arrays=arrays, albedo=albedo[..., ::-1].copy(), meta=meta)
