"""An independent judge of faces in images: dlib's HOG detector, 68-point shape model and ResNet
face descriptor (PyPI ``dlib-bin`` and ``face-recognition-models``; weights inside the packages).

Evaluation only, never a NeuAvatar dependency: the product tracks with MediaPipe, so judging its
output with MediaPipe would let the model under test mark its own work.

Features of one face, from its 68 points (iBUG order, 0-based), in units of the distance between
the eye centres d, measured along the face's own axes (x̂ from the right eye's centre to the left
eye's, ŷ perpendicular, down the face), so head roll does not leak into them:

    mouth_open   mean over the inner-lip pairs (61,67) (62,66) (63,65) of (p_lower - p_upper)·ŷ / d
    mouth_width  |p54 - p48| / d
    eye_r, eye_l eye aspect ratio (|p37-p41| + |p38-p40|) / (2 |p36-p39|), and its left twin
    brow_r       ((p36 + p39)/2 - mean p17..21)·ŷ / d: the brow's height over its eye corners
    brow_l       the same with p42, p45 and p22..26
    roll         the angle of x̂ in the image, degrees
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("mouth_open", "mouth_width", "eye_r", "eye_l", "brow_r", "brow_l", "roll")


def _model_file(name: str) -> str:
    # face_recognition_models' own __init__ imports pkg_resources (gone from new setuptools): find its folder instead
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the judge needs its models: pip install -e .[judge]  (dlib-bin, face-recognition-models)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "models" / name)


@dataclass
class Face:
    """One detected face: (68, 2) points in the image's pixels, its features, and its descriptor
    (128,) when asked for."""

    points: np.ndarray
    features: dict[str, float]
    descriptor: np.ndarray | None = None


def features(p: np.ndarray) -> dict[str, float]:
    """The features above, for (68, 2) points."""
    eye_r, eye_l = p[36:42].mean(0), p[42:48].mean(0)
    d = float(np.linalg.norm(eye_l - eye_r)) + 1e-9
    x = (eye_l - eye_r) / d
    y = np.array([-x[1], x[0]])  # x̂ turned 90°: down the face in image coordinates (y down)
    mouth = np.mean([(p[lo] - p[up]) @ y for up, lo in ((61, 67), (62, 66), (63, 65))]) / d
    ear = lambda a, b, c, e, f, g: (np.linalg.norm(p[b] - p[g]) + np.linalg.norm(p[c] - p[f])) / (  # noqa: E731
        2 * np.linalg.norm(p[a] - p[e]) + 1e-9)
    return {
        "mouth_open": float(max(mouth, 0.0)),
        "mouth_width": float(np.linalg.norm(p[54] - p[48]) / d),
        "eye_r": float(ear(36, 37, 38, 39, 40, 41)),
        "eye_l": float(ear(42, 43, 44, 45, 46, 47)),
        "brow_r": float(((p[36] + p[39]) / 2 - p[17:22].mean(0)) @ y / d),
        "brow_l": float(((p[42] + p[45]) / 2 - p[22:27].mean(0)) @ y / d),
        "roll": float(np.degrees(np.arctan2(x[1], x[0]))),
    }


class Judge:
    """Detects the largest face in an RGB image and measures it. Images smaller than ``min_side``
    are enlarged first (HOG finds faces of about 80 px and more)."""

    def __init__(self, min_side: int = 512):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self.min_side = min_side

    def __call__(self, rgb: np.ndarray, describe: bool = False) -> Face | None:
        import cv2

        scale = max(1.0, self.min_side / min(rgb.shape[:2]))
        image = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else rgb
        image = np.ascontiguousarray(image)
        boxes = self.detector(image, 0)
        if len(boxes) == 0:
            boxes = self.detector(image, 1)  # once more, upsampled: small or blurred faces
            if len(boxes) == 0:
                return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        shape = self.shape(image, box)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)
        descriptor = np.array(self.encoder.compute_face_descriptor(image, shape)) if describe else None
        return Face(points=points / scale, features=features(points), descriptor=descriptor)


def noise_floor(series: np.ndarray) -> float:
    """The detector's frame-to-frame noise in ``series`` (T,): a robust std of x_t - (x_{t-1} + x_{t+1})/2,
    which is sqrt(1.5) σ for white noise σ and small for smooth motion."""
    x = series[np.isfinite(series)]
    if len(x) < 5:
        return float("nan")
    r = x[1:-1] - 0.5 * (x[:-2] + x[2:])
    return float(1.4826 * np.median(np.abs(r - np.median(r))) / np.sqrt(1.5))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])
