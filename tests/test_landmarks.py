"""The landmark tables: region loops match MediaPipe's edge sets; the 68-point table is anatomical."""

from __future__ import annotations

import numpy as np
import pytest

from neuavatar.landmarks import BROW_LINES, IBUG68_FROM_MEDIAPIPE, NUM_MEDIAPIPE, REGION_LOOPS, ibug68

# iBUG points that mirror each other across the face's midline.
_IBUG_MIRROR = (
    [(k, 16 - k) for k in range(8)] + [(17 + k, 26 - k) for k in range(5)] + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
)
_IBUG_MIDLINE = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)


def _edges(loop):
    return {frozenset((a, b)) for a, b in zip(loop, loop[1:] + loop[:1])}


def test_loops_match_mediapipe_connections():
    from mediapipe.python.solutions import face_mesh_connections as c

    sets = {"face_oval": c.FACEMESH_FACE_OVAL, "left_eye": c.FACEMESH_LEFT_EYE, "right_eye": c.FACEMESH_RIGHT_EYE,
            "left_iris": c.FACEMESH_LEFT_IRIS, "right_iris": c.FACEMESH_RIGHT_IRIS}
    for name, edges in sets.items():
        assert _edges(list(REGION_LOOPS[name])) == {frozenset(e) for e in edges}, name
    lips = _edges(list(REGION_LOOPS["lips_outer"])) | _edges(list(REGION_LOOPS["lips_inner"]))
    assert lips == {frozenset(e) for e in c.FACEMESH_LIPS}
    brows = {frozenset(e) for e in c.FACEMESH_LEFT_EYEBROW | c.FACEMESH_RIGHT_EYEBROW}
    for upper, lower in BROW_LINES.values():
        for line in (upper, lower):
            assert {frozenset(p) for p in zip(line, line[1:])} <= brows


def test_table_shape_and_range():
    assert len(IBUG68_FROM_MEDIAPIPE) == 68 and len(set(IBUG68_FROM_MEDIAPIPE)) == 68
    assert all(0 <= i < NUM_MEDIAPIPE for i in IBUG68_FROM_MEDIAPIPE)
    with pytest.raises(ValueError, match="478"):
        ibug68(np.zeros((10, 3)))


@pytest.fixture(scope="module")
def frontal_landmarks68(tmp_path_factory, make_clip):
    """(T, 68, 3) iBUG points of a near-frontal real clip (the news anchor)."""
    from neuavatar import PreprocessConfig, preprocess_video
    from neuavatar.dataset import Dataset

    from conftest import ANCHOR

    out = tmp_path_factory.mktemp("lmk") / "ds"
    clip = make_clip(ANCHOR, 30, 256)
    ds = Dataset(preprocess_video(clip, out, PreprocessConfig(size=256, min_frames=10, workers=1)).dataset_dir)
    assert ds.valid.all()
    return ds.landmarks68


def test_table_is_mirror_symmetric_on_a_frontal_face(frontal_landmarks68):
    """Mirrored iBUG points sit at mirrored places of a frontal face (within 5% of its width)."""
    # In the face's own frame (origin at the chin, "up" towards the nose bridge) so head roll does not count.
    xy = frontal_landmarks68[..., :2]
    up = xy[:, 27] - xy[:, 8]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    side = np.stack([-up[:, 1], up[:, 0]], -1)
    rel = xy - xy[:, 8:9]
    p = np.stack([(rel * side[:, None]).sum(-1), (rel * up[:, None]).sum(-1)], -1).mean(0)  # (68, 2)
    width = abs(p[16, 0] - p[0, 0])
    for a, b in _IBUG_MIRROR:
        assert abs(p[a, 0] + p[b, 0]) < 0.05 * width, (a, b)
        assert abs(p[a, 1] - p[b, 1]) < 0.05 * width, (a, b)
    for k in _IBUG_MIDLINE:
        assert abs(p[k, 0]) < 0.05 * width, k


def test_table_order_on_a_real_face(frontal_landmarks68):
    """Brows above eyes above nose tip above mouth above chin; left-to-right order kept."""
    p = frontal_landmarks68
    y = p[..., 1].mean(0)
    assert y[19] < y[37] < y[30] < y[51] < y[57] < y[8]  # brow < eye < nose tip < upper lip < lower lip < chin
    assert y[62] < y[66]  # inner upper lip above inner lower lip
    x = p[..., 0].mean(0)
    assert x[0] < x[36] < x[39] < x[27] < x[42] < x[45] < x[16]  # jaw, eye corners, bridge, left to right
    assert x[48] < x[51] < x[54]
