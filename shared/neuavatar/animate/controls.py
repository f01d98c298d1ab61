"""Manual control of an avatar: expression, jaw, neck, eyes, head pose and view point, in units a
person can reason about (expression coefficients, degrees), turned into head-model parameters.

Angles follow the head's model space (x to the subject's left as seen in the image, y up, z towards
the camera): yaw turns about y, pitch about x (positive: chin, or gaze, down), roll about z. Values outside a
control's range are clamped, and the clamp is reported, never silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from neuavatar.head.lbs import axis_angle_to_matrix
from neuavatar.head.model import HeadParams
from neuavatar.track.init import matrix_to_axis_angle

__all__ = ["Controls", "RANGES", "euler_to_matrix"]

# (low, high) of every scalar control; expression coefficients share one range.
RANGES: dict[str, tuple[float, float]] = {
    "expression": (-3.0, 3.0),
    "jaw_open": (-5.0, 35.0), "jaw_side": (-10.0, 10.0),
    "neck_yaw": (-40.0, 40.0), "neck_pitch": (-30.0, 30.0), "neck_roll": (-30.0, 30.0),
    "eyes_yaw": (-30.0, 30.0), "eyes_pitch": (-25.0, 25.0),
    "head_yaw": (-60.0, 60.0), "head_pitch": (-40.0, 40.0), "head_roll": (-40.0, 40.0),
    "camera_yaw": (-90.0, 90.0), "camera_pitch": (-45.0, 45.0), "zoom": (0.5, 2.0),
}


def euler_to_matrix(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """(..., 3, 3) R = R_y(yaw) R_x(pitch) R_z(roll), angles in radians."""
    zero = torch.zeros_like(yaw)
    return (axis_angle_to_matrix(torch.stack([zero, yaw, zero], -1))
            @ axis_angle_to_matrix(torch.stack([pitch, zero, zero], -1))
            @ axis_angle_to_matrix(torch.stack([zero, zero, roll], -1)))


@dataclass(frozen=True)
class Controls:
    """One pose of the avatar. Expression coefficients are the head model's (about N(0, 1) each);
    every angle is in degrees; ``zoom`` scales the image (2: the head twice as large)."""

    expression: tuple[float, ...] = ()
    """The first len(expression) expression coefficients; the rest are 0."""
    jaw_open: float = 0.0
    """Jaw opening, degrees."""
    jaw_side: float = 0.0
    """Jaw sideways, degrees."""
    neck_yaw: float = 0.0
    """Neck turn, degrees."""
    neck_pitch: float = 0.0
    """Neck nod (positive: chin down), degrees."""
    neck_roll: float = 0.0
    """Neck tilt, degrees."""
    eyes_yaw: float = 0.0
    """Gaze left/right, degrees."""
    eyes_pitch: float = 0.0
    """Gaze (positive: down), degrees."""
    head_yaw: float = 0.0
    """Head turn (whole head and neck), degrees."""
    head_pitch: float = 0.0
    """Head nod (positive: chin down), degrees."""
    head_roll: float = 0.0
    """Head tilt, degrees."""
    camera_yaw: float = 0.0
    """The view point, orbiting the head (a turn of the camera, not of the head), degrees."""
    camera_pitch: float = 0.0
    """The view point from above (positive) or below, degrees."""
    zoom: float = 1.0
    """Image scale (2: the head twice as large)."""

    def clamped(self) -> tuple[Controls, list[str]]:
        """These controls within :data:`RANGES`, and a message for each value that was moved."""
        notes, values = [], {}
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = RANGES[f.name]
            if f.name == "expression":
                inside = tuple(min(max(float(v), low), high) for v in value)
                for i, (a, b) in enumerate(zip(value, inside)):
                    if a != b:
                        notes.append(f"expression[{i}] = {a:g} is outside [{low:g}, {high:g}]: using {b:g}")
                values[f.name] = inside
            else:
                if not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number, got {value}")
                inside = min(max(float(value), low), high)
                if inside != value:
                    notes.append(f"{f.name} = {value:g} is outside [{low:g}, {high:g}]: using {inside:g}")
                values[f.name] = inside
        if any(not math.isfinite(v) for v in self.expression):
            raise ValueError("expression coefficients must be finite numbers")
        return Controls(**values), notes

    def to_params(self, rest: HeadParams, intrinsics: Tensor) -> tuple[HeadParams, Tensor, Tensor]:
        """Head parameters (1) from the avatar's ``rest`` parameters (1), its camera ``intrinsics``
        (1, 4) zoomed, and the (1, 3, 3) view rotation (the camera's orbit about the head).

        Raises:
            ValueError: more expression coefficients than the head model has.
        """
        num_expression = rest.expression.shape[-1]
        if len(self.expression) > num_expression:
            raise ValueError(f"this avatar's head model has {num_expression} expression coefficients, "
                             f"got {len(self.expression)}")
        device = rest.expression.device
        rad = lambda *deg: torch.tensor([math.radians(d) for d in deg], device=device)  # noqa: E731
        expression = torch.zeros(1, num_expression, device=device)
        expression[0, : len(self.expression)] = torch.tensor(self.expression, device=device)
        jaw = torch.stack([rad(self.jaw_open)[0], rad(self.jaw_side)[0], torch.zeros((), device=device)])[None]
        neck = matrix_to_axis_angle(euler_to_matrix(*rad(self.neck_yaw, self.neck_pitch, self.neck_roll)))[None]
        eye = matrix_to_axis_angle(euler_to_matrix(*rad(self.eyes_yaw, self.eyes_pitch, 0.0)))
        turn = euler_to_matrix(*rad(self.head_yaw, self.head_pitch, self.head_roll))
        rotation = matrix_to_axis_angle(turn @ axis_angle_to_matrix(rest.rotation[0]))[None]
        params = HeadParams(shape=rest.shape, expression=expression, jaw=jaw, neck=neck,
                            eyes=eye.expand(1, 2, 3).clone(), rotation=rotation, translation=rest.translation.clone())
        k = intrinsics.clone()
        k[:, :2] *= self.zoom
        view = euler_to_matrix(*rad(self.camera_yaw, self.camera_pitch, 0.0))[None]
        return params, k, view
