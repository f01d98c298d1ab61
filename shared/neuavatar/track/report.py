"""Pictures of a tracking for a person to check: an overlay video and a plot of the metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from neuavatar.dataset import Dataset
from neuavatar.head.model import HeadModel
from neuavatar.progress import Progress, no_progress
from neuavatar.render import model_to_camera, project
from neuavatar.track.head_render import HeadRenderer
from neuavatar.video import VideoWriter

__all__ = ["overlay_video", "metrics_plot"]


@torch.no_grad()
def overlay_video(dataset: Dataset, model: HeadModel, params, intrinsics: torch.Tensor, path: Path, *,
                  batch: int = 32, progress: Progress = no_progress) -> Path:
    """Write an H.264 video: each frame with the detected landmarks (green) and the fitted ones
    (red), beside the frame with the fitted head drawn over it as a grey shaded mesh.

    Args:
        params: HeadParams of every frame (T). intrinsics: (T, 4) in the dataset's crop pixels.
    """
    device = intrinsics.device
    renderer = HeadRenderer(model)
    size, n = dataset.size, dataset.num_frames
    batches = [list(range(start, min(n, start + batch))) for start in range(0, n, batch)]

    def load(ids: list[int]) -> np.ndarray:
        return np.stack([dataset.image(i) for i in ids])  # (B, S, S, 3) uint8

    def draw(image: np.ndarray, detected: np.ndarray | None, fitted: np.ndarray) -> np.ndarray:
        left = image.copy()
        if detected is not None:
            for x, y in detected:
                cv2.circle(left, (int(x), int(y)), 1, (0, 230, 0), -1)
        for x, y in fitted:
            cv2.circle(left, (int(x), int(y)), 1, (255, 40, 40), -1)
        return left

    # Decoding the dataset's images and drawing the points run in threads (OpenCV releases the
    # GIL) while the head renders; the blend runs on the render's device.
    with ThreadPoolExecutor(4) as pool, VideoWriter(path, dataset.fps, crf=20) as writer:
        pending = pool.submit(load, batches[0]) if batches else None
        for b, ids in enumerate(batches):
            frames = torch.tensor(ids, device=device)
            head = model(params[frames])
            out = renderer(head.vertices, intrinsics[frames], size, lighting=_headlight(len(ids), device))
            fitted = project(model_to_camera(model.landmarks(head.vertices)), intrinsics[frames]).cpu().numpy()
            images = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(load, batches[b + 1])
            # the rendered colour is already multiplied by the coverage: blend it at 60 %
            base = torch.from_numpy(images).to(device).float()
            drawn = (base * (1 - 0.6 * out.mask) + 0.6 * 255 * out.color.clamp(0, 1)).clamp(0, 255).byte().cpu().numpy()
            lefts = pool.map(draw, images, [dataset.landmarks[i, :, :2] if dataset.valid[i] else None for i in ids],
                             fitted)
            for left, right in zip(lefts, drawn):
                writer.write(np.concatenate([left, right], 1))
            progress("overlay", ids[-1] + 1, n)
    return path


def _headlight(batch: int, device: torch.device) -> torch.Tensor:
    """(B, 9, 3) SH lighting: ambient plus a light at the camera, so the mesh's shape reads."""
    light = torch.zeros(batch, 9, 3, device=device)
    light[:, 0] = 0.45 / 0.282095  # constant term
    light[:, 2] = -0.55 / 0.488603  # Y_1,0 ~ z: lit where the normal faces the camera (-z)
    return light


def metrics_plot(per_frame: dict[str, np.ndarray], metrics: dict[str, float], times: np.ndarray, path: Path) -> Path:
    """Plot landmark error and silhouette IoU per frame, and the jitter against the detector's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), constrained_layout=True)
    axes[0].plot(times, per_frame["landmark_error_px"], color="C3", lw=1)
    axes[0].axhline(metrics["landmark_error_px"], color="C3", ls="--", lw=1,
                    label=f"mean {metrics['landmark_error_px']:.2f} px")
    axes[0].set_ylabel("landmark error\n(px at 512x512)")
    axes[0].legend(loc="best", fontsize=8)
    axes[1].plot(times, per_frame["silhouette_iou"], color="C0", lw=1)
    axes[1].axhline(metrics["silhouette_iou"], color="C0", ls="--", lw=1, label=f"mean {metrics['silhouette_iou']:.3f}")
    axes[1].set_ylabel("face silhouette IoU")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(loc="best", fontsize=8)
    names = ["detector (raw)", "tracking"]
    values = [metrics["detector_jitter_px_per_frame2"], metrics["jitter_px_per_frame2"]]
    axes[2].barh(names, values, color=["0.6", "C2"])
    for y, v in enumerate(values):
        axes[2].text(v, y, f" {v:.2f}", va="center")
    axes[2].set_xlabel("landmark jitter: mean acceleration (px / frame² at 512x512)")
    fig.suptitle(f"tracking: {metrics['valid_frames']} of {metrics['frames']} frames")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
