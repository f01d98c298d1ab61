"""Whole-pipeline settings for ``neuavatar run``, and the named presets.

``RunConfig`` has one section per stage; later stages add theirs. A config file for ``run`` uses
the same sections (``[preprocess]``, ...), and so do environment variables
(``NEUAVATAR_PREPROCESS_SIZE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neuavatar.avatar.config import AvatarConfig
from neuavatar.preprocess.options import PreprocessConfig
from neuavatar.track.options import TrackerOptions

__all__ = ["RunConfig", "PRESETS", "DEFAULT_PRESET"]


@dataclass(frozen=True)
class RunConfig:
    """Settings of every stage that ``neuavatar run`` chains."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """Video -> dataset."""

    track: TrackerOptions = field(default_factory=TrackerOptions)
    """Dataset -> tracking (head parameters per frame)."""

    train: AvatarConfig = field(default_factory=AvatarConfig)
    """Dataset + tracking -> avatar."""


PRESETS: dict[str, RunConfig] = {
    # Full quality, meant for a GPU host.
    "gpu": RunConfig(),
    # What CI and a machine without a GPU run end to end: small images, few iterations.
    "cpu-smoke": RunConfig(
        preprocess=PreprocessConfig(size=128, contact_sheet_frames=8),
        track=TrackerOptions(device="cpu", landmark_steps=200, photometric_steps=(60,), photometric_sizes=(128,),
                             batch_frames=16, texture_size=128),
        train=AvatarConfig(size=128, gaussians_per_triangle=1, device="cpu", steps=(100, 500, 200),
                           batch_size=(4, 2, 2), checkpoint_every=200, eval_frames=24, reenact_frames=48,
                           eval_refine_steps=0),
    ),
}
DEFAULT_PRESET = "gpu"
