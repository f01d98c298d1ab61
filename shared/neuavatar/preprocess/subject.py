"""Pick the one person a dataset is about, when a video shows several faces.

Face detections are linked over time into tracks by box overlap; the main subject is the track
with the most face area over the video (large and present most of the time). Its detection is the
frame's face; frames where it was not detected are reported as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detection", "SubjectTrack", "select_subject"]


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in source-frame pixels (continuous coordinates)."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    keypoints: np.ndarray  # (6, 2) right eye, left eye, nose tip, mouth, right ear, left ear


@dataclass
class SubjectTrack:
    """The main subject's face per frame; NaN / 0 where it was not found."""

    boxes: np.ndarray  # (T, 4) x0, y0, x1, y1, NaN when missing
    scores: np.ndarray  # (T,) detection confidence, 0 when missing
    faces_per_frame: np.ndarray  # (T,) number of faces detected in each frame
    other_tracks: int = 0  # other people seen in a noticeable share of the video
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> np.ndarray:
        """(T,) bool: the subject was detected in the frame."""
        return ~np.isnan(self.boxes[:, 0])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def select_subject(detections: list[list[Detection]], *, max_gap_frames: int = 30, min_iou: float = 0.2) -> SubjectTrack:
    """Link per-frame detections into tracks and keep the one with the most face area.

    Args:
        detections: for each frame, the faces found in it.
        max_gap_frames: a track may miss this many frames and still be continued.
        min_iou: box overlap needed to continue a track.
    """
    n = len(detections)
    tracks: list[dict] = []  # each: last_box, last_frame, members {frame: Detection}
    for t, dets in enumerate(detections):
        free = list(range(len(tracks)))
        for d in sorted(dets, key=lambda d: -d.score):
            best, best_iou = None, min_iou
            for k in free:
                tr = tracks[k]
                if t - tr["last_frame"] > max_gap_frames:
                    continue
                iou = _iou(tr["last_box"], d.box)
                if iou >= best_iou:
                    best, best_iou = k, iou
            if best is None:
                tracks.append({"last_box": d.box, "last_frame": t, "members": {t: d}})
            else:
                free.remove(best)
                tracks[best].update(last_box=d.box, last_frame=t)
                tracks[best]["members"][t] = d

    boxes = np.full((n, 4), np.nan, np.float32)
    scores = np.zeros(n, np.float32)
    faces = np.array([len(d) for d in detections], np.int32)
    if not tracks:
        return SubjectTrack(boxes, scores, faces)

    def weight(tr: dict) -> float:
        return sum(float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])) * d.score for d in tr["members"].values())

    tracks.sort(key=weight, reverse=True)
    main = tracks[0]
    # Tracks that never overlap the main one in time and start near where it stopped are the same
    # person after a detection gap longer than max_gap_frames: merge them.
    for tr in tracks[1:]:
        if set(tr["members"]).isdisjoint(main["members"]) and _near(main, tr):
            main["members"].update(tr["members"])
            tr["members"] = {}
    for t, d in main["members"].items():
        boxes[t] = d.box
        scores[t] = d.score

    notes = []
    main_area = np.nanmedian((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    others = [tr for tr in tracks[1:] if len(tr["members"]) >= max(3, 0.05 * n)]
    if others:
        other_area = max(np.median([(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in tr["members"].values()])
                         for tr in others)
        multi = int((faces > 1).sum())
        notes.append(
            f"several faces: {len(others) + 1} people appear ({multi} frames show more than one face); "
            f"following the main subject, whose face is {np.sqrt(main_area):.0f} px wide and present in "
            f"{len(main['members'])} of {n} frames (the next largest face is {np.sqrt(other_area):.0f} px)"
        )
    return SubjectTrack(boxes, scores, faces, other_tracks=len(others), notes=notes)


def _near(main: dict, other: dict) -> bool:
    """``other`` begins or ends close (in space) to where ``main`` is at the nearest frame in time."""
    main_frames = np.array(sorted(main["members"]))
    for t in (min(other["members"]), max(other["members"])):
        nearest = main_frames[np.argmin(np.abs(main_frames - t))]
        a, b = main["members"][nearest].box, other["members"][t].box
        size = max(a[2] - a[0], b[2] - b[0])
        centre_dist = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
        if centre_dist < 0.5 * size and 0.5 < (b[2] - b[0]) / (a[2] - a[0]) < 2.0:
            return True
    return False
