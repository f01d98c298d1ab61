"""Rendering a trained avatar: from head parameters or manual controls to frames, one or many at a time.

The renderer holds the avatar on its device and the person's rest pose and camera (from training).
Everything it returns is on the host as uint8 RGB unless asked otherwise; everything it takes is
checked (sizes, finite values), because it sits behind the CLI, the studio and the streaming API.
"""

from __future__ import annotations

import threading
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from neuavatar.animate.controls import Controls
from neuavatar.animate.graphs import GraphedPlacement
from neuavatar.avatar.model import splat
from neuavatar.avatar.pipeline import load_avatar
from neuavatar.config import resolve_device
from neuavatar.errors import CheckpointError
from neuavatar.head.model import HeadParams

__all__ = ["AvatarRenderer", "PARAM_SIZES", "encode_jpeg"]

# Parameters a caller may set per frame, with their trailing shapes (E: expression coefficients).
PARAM_SIZES = {"expression": ("E",), "jaw": (3,), "neck": (3,), "eyes": (2, 3), "rotation": (3,), "translation": (3,)}


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """A JPEG file's bytes for an (H, W, 3) uint8 RGB frame."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


class AvatarRenderer:
    """A trained avatar, ready to render.

    Args:
        path: the avatar directory (or its ``avatar.pt``).
        device: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda``.
        backend: the Gaussian rasterizer (``auto``: gsplat on CUDA, pure torch elsewhere).
        head_model: the FLAME file, for a FLAME avatar whose file has moved.
        cuda_graphs: on CUDA, replay the work before the rasterizer from CUDA graphs (see
            :mod:`neuavatar.animate.graphs`); off, every kernel is launched one by one.
        compile: with ``cuda_graphs``, also fuse the work with ``torch.compile`` (slow first render
            of each batch size).

    Renders from several threads take turns; :meth:`batcher` joins them into batches instead.
    """

    def __init__(self, path: Path, device: str = "auto", backend: str = "auto", head_model: str | None = None,
                 cuda_graphs: bool = True, compile: bool = False):
        self.device = resolve_device(device)
        self.avatar, info = load_avatar(Path(path), self.device, head_model)
        self.backend = backend
        config = info["config"]
        self.size = int(config["size"])
        self.background = torch.tensor(config["background"], dtype=torch.float32, device=self.device)
        rest = info.get("rest")
        if rest is None:
            raise CheckpointError(f"{path} has no rest pose: train the avatar again with this version")
        t = lambda v: torch.tensor(v, dtype=torch.float32, device=self.device)[None]  # noqa: E731
        self.rest = HeadParams(shape=self.avatar.shape[None], **{k: t(rest[k]) for k in PARAM_SIZES})
        self.intrinsics = t(rest["intrinsics"])  # (1, 4) at self.size
        self.num_expression = self.rest.expression.shape[-1]
        self.info = info
        self._graphs = (GraphedPlacement(self.avatar, self.rest, self.intrinsics, self.size, compile)
                        if cuda_graphs and self.device.type == "cuda" else None)
        self._lock = threading.RLock()  # graph buffers are reused by the next render: one render at a time
        self._batcher = None

    # --- parameters ------------------------------------------------------------------------------

    def params(self, batch: int = 1, **values) -> HeadParams:
        """(batch) parameters: the rest pose, with any of :data:`PARAM_SIZES` given as arrays of shape
        (batch, *size) or (*size) (the same for every frame).

        Raises:
            ValueError: an unknown name, a wrong shape, or values that are not finite.
        """
        out = {}
        for name, value in values.items():
            if name not in PARAM_SIZES:
                raise ValueError(f"unknown head parameter {name!r}; known: {', '.join(PARAM_SIZES)}")
            size = tuple(self.num_expression if d == "E" else d for d in PARAM_SIZES[name])
            v = torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)
            if tuple(v.shape) == size:
                v = v.expand(batch, *size)
            if tuple(v.shape) != (batch, *size):
                raise ValueError(f"{name} must have shape {size} or {(batch, *size)}, got {tuple(v.shape)}")
            if not torch.isfinite(v).all():
                raise ValueError(f"{name} holds values that are not finite numbers")
            out[name] = v
        rest = {f.name: getattr(self.rest, f.name).expand(batch, *getattr(self.rest, f.name).shape[1:])
                for f in fields(HeadParams)}
        return HeadParams(**{**rest, **out})

    def tracker(self):
        """A ``Tracker`` in this avatar's head model, on its device (for driving videos and frames)."""
        from neuavatar.track import Tracker, TrackerOptions

        return Tracker(self.avatar.head, TrackerOptions(device=self.device.type), self.device)

    def realtime_tracker(self, image_size: int, focal_px: float):
        """A real-time tracking session (``RealtimeTracker``) in this avatar's head model, on its
        device, for a driver's ``image_size``² frames seen with focal length ``focal_px``."""
        return self.tracker().realtime(image_size, focal_px)

    # --- rendering ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def render(self, params: HeadParams, intrinsics: Tensor | None = None, view: Tensor | None = None) -> Tensor:
        """(B, S, S, 3) float RGB in [0, 1] on the device, for parameters ``params`` (B); the rest
        camera unless ``intrinsics`` (B, 4) are given; ``view`` (B, 3, 3) orbits the camera."""
        b = params.batch_size
        k = self.intrinsics.expand(b, 4) if intrinsics is None else intrinsics
        with self._lock:
            if self._graphs is not None:
                placed, cut = self._graphs(params, view, k)
            else:
                placed, cut = self.avatar.place(params, view)[0], None
            colour, _ = splat(placed, k, self.size, self.background, self.backend, cut=cut)
        return colour.clamp_(0, 1)

    def render_uint8(self, params: HeadParams, intrinsics: Tensor | None = None, view: Tensor | None = None
                     ) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB on the host."""
        with torch.inference_mode():
            frames = self.render(params, intrinsics, view).mul_(255).round_().to(torch.uint8)
        return frames.cpu().numpy()

    def warm_up(self, max_batch: int = 1) -> None:
        """Render once at every batch size up to ``max_batch`` that has a graph of its own (1, 2, 4,
        ...), so that capturing graphs (and compiling) happens now, not in the middle of a stream."""
        b = 1
        while b <= max_batch:
            self.render(self.params(b))
            b *= 2

    def batcher(self):
        """The :class:`~neuavatar.animate.batching.RenderBatcher` that live sessions share: requests
        from many threads rendered together, one batch per turn of the GPU."""
        from neuavatar.animate.batching import RenderBatcher

        with self._lock:
            if self._batcher is None:
                self._batcher = RenderBatcher(self)
                if self._graphs is not None:  # capture now, not in the middle of a stream
                    self.warm_up(self._batcher.max_batch)
            return self._batcher

    def render_shared(self, controls: Controls | None = None, **params) -> tuple[np.ndarray, list[str]]:
        """(S, S, 3) uint8 RGB of one frame posed by ``controls`` or by head ``params`` (as for
        :meth:`params`), rendered in one batch with whatever other threads ask for at the same time
        (:meth:`batcher`); and notes on controls that were clamped. For servers and live sessions."""
        if controls is not None:
            inside, notes = controls.clamped()
            return self.batcher().render(*inside.to_params(self.rest, self.intrinsics)), notes
        return self.batcher().render(self.params(**params)), []

    def render_controls(self, controls: Controls) -> tuple[np.ndarray, list[str]]:
        """(S, S, 3) uint8 RGB of one pose given by ``controls``, and notes on values that were clamped."""
        inside, notes = controls.clamped()
        params, k, view = inside.to_params(self.rest, self.intrinsics)
        return self.render_uint8(params, k, view)[0], notes
