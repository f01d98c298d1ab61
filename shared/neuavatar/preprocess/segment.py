"""Soft foreground alpha and semantic labels, from the person mask and the face-mesh regions.

No face-parsing network can be had offline, so the labels are built from geometry and colour:
the mesh outlines give face, eyes, lips and mouth interior exactly; the person mask gives the rest
of the body; a skin-colour model, fitted per frame on the cheeks and nose, separates skin from
hair; the line through the chin separates head from neck and torso. See ``docs/dataset.md``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from neuavatar.dataset import LABELS
from neuavatar.landmarks import BROW_LINES, NOSE_TIP, REGION_LOOPS

__all__ = ["refine_alpha", "semantic_labels", "region_masks"]
BACKGROUND, FACE_SKIN, HAIR, EYES, MOUTH, LIPS, NECK_TORSO = range(len(LABELS))

_SUBPIXEL_BITS = 4
_CHI2_3DOF_99 = 11.34  # 99% quantile of a chi-square with 3 degrees of freedom


def _fill(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Boolean mask of a polygon given in continuous pixel coordinates, drawn with sub-pixel precision."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round((points - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


def region_masks(shape: tuple[int, int], landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the mesh's closed regions (``REGION_LOOPS`` names).

    Args:
        shape: (H, W) of the image.
        landmarks: (478, 2+) MediaPipe landmarks in pixels.
    """
    xy = landmarks[:, :2]
    return {name: _fill(shape, xy[list(loop)]) for name, loop in REGION_LOOPS.items()}


def _box_filter(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def refine_alpha(rgb: np.ndarray, soft_mask: np.ndarray, *, radius: int | None = None, eps: float = 1e-3,
                 subsample: int = 2) -> np.ndarray:
    """Snap a coarse soft mask to the image's edges with a guided filter (He et al., 2010).

    The linear coefficients are fitted on a ``subsample``-times smaller copy and upsampled (the
    "fast guided filter", He and Sun, 2015), which keeps the result's edges at full resolution.

    Args:
        rgb: (H, W, 3) uint8 guide image.
        soft_mask: (H, W) float mask in [0, 1] (the person segmenter's output).
        radius: filter window radius in full-resolution pixels; default H / 128, at least 2.
        eps: regulariser; smaller follows image edges more closely.
        subsample: factor by which the coefficients are computed at lower resolution.

    Returns:
        (H, W) float32 alpha in [0, 1].
    """
    h, w = rgb.shape[:2]
    r = radius if radius is not None else max(2, h // 128)
    guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1 / 255.0)
    p = soft_mask.astype(np.float32)
    small = (max(1, w // subsample), max(1, h // subsample))
    g, q = cv2.resize(guide, small, interpolation=cv2.INTER_AREA), cv2.resize(p, small, interpolation=cv2.INTER_AREA)
    rs = max(1, r // subsample)
    mean_i, mean_p = _box_filter(g, rs), _box_filter(q, rs)
    var_i = _box_filter(g * g, rs) - mean_i * mean_i
    cov_ip = _box_filter(g * q, rs) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    a = cv2.resize(_box_filter(a, rs), (w, h), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(_box_filter(b, rs), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(a * guide + b, 0.0, 1.0)


@functools.cache
def _pixel_centres(n: int) -> np.ndarray:
    """(n, n, 2) float32 (x, y) centres of an n x n image's pixels."""
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    return np.stack([xs, ys], -1)


class _Gaussian:
    """A colour model: mean and covariance of Lab pixels."""

    def __init__(self, samples: np.ndarray):  # (N, 3)
        self.mean = samples.mean(0).astype(np.float32)
        self.inv_cov = np.linalg.inv(np.cov(samples.T) + np.eye(3) * 4.0).astype(np.float32)  # floor: 2 Lab units std

    def distance2(self, lab: np.ndarray) -> np.ndarray:  # (..., 3) -> (...,) squared Mahalanobis
        d = lab - self.mean
        m = self.inv_cov  # written out: a matmul here would start BLAS threads in every worker
        e = d[..., 0:1] * m[0] + d[..., 1:2] * m[1] + d[..., 2:3] * m[2]
        return (e * d).sum(-1)


def semantic_labels(rgb: np.ndarray, landmarks: np.ndarray, alpha: np.ndarray, *, colour_size: int = 128,
                    regions: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Per-pixel labels (indices into ``LABELS``) of one crop.

    The mesh outlines are drawn at full resolution; the colour and connectivity reasoning about
    hair runs on a ``colour_size`` copy and is scaled back up.

    Args:
        rgb: (H, W, 3) uint8 crop, H == W.
        landmarks: (478, 2+) MediaPipe landmarks in crop pixels.
        alpha: (H, W) float foreground alpha.
        colour_size: side of the downscaled image on which the colour models run.
        regions: ``region_masks`` of these landmarks, when the caller has them already.

    Returns:
        (H, W) uint8 label map.
    """
    h, w = rgb.shape[:2]
    n = colour_size
    s = n / h
    xy = landmarks[:, :2].astype(np.float64)
    regions = regions if regions is not None else region_masks((h, w), landmarks)
    oval = regions["face_oval"]
    eyes = regions["left_eye"] | regions["right_eye"]
    mouth = regions["lips_inner"]
    lips = regions["lips_outer"] & ~mouth
    person = (alpha >= 0.5) | oval

    def small(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST).astype(bool)

    def large(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    # The face's own axes, in full-resolution pixels: "up" from the chin (152) to the top of the
    # forehead (10), "across" perpendicular to it from the face's midline.
    top, chin = xy[10], xy[152]
    face_h = float(np.linalg.norm(top - chin)) + 1e-6
    up = (top - chin) / face_h
    side = np.array([up[1], -up[0]])
    oval_xy = xy[list(REGION_LOOPS["face_oval"])]
    face_half_w = 0.5 * float(np.ptp((oval_xy - chin) @ side))
    grid = _pixel_centres(n) / s  # (n, n, 2) centres of the small image's pixels, in full-resolution pixels
    above_chin = (grid[..., 0] - chin[0]) * up[0] + (grid[..., 1] - chin[1]) * up[1]
    mid = (top + chin) / 2
    across = (grid[..., 0] - mid[0]) * side[0] + (grid[..., 1] - mid[1]) * side[1]
    brow_top = max(float(((xy[list(upper)] - chin) @ up).max()) for upper, _ in BROW_LINES.values())
    head_zone = (across / (1.6 * face_half_w)) ** 2 + ((above_chin - 0.6 * face_h) / (1.2 * face_h)) ** 2 < 1
    fringe_zone = above_chin > brow_top + 0.04 * face_h
    beside = (np.abs(across) < 1.6 * face_half_w) & (above_chin < 1.8 * face_h)  # the head's column, neck included

    small_rgb = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    person_s, oval_s = small(person), small(oval)

    # Skin colour from the central face: the outline shrunk towards the nose, without eyes and lips.
    centre = xy[NOSE_TIP]
    inner = _fill((n, n), (centre + 0.6 * (oval_xy - centre)) * s)
    exclude = cv2.dilate(small(eyes | regions["lips_outer"]).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    skin_px = lab[inner & ~exclude]
    if len(skin_px) >= 30:
        d_skin = _Gaussian(skin_px).distance2(lab)
        skin_s = cv2.medianBlur((d_skin < _CHI2_3DOF_99).astype(np.uint8), 3).astype(bool)
    else:  # face too small to sample
        d_skin, skin_s = None, np.zeros((n, n), bool)

    # Hair: certain in the upper head outside the face (not skin); then the hair-coloured pixels
    # connected to it (a fringe above the brows, long hair beside the neck), but not a forehead
    # shadow or a dark jacket that does not touch it.
    seeds = person_s & ~oval_s & ~skin_s & head_zone & (above_chin > 0.45 * face_h)
    hair_s = seeds
    if d_skin is not None and seeds.sum() >= 20:
        d_hair = _Gaussian(lab[seeds]).distance2(lab)
        like = ((d_hair < 3 * _CHI2_3DOF_99) & (d_hair < d_skin) & ~skin_s).astype(np.uint8)
        like = cv2.morphologyEx(like, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        candidates = like & person_s & ((beside & ~oval_s) | (oval_s & fringe_zone))
        count, comp = cv2.connectedComponents((candidates | seeds).astype(np.uint8), connectivity=8)
        touches_seed = np.zeros(count, bool)
        touches_seed[comp[seeds]] = True
        hair_s = seeds | (candidates & touches_seed[comp])

    # Skin-coloured pixels beside the face, above the chin, are ears (face skin); every other person
    # pixel that is neither hair nor face is neck, torso or clothing.
    reach = max(1, int(0.15 * face_h * s))
    near_face = cv2.dilate(oval_s.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2))
    ears_s = skin_s & near_face.astype(bool) & (above_chin > 0) & ~hair_s

    coarse = np.full((n, n), NECK_TORSO, np.uint8)
    coarse[ears_s] = FACE_SKIN
    coarse[hair_s] = HAIR
    labels = np.where(person, cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST), BACKGROUND).astype(np.uint8)
    labels[oval & ~large(hair_s & oval_s & fringe_zone)] = FACE_SKIN
    labels[oval & large(hair_s & oval_s & fringe_zone)] = HAIR
    labels[eyes] = EYES
    labels[lips] = LIPS
    labels[mouth] = MOUTH
    return labels
