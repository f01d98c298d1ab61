"""The dataset: what the preprocess stage writes and the tracker and trainer read.

The layout is documented in ``docs/dataset.md``; this module is its one implementation. A dataset
is a directory::

    dataset.json        format, version, source, sizes, tool versions, resolved config, notes
    split.json          which frames train and which validate
    annotations.npz     per-frame landmarks, confidence, validity, crop mapping, times
    frames/000000.jpg   RGB crops (or .png)
    alpha/000000.png    soft foreground alpha, 8-bit
    masks/000000.png    semantic labels, 8-bit indices into ``LABELS``
    contact_sheet.png   a picture to check it at a glance
    crop_track.png      the crop centre over time, raw and smoothed
"""

from __future__ import annotations

import concurrent.futures as cf
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from neuavatar.errors import DatasetError
from neuavatar.landmarks import ibug68

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "LABELS", "Dataset", "frame_name", "make_split"]

DATASET_FORMAT = "neuavatar.dataset"
DATASET_VERSION = 1

META_FILE = "dataset.json"
SPLIT_FILE = "split.json"
ANNOTATIONS_FILE = "annotations.npz"
FRAMES_DIR, ALPHA_DIR, MASKS_DIR = "frames", "alpha", "masks"
CONTACT_SHEET = "contact_sheet.png"
LABELS: tuple[str, ...] = ("background", "face_skin", "hair", "eyes", "mouth_interior", "lips", "neck_torso")
"""Semantic label names; a pixel's value in a mask image is its index here."""
CROP_PLOT = "crop_track.png"


def frame_name(index: int, ext: str) -> str:
    """File name of frame ``index``: zero-padded to six digits, e.g. ``000042.jpg``."""
    return f"{index:06d}.{ext}"


def make_split(valid: np.ndarray, val_fraction: float, mode: str) -> dict[str, Any]:
    """Train and validation frame indices among the valid frames.

    ``tail`` holds out the last ``val_fraction`` of the valid frames (at least one when the fraction
    is positive); ``interleaved`` holds out every k-th valid frame, k = round(1 / val_fraction).
    """
    idx = np.flatnonzero(valid)
    n_val = int(round(len(idx) * val_fraction))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if mode == "tail":
        train, val = idx[: len(idx) - n_val], idx[len(idx) - n_val:]
    elif mode == "interleaved":
        k = max(2, int(round(1 / val_fraction))) if val_fraction > 0 else 0
        is_val = (np.arange(len(idx)) % k == k - 1) if k else np.zeros(len(idx), bool)
        train, val = idx[~is_val], idx[is_val]
    else:
        raise ValueError(f"split mode must be 'tail' or 'interleaved', got {mode!r}")
    return {"mode": mode, "val_fraction": val_fraction, "train": train.tolist(), "val": val.tolist()}


@dataclass(frozen=True)
class _Annotations:
    landmarks: np.ndarray  # (T, 478, 3) float32, crop pixels
    confidence: np.ndarray  # (T,) float32
    valid: np.ndarray  # (T,) bool
    crop_to_source: np.ndarray  # (T, 2, 3) float64
    times: np.ndarray  # (T,) float64 seconds
    source_index: np.ndarray  # (T,) int64


class Dataset:
    """Read access to a dataset directory.

    Raises:
        DatasetError: if ``root`` is not a dataset, is incomplete, or has another format version.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a NeuAvatar dataset (no {META_FILE}); run `neuavatar preprocess` first")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path} is damaged: {e}") from None
        if self.meta.get("format") != DATASET_FORMAT:
            raise DatasetError(f"{meta_path} is not a NeuAvatar dataset description (format {self.meta.get('format')!r})")
        if self.meta.get("version") != DATASET_VERSION:
            raise DatasetError(
                f"{self.root} is dataset version {self.meta.get('version')}, this NeuAvatar reads version "
                f"{DATASET_VERSION}; preprocess the video again"
            )
        for name in (SPLIT_FILE, ANNOTATIONS_FILE):
            if not (self.root / name).is_file():
                raise DatasetError(f"{self.root} is incomplete: {name} is missing")
        missing = [i for i in range(self.num_frames) if not self.frame_path(i).is_file()]
        if missing:
            raise DatasetError(f"{self.root} is incomplete: {len(missing)} frame images missing (first: {missing[0]})")

    def require_masks(self, purpose: str) -> None:
        """Raise DatasetError unless the dataset has person masks and labels (not landmarks only)."""
        if self.meta.get("config", {}).get("annotate", "full") != "full":
            raise DatasetError(f"{self.root} holds crops and landmarks only (preprocessed with --annotate landmarks, "
                               f"for a driving video); {purpose} needs masks too: preprocess the video again "
                               "without --annotate landmarks")

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def size(self) -> int:
        """Side of the square crops in pixels."""
        return int(self.meta["size"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def image_ext(self) -> str:
        return str(self.meta["image_format"])

    @cached_property
    def split(self) -> dict[str, list[int]]:
        return json.loads((self.root / SPLIT_FILE).read_text())

    @cached_property
    def _ann(self) -> _Annotations:
        with np.load(self.root / ANNOTATIONS_FILE) as z:
            return _Annotations(**{k: z[k] for k in _Annotations.__dataclass_fields__})

    @property
    def landmarks(self) -> np.ndarray:
        """(T, 478, 3) MediaPipe landmarks in crop pixels (x right, y down, z depth in x's units)."""
        return self._ann.landmarks

    @property
    def landmarks68(self) -> np.ndarray:
        """(T, 68, 3) the iBUG subset of :attr:`landmarks`."""
        return ibug68(self._ann.landmarks)

    @property
    def confidence(self) -> np.ndarray:
        """(T,) face-detection confidence of the subject, 0 where not detected."""
        return self._ann.confidence

    @property
    def valid(self) -> np.ndarray:
        """(T,) True where the frame has the subject's landmarks."""
        return self._ann.valid

    @property
    def crop_to_source(self) -> np.ndarray:
        """(T, 2, 3) affine from crop pixels to source-frame pixels."""
        return self._ann.crop_to_source

    @property
    def times(self) -> np.ndarray:
        """(T,) presentation time of each frame in the source video, seconds."""
        return self._ann.times

    def frame_path(self, i: int) -> Path:
        return self.root / FRAMES_DIR / frame_name(i, self.image_ext)

    def image(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 RGB crop of frame ``i``."""
        return _read(self.frame_path(i), cv2.IMREAD_COLOR)[..., ::-1].copy()

    def alpha(self, i: int) -> np.ndarray:
        """(S, S) float32 foreground alpha in [0, 1]."""
        return _read(self.root / ALPHA_DIR / frame_name(i, "png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0

    def labels(self, i: int) -> np.ndarray:
        """(S, S) uint8 semantic labels, indices into ``LABELS``."""
        return _read(self.root / MASKS_DIR / frame_name(i, "png"), cv2.IMREAD_GRAYSCALE)

    def resized(self, size: int, kinds: tuple[str, ...] = ("image",), progress=None) -> dict[str, np.ndarray]:
        """Every frame's ``kinds`` ("image", "alpha", "labels") resized to ``size`` x ``size`` and
        stacked: (T, size, size, 3) uint8, (T, size, size) float32, (T, size, size) uint8. Images
        and alpha are averaged down (area), labels picked (nearest). ``progress("load", done, total)``."""
        interpolation = {"image": cv2.INTER_AREA, "alpha": cv2.INTER_AREA, "labels": cv2.INTER_NEAREST}

        def load(i: int) -> list[np.ndarray]:
            return [cv2.resize(getattr(self, k)(i), (size, size), interpolation=interpolation[k]) for k in kinds]

        out: list[list[np.ndarray]] = [[] for _ in kinds]
        with cf.ThreadPoolExecutor(8) as pool:  # OpenCV releases the GIL while decoding
            for n, frame in enumerate(pool.map(load, range(self.num_frames)), 1):
                for column, value in zip(out, frame):
                    column.append(value)
                if progress is not None and (n % 50 == 0 or n == self.num_frames):
                    progress("load", n, self.num_frames)
        return {k: np.stack(column) for k, column in zip(kinds, out)}


def _read(path: Path, flag: int) -> np.ndarray:
    img = cv2.imread(str(path), flag)
    if img is None:
        raise DatasetError(f"cannot read {path}: missing or damaged")
    return img
