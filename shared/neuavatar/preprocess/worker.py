"""Work done in worker processes: face detection, and per-crop annotation, on segments of frames.

A job names its frames either by their timestamps (the worker decodes them itself, seeking to its
segment, so no frame crosses a process boundary) or carries them (when the main process had to
decode the video in order). Each worker builds its MediaPipe models once and keeps them. (The same
functions also run on threads of the main process, ``PreprocessConfig.in_process``: MediaPipe, PyAV
and OpenCV release the GIL while they work, and each thread keeps models of its own.) A job
starts with a few warm-up frames from before its part, on which the landmark tracker runs and
whose results are dropped, so that the parts join without a seam.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from neuavatar.dataset import ALPHA_DIR, FRAMES_DIR, MASKS_DIR, frame_name
from neuavatar.preprocess.models import FaceDetector, FaceLandmarker, PersonSegmenter
from neuavatar.preprocess.segment import refine_alpha, region_masks, semantic_labels
from neuavatar.preprocess.subject import Detection
from neuavatar.video import decode_at

__all__ = ["init_worker", "init_thread", "FrameSource", "detect_faces", "image_landmarks", "AnnotateJob", "AnnotateResult",
           "annotate_frames", "UNKNOWN_LABEL"]

UNKNOWN_LABEL = 255
"""Mask value of every pixel of a frame without landmarks (such frames are left out of the split)."""

_local = threading.local()  # .models: this process's (or this thread's) models by key
_frames_done = None  # multiprocessing.Value shared with the main process, for its progress bar


def init_worker(quiet: bool = True, frames_done=None, next_core=None, preload: tuple[str, ...] = ()) -> None:
    """Process initialiser.

    Args:
        quiet: silence MediaPipe's native logging, which writes to fd 2 from its own threads.
        frames_done: a shared ``multiprocessing.Value`` counter, incremented for every frame done.
        next_core: a shared counter; when given, the worker takes the core at that position among the
            cores this process may use (then counts on) and stays on it, with MediaPipe's helper
            threads. With one worker per core this stops the workers' threads from crowding each
            other (measured on 16 cores: 1.5x).
        preload: models to build now rather than at first use (``"detect-<model>"``, ``"mesh-<faces>"``,
            ``"segment"``), so that all workers build them together while the process starts.
    """
    global _frames_done
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    cv2.setNumThreads(1)  # one worker per core already
    _frames_done = frames_done
    if next_core is not None and hasattr(os, "sched_setaffinity"):
        with next_core.get_lock():
            slot = next_core.value
            next_core.value += 1
        cores = sorted(os.sched_getaffinity(0))
        if slot < len(cores):
            os.sched_setaffinity(0, {cores[slot]})
    for key in preload:
        _model(key)


def init_thread(frames_done=None, preload: tuple[str, ...] = ()) -> None:
    """Thread initialiser (``in_process``): the shared frame counter, and this thread's own models
    (a MediaPipe graph serves one caller at a time)."""
    global _frames_done
    _frames_done = frames_done
    for key in preload:
        _model(key)


def _count_frame() -> None:
    if _frames_done is not None:
        with _frames_done.get_lock():
            _frames_done.value += 1


def _model(key: str):
    """This process's (or thread's) model named ``key``: ``detect-<short|full>-<min confidence>``,
    ``mesh-<faces>`` or ``segment``, built on first use."""
    if not hasattr(_local, "models"):
        _local.models = {}
    _models = _local.models
    if key not in _models:
        kind, *args = key.split("-")
        if kind == "detect":
            _models[key] = FaceDetector(args[0], float(args[1]))
        elif kind == "mesh":
            _models[key] = FaceLandmarker(int(args[0]))
        elif kind == "segment":
            _models[key] = PersonSegmenter()
        else:
            raise ValueError(f"unknown model {key!r}")
    return _models[key]


@dataclass
class FrameSource:
    """The frames of one job: decoded here from ``path`` at timestamps ``pts``, or given as ``images``."""

    path: Path | None = None
    pts: np.ndarray | None = None  # (N,) int64 presentation timestamps
    scale_to: tuple[int, int] | None = None  # decode at this (width, height)
    images: np.ndarray | None = None  # (N, H, W, 3) uint8, when the main process decoded them

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.pts)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.images is not None:
            return iter(self.images)
        shrink = self.scale_to is not None
        return decode_at(self.path, self.pts, scale_to=self.scale_to, interpolation="AREA" if shrink else None)


def detect_faces(source: FrameSource, scale: float, detector: str, min_confidence: float,
                 max_faces: int) -> list[list[Detection]]:
    """Faces in each frame of ``source``, largest score first; coordinates multiplied by ``scale``."""
    first = "short" if detector == "auto" else detector
    det: FaceDetector = _model(f"detect-{first}-{min_confidence}")
    out = []
    for rgb in source:
        faces = det.detect(rgb, scale)
        if not faces and detector == "auto":
            far = _model(f"detect-full-{min_confidence}")
            faces = far.detect(rgb, scale)
        out.append(sorted(faces, key=lambda d: -d.score)[:max_faces])
        _count_frame()
    return out


def image_landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """(478, 3) landmarks of the most prominent face in one image, or None."""
    mesh: FaceLandmarker = _model("mesh-1")
    mesh.reset()
    faces = mesh.landmarks(rgb)
    return faces[0] if faces else None


@dataclass
class AnnotateJob:
    """Consecutive frames to crop, annotate and write."""

    first_index: int  # dataset index of the first frame written (after the warm-up frames)
    warmup: int  # leading frames of ``source`` that only warm the landmark tracker up
    source: FrameSource  # warm-up frames, then the frames to write
    warps: np.ndarray  # (W + N, 2, 3) crop pixel -> decoded-frame pixel, OpenCV's pixel-centre convention
    size: int  # crop side
    expected_centres: np.ndarray  # (N, 2) where the subject's face should be, crop pixels
    expected_side: float  # subject's face-box side in crop pixels
    out_dir: Path
    image_format: str
    jpeg_quality: int
    mesh_faces: int  # faces the landmarker looks for (more than 1 when others may enter the crop)
    annotate: str = "full"  # "landmarks": no person mask, labels, alpha or mask images


@dataclass
class AnnotateResult:
    first_index: int
    landmarks: np.ndarray  # (N, 478, 3) float32 crop pixels, NaN where not found
    valid: np.ndarray  # (N,) bool
    face_alpha: np.ndarray  # (N,) mean alpha inside the face oval (a check of the segmentation), NaN if invalid
    seconds: dict[str, float]  # time spent per step in this job, for benchmarks
    span: tuple[float, float]  # (start, end) of the job on time.perf_counter's clock (system-wide on Linux)


def annotate_frames(job: AnnotateJob) -> AnnotateResult:
    """Crop each frame of ``job``, find its landmarks, alpha and labels, and write its three images."""
    started = time.perf_counter()
    mesh: FaceLandmarker = _model(f"mesh-{job.mesh_faces}")
    full = job.annotate == "full"
    seg: PersonSegmenter | None = _model("segment") if full else None
    n, size = len(job.source) - job.warmup, job.size
    landmarks = np.full((n, 478, 3), np.nan, np.float32)
    valid = np.zeros(n, bool)
    face_alpha = np.full(n, np.nan, np.float32)
    img_params = [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality] if job.image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    # zlib level 1 with the "sub" filter: twice as fast as OpenCV's default adaptive filtering on
    # these smooth 8-bit maps, for files a few percent larger.
    png_fast = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    seconds = dict.fromkeys(("setup", "decode", "crop", "landmarks", "segment", "labels", "write"), 0.0)
    clock = started

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] += now - clock
        clock = now

    lap("setup")

    mesh.reset()
    for j, frame in enumerate(job.source):
        lap("decode")
        rgb = cv2.warpAffine(frame, job.warps[j], (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        lap("crop")
        faces = mesh.landmarks(rgb)
        k = j - job.warmup
        if k < 0:
            lap("landmarks")
            continue
        index = job.first_index + k
        lmk = _pick_subject(faces, job.expected_centres[k], job.expected_side)
        lap("landmarks")
        if not full:  # a driving video: the crop and its landmarks are all it needs
            if lmk is not None:
                landmarks[k], valid[k] = lmk, True
            _write(job.out_dir / FRAMES_DIR / frame_name(index, job.image_format), rgb[..., ::-1], img_params)
            _count_frame()
            lap("write")
            continue
        alpha = refine_alpha(rgb, seg.mask(rgb))
        lap("segment")
        if lmk is not None:
            landmarks[k], valid[k] = lmk, True
            regions = region_masks((size, size), lmk)
            oval = regions["face_oval"]
            face_alpha[k] = float(alpha[oval].mean()) if oval.any() else np.nan
            alpha = np.where(oval, 1.0, alpha)  # the face is foreground, whatever the segmenter thought
            labels = semantic_labels(rgb, lmk, alpha, regions=regions)
        else:
            labels = np.full((size, size), UNKNOWN_LABEL, np.uint8)
        lap("labels")
        _write(job.out_dir / FRAMES_DIR / frame_name(index, job.image_format), rgb[..., ::-1], img_params)
        _write(job.out_dir / ALPHA_DIR / frame_name(index, "png"), np.round(alpha * 255).astype(np.uint8), png_fast)
        _write(job.out_dir / MASKS_DIR / frame_name(index, "png"), labels, png_fast)
        _count_frame()
        lap("write")
    return AnnotateResult(job.first_index, landmarks, valid, face_alpha, seconds, (started, time.perf_counter()))


def _pick_subject(faces: list[np.ndarray], centre: np.ndarray, side: float) -> np.ndarray | None:
    """The face whose landmark centroid is nearest ``centre``, if within 0.6 face sides of it."""
    best, best_d = None, 0.6 * side
    for f in faces:
        d = float(np.linalg.norm(f[:, :2].mean(0) - centre))
        if d <= best_d:
            best, best_d = f, d
    return best


def _write(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path} (disk full or not writable?)")
