"""Settings of the tracker (as MediaPipe does it: an options dataclass, then one call per mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TrackerOptions"]


@dataclass(frozen=True)
class TrackerOptions:
    """How a dataset is tracked. Every field can be set from a file, the environment or a flag."""

    head_model: str = "openhead"
    """``openhead`` (built in) or the path of a FLAME 2020/2023 pickle you have a licence for."""

    flame_landmarks: str = ""
    """For FLAME: an .npz with ``faces`` (478,) and ``barycentric`` (478, 3) placing MediaPipe's landmarks
    on FLAME's surface (required with FLAME)."""

    num_shape: int = 100
    """Identity components fitted."""

    num_expression: int = 0
    """Expression components fitted; 0 means all the model has."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to compute: ``auto`` takes the GPU when there is one."""

    landmark_steps: int = 300
    """Optimisation steps of the first stage: landmarks and priors only, all frames at once."""

    photometric_steps: tuple[int, ...] = (150, 100)
    """Steps of each coarse-to-fine photometric stage (landmarks + colour + silhouette)."""

    photometric_sizes: tuple[int, ...] = (128, 256)
    """Render size in pixels of each photometric stage (capped at the dataset's size)."""

    batch_frames: int = 64
    """Frames rendered per photometric step (a random subset)."""

    texture_size: int = 256
    """Side of the albedo texture fitted with the photometric stages."""

    learning_rate: float = 0.01
    """Adam's step size for poses and expressions (identity and camera use half of it)."""

    photometric_frame_lr: float = 0.1
    """In the photometric stages, the per-frame parameters' step size as a fraction of
    ``learning_rate`` (only a random subset of frames renders at each step)."""

    w_landmarks: float = 1.0
    """Weight of the landmark reprojection error (robust, in pixels at 512x512)."""

    w_photometric: float = 30.0
    """Weight of the L1 colour error on the face (colours in [0, 1])."""

    w_silhouette: float = 20.0
    """Weight of the face-silhouette error (rendered coverage against the dataset's face labels)."""

    w_smooth_pose: float = 300.0
    """Weight of frame-to-frame acceleration of head rotation, translation and neck."""

    w_smooth_expression: float = 3.0
    """Weight of frame-to-frame change of expression and jaw."""

    w_shape_prior: float = 0.05
    """Weight of the identity prior (coefficients ~ N(0, 1))."""

    w_expression_prior: float = 0.01
    """Weight of the expression prior."""

    w_joint_prior: float = 5.0
    """Weight keeping jaw, neck and eye rotations small (radians squared)."""

    w_landmark_offsets: float = 0.1
    """Weight keeping the person's landmark corrections small (per mm², averaged): they absorb where
    this person's landmarks sit on the mesh differently from the model's registration."""

    focal_init: float = 1.0
    """Initial focal length, as a multiple of the source frame's larger side (about 53 degrees of view)."""

    realtime_steps: int = 12
    """Optimisation steps per frame in real-time mode (warm-started from the previous frame)."""

    realtime_warmup: int = 20
    """Rounds of ``realtime_steps`` on a real-time session's first frame, which starts cold from a
    closed-form pose (every later frame starts from the previous one's answer)."""

    seed: int = 0
    """Seed of the frame sampling in the photometric stages."""

    def __post_init__(self) -> None:
        if len(self.photometric_steps) != len(self.photometric_sizes):
            raise ValueError("photometric_steps and photometric_sizes must have the same length")
        if any(s < 16 for s in self.photometric_sizes) or self.texture_size < 16:
            raise ValueError("render and texture sizes must be at least 16 pixels")
        if self.num_shape < 0 or self.num_expression < 0 or self.batch_frames < 1:
            raise ValueError("num_shape and num_expression must be >= 0, batch_frames >= 1")
