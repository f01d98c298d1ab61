"""Video-to-video reenactment: a driving video's motion, transferred to an avatar.

The driver is preprocessed (crop, landmarks) and tracked from its landmarks, every frame at once
(the offline tracker's first stage, in the avatar's own head model). Motion transfers relatively, so a different
face never leaks into the avatar:

    ψ_out = ψ_avatar_rest + (ψ_t − ψ_driver_rest)                  (expression, jaw, neck, eyes)
    R_out = (R_t R_driver_restᵀ) R_avatar_rest                    (head rotation)
    t_out = t_avatar_rest + (t_t − t_driver_rest) · z_avatar / z_driver

with each person's rest the per-parameter median over their frames. The expression then passes a
soft clamp (``MotionLimits``): each coefficient may leave the range the avatar's training frames
spanned by as much again, then saturates smoothly, so a driver's grimace beyond anything the
avatar saw degrades gracefully instead of tearing the face; the eyelids may always close fully,
and never further. ``strength`` scales the expression and jaw motion (1: as the driver moves).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from neuavatar.animate.renderer import AvatarRenderer
from neuavatar.avatar.model import Avatar
from neuavatar.dataset import Dataset
from neuavatar.head.lbs import axis_angle_to_matrix
from neuavatar.head.model import HeadParams
from neuavatar.progress import Progress, no_progress
from neuavatar.track.init import matrix_to_axis_angle
from neuavatar.video import VideoWriter

__all__ = ["DriverMotion", "MotionLimits", "driver_preprocessor", "track_driver", "transfer_motion", "reenact_video",
           "ReenactResult"]

ADDITIVE = ("expression", "jaw", "neck", "eyes")
# Landmark steps of a driver's tracking: on the H100, 250 frames fit to 1.04 px (at 512²) in 150
# steps and 1.00 px in 300 (the offline default), 0.9 s against 1.4 s.
DRIVER_STEPS = 150


@dataclass
class DriverMotion:
    """A tracked driving video: parameters (T) in the avatar's head model, which frames had a face,
    the driver's crops (T, S, S, 3) uint8, its frame rate, and how well the tracking fits."""

    params: HeadParams
    valid: np.ndarray
    crops: np.ndarray
    fps: float
    landmark_error_px: float  # how far the fitted landmarks lie from the detected ones, mean, pixels at 512²


@dataclass
class ReenactResult:
    path: Path
    frames: int
    seconds: dict[str, float]  # per step: preprocess, track, render (and encode), total
    driver_landmark_error_px: float = float("nan")  # the driver's tracking: landmarks off by, pixels at 512²


@dataclass(frozen=True)
class MotionLimits:
    """Soft bounds (E,) of the expression coefficients an avatar is driven with (``apply``)."""

    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def of(cls, avatar: Avatar, widen: float = 1.0, margin: float = 0.3) -> MotionLimits | None:
        """The avatar's training range of each coefficient, widened by ``widen`` times itself plus
        ``margin`` on both sides; eye blinks (where the head model names them) end at 1, a closed eye.
        None for an avatar without a training range (saved before it existed)."""
        e = avatar.head.num_expression
        low, high = avatar.code_low[:e], avatar.code_high[:e]
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            return None
        spread = high - low
        low, high = low - widen * spread - margin, high + widen * spread + margin
        names = avatar.head.expression_names or ()
        blinks = [i for i, n in enumerate(names) if n.startswith("eyeBlink")]
        high[blinks] = 1.0  # ARKit's blink: 1 closes the eye; further, the lid sinks through the lower one
        return cls(low, high)

    def apply(self, expression: torch.Tensor) -> torch.Tensor:
        """(T, E) ``expression`` inside (low, high): unchanged in the middle, saturating smoothly
        (tanh) over the outer quarter of the range on each side."""
        knee = 0.25 * (self.high - self.low)
        upper, lower = self.high - knee, self.low + knee
        above = upper + knee * torch.tanh((expression - upper) / knee)
        below = lower - knee * torch.tanh((lower - expression) / knee)
        out = torch.where(expression > upper, above, torch.where(expression < lower, below, expression))
        return torch.minimum(torch.maximum(out, self.low), self.high)  # tanh(x) rounds to 1 far out


def transfer_motion(driver: HeadParams, driver_rest: HeadParams, avatar_rest: HeadParams, *,
                    limits: MotionLimits | None = None, strength: float = 1.0) -> HeadParams:
    """The driver's motion (T) relative to its rest (1), applied to the avatar's rest (1); the
    expression and jaw motion scaled by ``strength``, the expression held inside ``limits``."""
    t = driver.batch_size
    scale = {"expression": strength, "jaw": strength}
    out = {k: getattr(avatar_rest, k) + scale.get(k, 1.0) * (getattr(driver, k) - getattr(driver_rest, k))
           for k in ADDITIVE}
    if limits is not None:
        out["expression"] = limits.apply(out["expression"])
    turn = axis_angle_to_matrix(driver.rotation) @ axis_angle_to_matrix(driver_rest.rotation).transpose(1, 2)
    out["rotation"] = matrix_to_axis_angle(turn @ axis_angle_to_matrix(avatar_rest.rotation))
    depth = (avatar_rest.translation[:, 2] / driver_rest.translation[:, 2]).abs()
    out["translation"] = avatar_rest.translation + (driver.translation - driver_rest.translation) * depth[:, None]
    return HeadParams(shape=avatar_rest.shape.expand(t, -1), **out)


def driver_preprocessor(size: int, in_process: bool = False):
    """A :class:`~neuavatar.preprocess.Preprocessor` for driving videos: crops and landmarks only, at
    ``size``. Its worker processes start once (seconds: each loads MediaPipe's models), so a service
    keeps it for every reenactment (close it when done); ``in_process`` runs the models on threads
    of this process instead, which is quicker for a one-off short clip."""
    from neuavatar.preprocess import PreprocessConfig, Preprocessor

    return Preprocessor(PreprocessConfig(size=size, min_frames=2, val_fraction=0.0, contact_sheet_frames=0,
                                         annotate="landmarks", in_process=in_process))


def track_driver(renderer: AvatarRenderer, video: Path, work: Path, progress: Progress = no_progress,
                 preprocessor=None, render_batch: int = 16) -> tuple[DriverMotion, dict[str, float]]:
    """Preprocess ``video`` into ``work`` (with ``preprocessor`` from :func:`driver_preprocessor`, or a
    new one) and track it from its landmarks with the avatar's head model. On a GPU, the renderer
    (at ``render_batch`` frames) and the tracker warm up meanwhile.

    Raises:
        InputError: the video cannot be read or shows no usable face.
    """
    seconds = {}
    started = time.perf_counter()
    tracker = renderer.tracker()
    own = preprocessor is None
    preprocessor = driver_preprocessor(renderer.size, in_process=True) if own else preprocessor
    with ThreadPoolExecutor(1, thread_name_prefix="warm-up") as pool:
        # A process's first render and first fit on a GPU pay seconds (CUDA loads kernels, graphs
        # are captured): here they are paid while the CPU preprocesses the driver.
        warming = pool.submit(_warm_up, renderer, tracker, render_batch) if renderer.device.type == "cuda" else None
        try:
            dataset = Dataset(preprocessor.process(video, work / "driver", progress=progress).dataset_dir)
        finally:
            if own:
                preprocessor.close()
        if warming is not None:
            warming.result()
    seconds["preprocess"] = time.perf_counter() - started
    timing = dataset.meta["summary"]["timing"]
    seconds["preprocess_startup"] = timing["startup_seconds"]  # starting workers, until the first frame is done

    started = time.perf_counter()
    with torch.enable_grad():
        tracked = tracker.track_landmarks(dataset, steps=DRIVER_STEPS,
                                          progress=lambda step, done, total: progress("track driver", done, total))
    params = tracked.state.head().detach()
    seconds["track"] = time.perf_counter() - started
    crops = dataset.resized(renderer.size, ("image",))["image"]
    return DriverMotion(params=params, valid=dataset.valid, crops=crops, fps=dataset.fps,
                        landmark_error_px=tracked.metrics["landmark_error_px"]), seconds


def _warm_up(renderer: AvatarRenderer, tracker, batch: int) -> None:
    renderer.render(renderer.params(batch))
    tracker.warm_up()


def reenact_video(renderer: AvatarRenderer, video: Path, out: Path, *, side_by_side: bool = False, batch: int = 16,
                  crf: int = 18, progress: Progress = no_progress, preprocessor=None, strength: float = 1.0
                  ) -> ReenactResult:
    """Write ``out`` (H.264): the avatar performing ``video``'s expressions and head motion, beside
    the driver's crop when ``side_by_side``. ``out`` appears complete or not at all. ``preprocessor``:
    a long-lived :func:`driver_preprocessor` (else one is started and stopped for this video).
    ``strength``: see :func:`transfer_motion`.

    Raises:
        InputError: the driving video cannot be read or shows no usable face.
    """
    out = Path(out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="neuavatar-reenact-") as tmp:
        motion, seconds = track_driver(renderer, Path(video), Path(tmp), progress, preprocessor, render_batch=batch)
        render_started = time.perf_counter()
        params = transfer_motion(motion.params, motion.params.median(), renderer.rest,
                                 limits=MotionLimits.of(renderer.avatar), strength=strength)
        total = params.batch_size
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".{out.stem}.partial{out.suffix or '.mp4'}"
        try:
            # x264's "veryfast": 2.5x quicker than its default "medium" here, files no larger at crf 18
            with VideoWriter(partial, motion.fps, crf=crf, options={"preset": "veryfast"}) as writer:
                for start in range(0, total, batch):
                    ids = slice(start, min(start + batch, total))
                    frames = renderer.render_uint8(params[ids])
                    for k, frame in enumerate(frames):
                        if side_by_side:
                            crop = motion.crops[start + k]
                            if not motion.valid[start + k]:  # no face here: say so on the driver's side
                                crop = cv2.putText(crop.copy(), "no face", (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                                                   (255, 0, 0), 2)
                            frame = np.concatenate([crop, frame], 1)
                        writer.write(frame)
                    progress("render", ids.stop, total)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    seconds["render"] = time.perf_counter() - render_started
    seconds["total"] = time.perf_counter() - started
    return ReenactResult(path=out, frames=total, seconds=seconds, driver_landmark_error_px=motion.landmark_error_px)
