"""Settings of the preprocess stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PreprocessConfig"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How a video becomes a dataset. Every field can be set from a file, the environment or a flag."""

    size: int = 512
    """Side of the square crops written to the dataset, in pixels."""

    crop_scale: float = 2.6
    """Side of the crop as a multiple of the median face-detection box side (the box spans brows to
    chin), so that hair, ears and some neck fit."""

    crop_shift: float = 0.12
    """Move the crop centre up by this fraction of the face box side, to keep the hair in."""

    crop_mode: Literal["track", "fixed"] = "track"
    """``track``: the crop follows the head, smoothed over time; ``fixed``: one box for the whole
    video, covering every head position (as for a static camera)."""

    smooth_seconds: float = 0.25
    """Standard deviation, in seconds, of the Gaussian that smooths the crop centre over time."""

    start_seconds: float = 0.0
    """Skip the video before this time."""

    max_frames: int = 0
    """Use at most this many frames (after ``frame_step``); 0 means all."""

    frame_step: int = 1
    """Keep every n-th frame (2 halves a 50/60 fps video)."""

    min_frames: int = 24
    """Fewer usable frames than this is an error: too little to build an avatar from."""

    min_face_px: int = 64
    """A median face-box side below this many source pixels is an error: too little detail."""

    max_missing_fraction: float = 0.2
    """Frames without the subject's face (no detection or no landmarks) beyond this fraction of the
    video are an error that lists them; fewer are kept, flagged invalid and left out of the split."""

    max_faces: int = 4
    """How many faces per frame the detector reports, to pick the main subject among them."""

    detector: Literal["auto", "short", "full"] = "auto"
    """MediaPipe BlazeFace model: ``short`` (faces within ~2 m, fast), ``full`` (small faces too, about
    twice as slow), or ``auto``: short range, and full range on the frames where it finds nothing."""

    min_detection_confidence: float = 0.5
    """Detections below this score are ignored."""

    image_format: Literal["jpg", "png"] = "jpg"
    """Format of the RGB crops: ``jpg`` (quality ``jpeg_quality``; the source is lossy video already)
    or lossless ``png`` (about 5x larger and slower to write)."""

    jpeg_quality: int = 95
    """JPEG quality of the RGB crops."""

    val_fraction: float = 0.15
    """Fraction of the valid frames held out for validation."""

    split: Literal["tail", "interleaved"] = "tail"
    """``tail``: the last ``val_fraction`` of the video validates (unseen expressions and poses);
    ``interleaved``: every k-th frame validates."""

    decoder: Literal["auto", "sequential"] = "auto"
    """``auto``: each worker decodes its own part of the video, seeking by the container's frame
    timestamps (falls back to ``sequential`` when the file has none); ``sequential``: one decoder in
    the main process hands frames to the workers (for files whose seeking is unreliable)."""

    workers: int = 0
    """Worker processes (or threads, ``in_process``) for the models; 0 uses one process per CPU core
    (on 8 or more cores, all but one, which the main process keeps), or up to 4 threads."""

    in_process: bool = False
    """Run the models on threads of this process instead of worker processes: no process start-up
    (seconds per worker: Python, MediaPipe and its models). For a short clip such as a driving video."""

    warmup_frames: int = 8
    """Each worker runs the landmark tracker over this many frames before its part of the video (and
    discards them), so the parts join without a seam in the landmarks."""

    block_frames: int = 48
    """Frames per work unit when the main process decodes (``decoder = "sequential"``)."""

    contact_sheet_frames: int = 8
    """Frames shown in the contact sheet (0: no contact sheet)."""

    annotate: Literal["full", "landmarks"] = "full"
    """``full``: landmarks, person mask and semantic labels, what training needs; ``landmarks``: crops
    and landmarks only, what a driving video needs (no segmentation: about half the work). A
    landmarks-only dataset cannot be trained on."""

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 4096:
            raise ValueError(f"size must be between 32 and 4096 pixels, got {self.size}")
        if self.crop_scale <= 0.5:
            raise ValueError(f"crop_scale must be > 0.5, got {self.crop_scale}")
        if self.frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {self.frame_step}")
        if self.max_frames < 0 or self.min_frames < 1:
            raise ValueError("max_frames must be >= 0 and min_frames >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ValueError(f"max_missing_fraction must be in [0, 1], got {self.max_missing_fraction}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.workers < 0 or self.block_frames < 1 or self.max_faces < 1 or self.warmup_frames < 0:
            raise ValueError("workers and warmup_frames must be >= 0, block_frames and max_faces >= 1")
