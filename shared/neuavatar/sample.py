"""The bundled sample: a short talking-head video that NeuAvatar makes itself.

It starts from the portrait of astronaut Eileen Collins that scikit-image ships (NASA, public
domain: "No known copyright restrictions"), finds her face mesh, and animates it: the camera
drifts, rolls and zooms a little, the jaw opens and closes as in speech (the mouth opening is
painted dark with a hint of teeth), and the eyes blink. No third-party footage is involved, so the
sample may be shipped, shown and redistributed.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from pathlib import Path

import cv2
import numpy as np

from neuavatar.errors import NeuAvatarError
from neuavatar.landmarks import REGION_LOOPS
from neuavatar.video import VideoWriter

__all__ = ["make_sample", "sample_portrait", "jaw_opening", "blink_closure"]


def sample_portrait() -> np.ndarray:
    """(512, 512, 3) uint8 RGB portrait of Eileen Collins (public domain), from scikit-image's data."""
    from importlib import resources

    path = resources.files("skimage") / "data" / "astronaut.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise NeuAvatarError(f"scikit-image's astronaut portrait is missing ({path}); reinstall scikit-image")
    return img[..., ::-1].copy()


def _landmarks(rgb: np.ndarray) -> np.ndarray:
    from neuavatar.preprocess.worker import image_landmarks, init_worker

    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker) as pool:
        lmk = pool.submit(image_landmarks, rgb).result()
    if lmk is None:
        raise NeuAvatarError("no face found in the sample portrait; the MediaPipe install looks broken")
    return lmk


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def jaw_opening(t: float) -> float:
    """How far the sample's jaw is open at time ``t`` seconds, 0 (closed) to 1: syllables at 1.6 Hz."""
    return max(0.0, np.sin(2 * np.pi * 1.6 * t)) * (0.55 + 0.45 * np.sin(2 * np.pi * 0.23 * t + 1.0))


def blink_closure(t: float) -> float:
    """How far the sample's eyelids are closed at time ``t`` seconds, 0 to 1."""
    return max(np.exp(-0.5 * ((t - tb) / 0.07) ** 2) for tb in (1.3, 3.9, 6.2, 7.6))


def make_sample(out: Path, *, seconds: float = 8.0, fps: float = 25.0, size: int = 512) -> Path:
    """Write the sample video (H.264 MP4) to ``out`` and return its path."""
    src = sample_portrait()
    h, w = src.shape[:2]
    lmk = _landmarks(src)[:, :2].astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    # Jaw: the lower lip and chin move down; the weight is 1 at the lower lip and fades out below
    # the chin and towards the cheeks.
    lip_line, chin = (lmk[13] + lmk[14]) / 2, lmk[152]
    mouth_w = np.linalg.norm(lmk[291] - lmk[61])
    depth = (yy - lip_line[1]) / (chin[1] + 0.35 * (chin[1] - lip_line[1]) - lip_line[1])
    jaw_w = (yy > lip_line[1]) * (1 - _smoothstep(depth)) * np.exp(-0.5 * ((xx - lip_line[0]) / (0.9 * mouth_w)) ** 2)
    jaw_px = 0.25 * mouth_w  # widest opening

    # Eyelids: inside each eye (slightly enlarged) pixels sample from above, i.e. the lid comes down.
    eye_w = np.zeros((h, w), np.float32)
    eye_heights = []
    for name in ("left_eye", "right_eye"):
        pts = lmk[list(REGION_LOOPS[name])]
        c = pts.mean(0)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(c + 1.4 * (pts - c) - 0.5).astype(np.int32)], 1)
        eye_w = np.maximum(eye_w, cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.0))
        eye_heights.append(np.ptp(pts[:, 1]))
    lid_px = 1.1 * float(np.mean(eye_heights))

    inner = lmk[list(REGION_LOOPS["lips_inner"])]
    mouth_x = (float(inner[:, 0].min()) + 2, float(inner[:, 0].max()) - 2)  # the gap stays between the mouth corners
    centre = lmk[1]
    n = int(round(seconds * fps))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial.mp4")
    try:
        with VideoWriter(tmp, fps, crf=16) as writer:
            for i in range(n):
                t = i / fps
                speech, blink = jaw_opening(t), blink_closure(t)
                frame = _expression(src, xx, yy, jaw_w * speech * jaw_px, eye_w * blink * lid_px,
                                    float(lip_line[1]), mouth_x)
                angle = 5.0 * np.sin(2 * np.pi * t / 4.3)
                scale = 1.0 + 0.06 * np.sin(2 * np.pi * t / 6.1 + 0.5)
                shift = np.array([16 * np.sin(2 * np.pi * t / 5.3), 9 * np.sin(2 * np.pi * t / 3.7 + 1.0)])
                m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
                m[:, 2] += shift
                frame = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                if size != w:
                    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
                writer.write(frame)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _expression(src: np.ndarray, xx: np.ndarray, yy: np.ndarray, jaw_dy: np.ndarray, lid_dy: np.ndarray,
                lip_y: float, mouth_x: tuple[float, float]) -> np.ndarray:
    """Warp ``src`` by downward displacements (jaw, lids) and darken the gap the jaw opens.

    The jaw moves everything below the line between the lips (``lip_y``) down; output pixels just
    below that line would sample from above it, which is the opening of the mouth: they are painted
    as the dark mouth interior.
    """
    map_y = yy - 0.5 - jaw_dy - lid_dy  # backward map: jaw and lid pixels come from above, i.e. they move down
    frame = cv2.remap(src, xx - 0.5, map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gap = ((yy > lip_y) & (yy - jaw_dy < lip_y) & (xx > mouth_x[0]) & (xx < mouth_x[1])).astype(np.float32)
    if gap.any():
        soft = cv2.GaussianBlur(gap, (0, 0), 1.0)[..., None]
        frame = (frame * (1 - soft) + np.array([40, 12, 16], np.float32) * soft).astype(np.uint8)
    return frame
