"""The avatar's and its training's settings: one typed config, per-stage tuples and schedules.

Training runs three stages, as in Neural Head Avatars: ``geometry`` (the mesh's offsets, from
silhouettes), ``appearance`` (the Gaussians, geometry frozen) and ``joint`` (both). A setting given
as a 3-tuple holds one value per stage. A schedule is a tuple of ``(value, epoch)`` fix-points,
interpolated linearly between them and held constant outside (an epoch is one pass over the
training frames, counted across all stages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["AvatarConfig", "STAGES", "schedule_value"]

STAGES = ("geometry", "appearance", "joint")

Stage3 = tuple[float, float, float]
Schedule = tuple[tuple[float, float], ...]


def schedule_value(schedule: Schedule, epoch: float) -> float:
    """The value of ``schedule`` (fix-points ``(value, epoch)``, epochs increasing) at ``epoch``."""
    values, epochs = zip(*schedule)
    return float(np.interp(epoch, epochs, values))


@dataclass(frozen=True)
class AvatarConfig:
    """How an avatar is built and trained. Every field can be set from a file, the environment or a flag."""

    # --- the avatar -----------------------------------------------------------------------------
    size: int = 512
    """Training and render resolution (square, pixels); the dataset's crops are resized to it."""

    gaussians_per_triangle: int = 10
    """Gaussians bound to each triangle of the head mesh at the start."""

    offset_rank: int = 16
    """Rank of the expression- and pose-conditioned vertex offsets (0: static offsets only)."""

    colour_rank: int = 8
    """Rank of the expression-conditioned colour correction of each Gaussian (0: none)."""

    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour behind the avatar, RGB in [0, 1]; targets are composited over it with their mask."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: ``auto`` takes the GPU when there is one."""

    render_backend: Literal["auto", "torch", "gsplat"] = "auto"
    """Gaussian rasterizer: gsplat on CUDA, the pure-torch reference elsewhere."""

    # --- the stages (geometry, appearance, joint) -------------------------------------------------
    steps: tuple[int, int, int] = (200, 1500, 1000)
    """Optimisation steps of each stage."""

    batch_size: tuple[int, int, int] = (8, 8, 8)
    """Frames per step in each stage."""

    lr_offsets: Stage3 = (3e-3, 0.0, 3e-4)
    """Adam step size of the vertex offsets (metres per step, roughly): the static ones and those
    following the expression."""

    lr_pose_offsets: Stage3 = (3e-3, 0.0, 3e-4)
    """Step size of the offsets linear in the pose code (neck, head tilt); 0 keeps them at zero.
    They fit each training frame's hair outline from its pose and extrapolate on poses outside the
    training range (the d6 clip's held-out frames roll the head up to 11°, its training frames up
    to 5°). There, at 128² (cpu-smoke), training with 0 raised held-out PSNR by 0.3 and 0.65 dB
    (seeds 0 and 1) and lowered the training frames' by 0.1-0.4 dB."""

    lr_position: Stage3 = (0.0, 5e-3, 2e-3)
    """Step size of the Gaussians' positions (in units of their triangle's size)."""

    lr_colour: Stage3 = (0.0, 2.5e-2, 1e-2)
    """Step size of the Gaussians' colours (logits) and colour corrections."""

    lr_opacity: Stage3 = (0.0, 5e-2, 2e-2)
    """Step size of the Gaussians' opacities (logits)."""

    lr_scale: Stage3 = (0.0, 5e-3, 2e-3)
    """Step size of the Gaussians' log scales."""

    lr_rotation: Stage3 = (0.0, 1e-3, 5e-4)
    """Step size of the Gaussians' rotations (quaternions)."""

    lr_tracking: Stage3 = (0.0, 0.0, 0.0)
    """Step size of the per-frame corrections of the tracking (``refine``) on training frames."""

    refine: tuple[str, ...] = ("rotation", "translation")
    """Head parameters the avatar refines per frame (``lr_tracking`` on training frames,
    ``eval_refine_steps`` on held-out ones): any of expression, jaw, neck, eyes, rotation, translation."""

    # --- losses: per-stage weights ------------------------------------------------------------
    w_l1: Stage3 = (0.0, 0.8, 0.8)
    """Weight of the L1 colour error (the geometry stage renders no colour)."""

    w_ssim: Stage3 = (0.0, 0.2, 0.2)
    """Weight of the structural dissimilarity (1 - SSIM) / 2."""

    w_normal: Stage3 = (0.05, 0.0, 0.05)
    """Weight of normal consistency (neighbouring triangles' normals agree) on the offset mesh."""

    w_offset: Stage3 = (0.003, 0.0, 0.003)
    """Weight keeping the offsets small, per cm², larger on the face (which the tracker fitted)."""

    w_position: Stage3 = (0.0, 0.01, 0.01)
    """Weight pulling Gaussians towards their triangle (beyond one triangle size)."""

    w_scale: Stage3 = (0.0, 0.01, 0.01)
    """Weight against Gaussians much larger than their triangle (beyond ``max_scale``)."""

    w_opacity: Stage3 = (0.0, 0.0, 0.001)
    """Weight pushing opacities to 0 or 1 (binary entropy), so no half-transparent floaters stay."""

    mouth_weight: float = 10.0
    """How many times an L1 error counts on the lips and inside the mouth (its labels): they are a
    few hundred pixels, yet a person looks at them first (FlashAvatar weights its mouth ×40)."""

    max_scale: float = 0.6
    """A Gaussian's scale (in units of its triangle's size) above which ``w_scale`` applies."""

    # --- losses: schedules over epochs ----------------------------------------------------------
    w_silhouette: Schedule = ((2.0, 0.0), (0.5, 2.0), (0.2, 10.0))
    """Silhouette error (rendered coverage against the avatar mask) over epochs."""

    w_semantic_hair: Schedule = ((0.5, 0.0), (0.1, 5.0))
    """Error of not covering the pixels labelled hair, over epochs (pulls the scalp onto the hair)."""

    w_laplacian: Schedule = ((1.0, 0.0), (0.3, 2.0))
    """Laplacian smoothness of the vertex offsets (per cm²), over epochs."""

    # --- book-keeping ------------------------------------------------------------------------------
    checkpoint_every: int = 500
    """Steps between resumable checkpoints (and at every stage's end)."""

    eval_frames: int = 0
    """Validation frames evaluated (0: all of them)."""

    eval_refine_steps: int = 50
    """Also evaluate with each validation frame's ``refine`` parameters fitted to its image, the
    avatar frozen, in this many steps (0: not); reported as ``psnr_refined`` and so on."""

    eval_refine_lr: float = 2e-3
    """Adam step size of that fit."""

    reenact_frames: int = 250
    """Validation frames in the reenactment clip (0: none)."""

    seed: int = 0
    """Seed of frame sampling and initialisation."""

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError("size must be at least 16 pixels")
        if self.gaussians_per_triangle < 1:
            raise ValueError("gaussians_per_triangle must be >= 1")
        if any(s < 0 for s in self.steps) or any(b < 1 for b in self.batch_size):
            raise ValueError("steps must be >= 0 and batch_size >= 1 in every stage")
        for name in ("w_silhouette", "w_semantic_hair", "w_laplacian"):
            points = getattr(self, name)
            if not points or any(b[1] < a[1] for a, b in zip(points, points[1:])):
                raise ValueError(f"{name}: give (value, epoch) fix-points with increasing epochs")
        from neuavatar.avatar.refine import REFINABLE

        if set(self.refine) - set(REFINABLE):
            raise ValueError(f"refine: choose from {', '.join(REFINABLE)}, got {list(self.refine)}")
        if self.mouth_weight < 0:
            raise ValueError("mouth_weight must be >= 0")
        if any(not 0 <= c <= 1 for c in self.background):
            raise ValueError("background colours must lie in [0, 1]")

    def stage(self, name: str, index: int) -> float:
        """Per-stage setting ``name`` in stage ``index`` (0 geometry, 1 appearance, 2 joint)."""
        return getattr(self, name)[index]
