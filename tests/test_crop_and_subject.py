"""Crop planning and main-subject selection, on controlled inputs where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from neuavatar.preprocess.crop import crop_to_source_matrix, plan_crops, source_to_crop_matrix
from neuavatar.preprocess.subject import Detection, select_subject


def _boxes(centres: np.ndarray, side: float) -> np.ndarray:
    return np.concatenate([centres - side / 2, centres + side / 2], -1)


def _plan(boxes, mode="track", frame=(1280, 720), **kw):
    args = dict(crop_scale=2.0, crop_shift=0.0, mode=mode, smooth_seconds=0.25)
    args.update(kw)
    return plan_crops(boxes, frame, 25.0, **args)


def test_smoothing_removes_detector_noise():
    rng = np.random.default_rng(0)
    centres = np.array([640.0, 360.0]) + rng.normal(0, 3.0, (200, 2))  # a still head, noisy detector
    track = _plan(_boxes(centres, 100))
    raw_jitter = np.linalg.norm(np.diff(centres, axis=0), axis=1).mean()
    jitter = np.linalg.norm(np.diff(track.centres, axis=0), axis=1).mean()
    assert track.side == pytest.approx(200.0)
    assert jitter < 0.005 * track.side and jitter < raw_jitter / 5


def test_crop_follows_a_moving_head():
    t = np.arange(100)
    centres = np.stack([400 + 3.0 * t, np.full(100, 360.0)], -1)  # 3 px/frame to the right
    track = _plan(_boxes(centres, 100))
    assert np.abs(track.centres[10:-10, 0] - centres[10:-10, 0]).max() < 1.0


def test_missing_frames_are_interpolated():
    centres = np.stack([np.linspace(300, 500, 50), np.full(50, 360.0)], -1)
    boxes = _boxes(centres, 80)
    boxes[20:30] = np.nan
    track = _plan(boxes, smooth_seconds=0.0)
    np.testing.assert_allclose(track.centres[20:30, 0], centres[20:30, 0], atol=1e-6)


def test_crop_stays_inside_the_frame_and_is_limited_to_it():
    boxes = _boxes(np.array([[60.0, 50.0]] * 10), 100)  # face near the top-left corner
    track = _plan(boxes)
    assert (track.origins >= -1e-9).all()
    big = _plan(_boxes(np.array([[640.0, 360.0]] * 10), 500))  # wants 1000 px, frame is 720 high
    assert big.side == 720 and big.notes and "limited to the frame" in big.notes[0]


def test_fixed_mode_covers_every_position():
    centres = np.stack([np.linspace(500, 700, 40), np.full(40, 360.0)], -1)
    track = _plan(_boxes(centres, 100), mode="fixed")
    assert np.ptp(track.centres, axis=0).max() == 0
    assert (track.origins[0, 0] <= centres[:, 0] - 100).all() and (track.origins[0, 0] + track.side >= centres[:, 0] + 100).all()


def test_matrices_are_inverse():
    m = crop_to_source_matrix(np.array([100.0, 50.0]), 300.0, 512)
    n = source_to_crop_matrix(np.array([100.0, 50.0]), 300.0, 512)
    p = np.array([12.5, 400.0, 1.0])
    np.testing.assert_allclose(n @ np.append(m @ p, 1.0), p[:2])
    np.testing.assert_allclose(m @ np.array([0.0, 0.0, 1.0]), [100.0, 50.0])
    np.testing.assert_allclose(m @ np.array([512.0, 512.0, 1.0]), [400.0, 350.0])


def _det(cx, cy, side, score):
    return Detection(box=np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32),
                     score=score, keypoints=np.zeros((6, 2), np.float32))


def test_main_subject_is_the_largest_most_present_face_even_when_others_score_higher():
    frames = []
    for t in range(60):
        dets = [_det(400 + t, 300, 180, 0.80)]  # main subject: big, moving, lower confidence
        if 10 <= t < 50:
            dets.append(_det(1000, 200, 70, 0.99))  # a bystander: small, very confident
        frames.append(dets)
    track = select_subject(frames)
    assert track.found.all()
    assert np.allclose((track.boxes[:, 0] + track.boxes[:, 2]) / 2, 400 + np.arange(60))
    assert track.other_tracks == 1 and "several faces" in track.notes[0]


def test_subject_is_followed_across_a_long_gap():
    frames = [[_det(500, 300, 150, 0.9)] if not 20 <= t < 70 else [] for t in range(90)]
    track = select_subject(frames, max_gap_frames=10)
    assert track.found.sum() == 40 and track.other_tracks == 0
