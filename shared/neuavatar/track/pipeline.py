"""The track stage: a dataset becomes a tracking directory (see ``neuavatar.track.tracking``)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuavatar import __version__
from neuavatar.config import to_dict
from neuavatar.dataset import Dataset
from neuavatar.outputs import check_output, staged_dir, tool_versions
from neuavatar.progress import Progress, no_progress
from neuavatar.track.cameras import CropCameras
from neuavatar.track.options import TrackerOptions
from neuavatar.track.report import metrics_plot, overlay_video
from neuavatar.track.tracker import Tracker, TrackResult
from neuavatar.track.tracking import META_FILE, METRICS_FILE, METRICS_PLOT, OVERLAY_FILE, Tracking

__all__ = ["track_dataset", "TrackDatasetResult"]

_RUNTIME_ONLY = ("device",)


@dataclass
class TrackDatasetResult:
    tracking_dir: Path
    reused: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary_text(self) -> str:
        m = self.metrics
        lines = [f"tracking: {self.tracking_dir}" + ("  (already up to date, nothing done)" if self.reused else "")]
        if m:
            lines += [
                f"  landmark error {m['landmark_error_px']:.2f} px at 512x512 (median {m['landmark_error_median_px']:.2f});"
                f" face silhouette IoU {m['silhouette_iou']:.3f}",
                f"  jitter {m['jitter_px_per_frame2']:.2f} px/frame² (detector: {m['detector_jitter_px_per_frame2']:.2f})",
            ]
            if "track_seconds" in m:
                lines.append(f"  tracked {m['frames']} frames in {m['track_seconds']:.1f} s "
                             f"({m['frames'] / m['track_seconds']:.1f} frames/s) on {m['device']}")
            lines.append(f"  check it: {self.tracking_dir / OVERLAY_FILE} and {self.tracking_dir / METRICS_PLOT}")
        return "\n".join(lines)


def track_dataset(dataset_dir: Path, out: Path, options: TrackerOptions | None = None, *, overwrite: bool = False,
                  overlay: bool = True, progress: Progress = no_progress) -> TrackDatasetResult:
    """Track every frame of the dataset at ``dataset_dir`` into the tracking directory ``out``.

    Raises:
        DatasetError: the dataset is missing, incomplete or of another version.
        OutputExistsError: ``out`` holds something else.
        InputError / ConfigError: an unusable head model (e.g. a broken or wrong FLAME file).
    """
    options = options or TrackerOptions()
    dataset = Dataset(dataset_dir)
    dataset.require_masks("tracking")
    identity = {
        "dataset": dataset.meta.get("identity"),
        "options": {k: v for k, v in to_dict(options).items() if k not in _RUNTIME_ONLY},
    }
    if check_output(out, identity=identity, meta_file=META_FILE, kind="tracking", overwrite=overwrite) == "same":
        return TrackDatasetResult(Path(out), reused=True, metrics=json.loads((Path(out) / META_FILE).read_text())
                                  .get("metrics", {}))
    tracker = Tracker.create_from_options(options)
    result = tracker.track_video(dataset, progress=progress)
    with staged_dir(out) as tmp:
        tracking = _tracking(tracker, dataset, result, identity, options)
        tracking.save(tmp)
        state = result.state
        (tmp / METRICS_FILE).write_text(json.dumps({**result.metrics, "history": result.history}, indent=2) + "\n")
        metrics_plot(result.per_frame, result.metrics, dataset.times, tmp / METRICS_PLOT)
        if overlay:
            started = time.perf_counter()
            frames = torch.arange(dataset.num_frames, device=tracker.device)
            k = torch.from_numpy(tracking.arrays["intrinsics"]).to(tracker.device)
            overlay_video(dataset, tracker.model, state.head(frames).detach(), k, tmp / OVERLAY_FILE, progress=progress)
            result.metrics["overlay_seconds"] = time.perf_counter() - started
    return TrackDatasetResult(Path(out), reused=False, metrics=result.metrics)


def _tracking(tracker: Tracker, dataset: Dataset, result: TrackResult, identity: dict,
              options: TrackerOptions) -> Tracking:
    state = result.state
    model = tracker.model
    frames = torch.arange(dataset.num_frames, device=tracker.device)
    src = dataset.meta["source"]
    with torch.no_grad():
        cameras = CropCameras(torch.from_numpy(dataset.crop_to_source).float(), (src["width"], src["height"]),
                              dataset.size).to(tracker.device)
        intrinsics = cameras.intrinsics(state.log_focal, frames, dataset.size)
        arrays = {
            "shape": state.shape[0], "focal_source_px": cameras.focal_source(state.log_focal),
            "expression": state.expression, "jaw": state.jaw, "neck": state.neck, "eyes": state.eyes,
            "rotation": state.rotation, "translation": state.translation, "lighting": state.lighting,
            "intrinsics": intrinsics, "landmark_offsets": state.landmark_offsets,
        }
        arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in arrays.items()}
    arrays["valid"] = dataset.valid.copy()
    arrays.update({k: v.astype(np.float32) for k, v in result.per_frame.items()})
    albedo = (state.albedo.detach()[0].clamp(0, 1) * 255).round().byte().cpu().numpy()
    metrics = {**result.metrics, "track_seconds": result.seconds, "device": str(tracker.device)}
    result.metrics = metrics
    meta = {
        "identity": identity,
        "source": {"path": str(Path(dataset.root).absolute())},
        "head_model": {"name": model.name, "num_shape": model.num_shape, "num_expression": model.num_expression,
                       "expression_names": list(model.expression_names or ()),
                       "fingerprint": _fingerprint(model)},
        "dataset": {"num_frames": dataset.num_frames, "size": dataset.size, "fps": dataset.fps},
        "camera": {"focal_source_px": float(arrays["focal_source_px"]), "source_size": [src["width"], src["height"]],
                   "crop_size": dataset.size},
        "metrics": metrics,
        "options": to_dict(options),
        "tool_versions": {"neuavatar": __version__, **tool_versions("torch", "numpy")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Tracking(arrays=arrays, albedo=albedo, meta=meta)


def _fingerprint(model) -> str:
    """A short hash of the model's template and bases: a tracking belongs to this exact model."""
    h = hashlib.sha256()
    for t in (model.template, model.faces, model.shape_basis, model.expression_basis):
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
