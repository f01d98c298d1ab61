"""Work done in worker processes: face detection on blocks of frames, and per-crop annotation.

Each worker process builds its MediaPipe models once and keeps them. Frames arrive in blocks of
consecutive frames, so the landmark tracker can follow the face inside a block; it restarts at
each block, which makes the result independent of how blocks are shared among workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from neuavatar.dataset import ALPHA_DIR, FRAMES_DIR, MASKS_DIR, frame_name
from neuavatar.preprocess.models import FaceDetector, FaceLandmarker, PersonSegmenter
from neuavatar.preprocess.segment import refine_alpha, region_masks, semantic_labels
from neuavatar.preprocess.subject import Detection

__all__ = ["init_worker", "detect_block", "image_landmarks", "AnnotateJob", "AnnotateResult", "annotate_block", "UNKNOWN_LABEL"]

UNKNOWN_LABEL = 255
"""Mask value of every pixel of a frame without landmarks (such frames are left out of the split)."""

_models: dict[str, object] = {}


def init_worker(quiet: bool = True) -> None:
    """Process initialiser: silence MediaPipe's native logging, which writes to fd 2 from its threads."""
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    cv2.setNumThreads(1)  # one worker per core already


def _model(key: str, factory):
    if key not in _models:
        _models[key] = factory()
    return _models[key]


def detect_block(frames: np.ndarray, scale: float, detector: str, min_confidence: float,
                 max_faces: int) -> list[list[Detection]]:
    """Faces in each of ``frames`` (N, H, W, 3) uint8, coordinates multiplied by ``scale``."""
    first = "short" if detector == "auto" else detector
    det: FaceDetector = _model(f"det-{first}-{min_confidence}", lambda: FaceDetector(first, min_confidence))
    out = []
    for rgb in frames:
        faces = det.detect(rgb, scale)
        if not faces and detector == "auto":
            far = _model(f"det-full-{min_confidence}", lambda: FaceDetector("full", min_confidence))
            faces = far.detect(rgb, scale)
        out.append(sorted(faces, key=lambda d: -d.score)[:max_faces])
    return out


def image_landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """(478, 3) landmarks of the most prominent face in one image, or None."""
    faces = _model("mesh-still", lambda: FaceLandmarker(1)).landmarks(rgb)
    return faces[0] if faces else None


@dataclass
class AnnotateJob:
    """A block of consecutive crops to annotate and write."""

    first_index: int
    crops: np.ndarray  # (N, S, S, 3) uint8
    expected_centres: np.ndarray  # (N, 2) where the subject's face should be, crop pixels
    expected_side: float  # subject's face-box side in crop pixels
    out_dir: Path
    image_format: str
    jpeg_quality: int
    mesh_faces: int  # faces the landmarker looks for (more than 1 when others may enter the crop)


@dataclass
class AnnotateResult:
    first_index: int
    landmarks: np.ndarray  # (N, 478, 3) float32 crop pixels, NaN where not found
    valid: np.ndarray  # (N,) bool
    face_alpha: np.ndarray  # (N,) mean alpha inside the face oval (a check of the segmentation), NaN if invalid


def annotate_block(job: AnnotateJob) -> AnnotateResult:
    """Landmarks, alpha and labels for each crop in ``job``; writes the three images of each frame."""
    mesh: FaceLandmarker = _model(f"mesh-{job.mesh_faces}", lambda: FaceLandmarker(job.mesh_faces))
    seg: PersonSegmenter = _model("seg", PersonSegmenter)
    mesh.reset()
    n, size = len(job.crops), job.crops.shape[1]
    landmarks = np.full((n, 478, 3), np.nan, np.float32)
    valid = np.zeros(n, bool)
    face_alpha = np.full(n, np.nan, np.float32)
    img_params = [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality] if job.image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    png_fast = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for k in range(n):
        rgb = job.crops[k]
        index = job.first_index + k
        faces = mesh.landmarks(rgb)
        lmk = _pick_subject(faces, job.expected_centres[k], job.expected_side)
        alpha = refine_alpha(rgb, seg.mask(rgb))
        if lmk is not None:
            landmarks[k], valid[k] = lmk, True
            oval = region_masks((size, size), lmk)["face_oval"]
            face_alpha[k] = float(alpha[oval].mean()) if oval.any() else np.nan
            alpha = np.where(oval, 1.0, alpha)  # the face is foreground, whatever the segmenter thought
            labels = semantic_labels(rgb, lmk, alpha)
        else:
            labels = np.full((size, size), UNKNOWN_LABEL, np.uint8)
        name = frame_name(index, job.image_format)
        _write(job.out_dir / FRAMES_DIR / name, rgb[..., ::-1], img_params)
        _write(job.out_dir / ALPHA_DIR / frame_name(index, "png"), np.round(alpha * 255).astype(np.uint8), png_fast)
        _write(job.out_dir / MASKS_DIR / frame_name(index, "png"), labels, png_fast)
    return AnnotateResult(job.first_index, landmarks, valid, face_alpha)


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
