"""The track stage: per-frame head parameters, camera, lighting and albedo from a dataset."""

from neuavatar.track.options import TrackerOptions

__all__ = ["TrackerOptions", "Tracker", "RealtimeTracker", "Tracking", "track_dataset", "TrackDatasetResult"]


def __getattr__(name: str):
    # torch and the renderer load on first use
    if name in ("Tracker", "RealtimeTracker"):
        from neuavatar.track import tracker

        return getattr(tracker, name)
    if name == "Tracking":
        from neuavatar.track.tracking import Tracking

        return Tracking
    if name in ("track_dataset", "TrackDatasetResult"):
        from neuavatar.track import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'neuavatar.track' has no attribute {name!r}")
