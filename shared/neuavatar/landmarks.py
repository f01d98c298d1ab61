"""The two landmark conventions NeuAvatar uses, and the fixed table between them.

- MediaPipe Face Mesh: 478 points (468 surface points + 5 per iris), index meanings fixed by
  MediaPipe's canonical face model.
- iBUG 300-W: 68 points (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67).

``IBUG68_FROM_MEDIAPIPE[k]`` is the MediaPipe index that stands for iBUG point ``k``. It was chosen
by hand from the mesh's anatomy (see ``tests/test_landmarks.py`` for the checks: symmetry, ordering
and placement on real faces). Region loops are the closed outlines MediaPipe's
``face_mesh_connections`` describes as edge sets, put in walking order (a test checks they match).

"Left" and "right" are the subject's own: the subject's right eye is on the image's left.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "NUM_MEDIAPIPE",
    "NUM_IBUG",
    "IBUG68_FROM_MEDIAPIPE",
    "REGION_LOOPS",
    "BROW_LINES",
    "NOSE_TIP",
    "ibug68",
]

NUM_MEDIAPIPE = 478
NUM_IBUG = 68
NOSE_TIP = 1

# iBUG 68 order, subject's right (image left) first, as in the 300-W annotation.
IBUG68_FROM_MEDIAPIPE: tuple[int, ...] = (
    # jaw 0-16: ear level on the image left, down to the chin (8), up to the image right
    127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356,
    # right brow 17-21 (outer to inner), left brow 22-26 (inner to outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30 (top to tip), nostril base 31-35 (image left to right)
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye 36-41: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # left eye 42-47: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # outer lips 48-59: right corner, upper lip to left corner, lower lip back
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67: right corner, upper, left corner, lower
    78, 81, 13, 311, 308, 402, 14, 178,
)

# Closed outlines, in walking order.
REGION_LOOPS: dict[str, tuple[int, ...]] = {
    "face_oval": (10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
                  377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338),
    "lips_outer": (0, 37, 39, 40, 185, 61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267),
    "lips_inner": (13, 82, 81, 80, 191, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312),
    "left_eye": (249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466, 263),
    "right_eye": (7, 33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163),
    "left_iris": (474, 477, 476, 475),
    "right_iris": (469, 470, 471, 472),
}

# Open polylines along the upper and lower edge of each brow (outer end first).
BROW_LINES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "right_brow": ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55)),
    "left_brow": ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285)),
}


def ibug68(points: np.ndarray) -> np.ndarray:
    """The 68 iBUG points of MediaPipe landmarks.

    Args:
        points: (..., 478, D) MediaPipe landmarks, any number of coordinates D.

    Returns:
        (..., 68, D) the iBUG subset, in iBUG order.
    """
    if points.shape[-2] != NUM_MEDIAPIPE:
        raise ValueError(f"points must have {NUM_MEDIAPIPE} landmarks on axis -2, got shape {points.shape}")
    return points[..., IBUG68_FROM_MEDIAPIPE, :]
