"""Live reenactment: a stream of head parameters or driving frames in, a stream of encoded frames out.

A session works on one worker thread; the frames of all sessions of one renderer are rendered
together in batches (:mod:`neuavatar.animate.batching`). Requests land in a one-slot mailbox: when a new request
arrives before the last one was rendered, the stale one is dropped (and counted), so a slow
renderer never builds a backlog; finished frames wait in a short queue, and when the client reads
slower than the renderer the oldest waiting frame is dropped. A bad request becomes an error event
in the output stream; the session carries on.

    session = StreamSession(renderer)
    session.submit(7, expression=..., rotation=...)     # or submit_controls / submit_image
    frame = session.next(timeout=1.0)                    # StreamFrame or StreamError, by id
    session.close()
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuavatar.animate.controls import Controls
from neuavatar.animate.reenact import MotionLimits, transfer_motion
from neuavatar.animate.renderer import AvatarRenderer, encode_jpeg
from neuavatar.head.model import HeadParams

__all__ = ["StreamSession", "StreamFrame", "StreamError", "FrameDriver", "ENCODINGS"]

ENCODINGS = ("jpeg", "rgb")


@dataclass
class StreamFrame:
    """One rendered frame: ``data`` is a JPEG file or raw RGB bytes (height x width x 3)."""

    id: int
    data: bytes
    encoding: str
    width: int
    height: int
    timings_ms: dict[str, float]  # queued (waiting for the renderer), render, encode, total (request -> frame)
    dropped_before: int  # requests dropped as stale since the previous frame
    notes: list[str] = field(default_factory=list)  # e.g. controls that were clamped


@dataclass
class StreamError:
    """A request that could not be rendered; the session goes on."""

    id: int
    message: str


@dataclass
class _Request:
    id: int
    kind: str  # params | controls | image
    payload: Any
    received: float


class FrameDriver:
    """Driving frames -> the avatar's head parameters: MediaPipe landmarks, the tracker's real-time
    mode, and relative transfer. The driver's rest is the median over its first ``calibration_frames``
    frames with a face (until then, the frames seen so far)."""

    def __init__(self, renderer: AvatarRenderer, calibration_frames: int = 15):
        from neuavatar.preprocess.models import FaceLandmarker

        self.renderer = renderer
        self.landmarker = FaceLandmarker()
        self.calibration_frames = calibration_frames
        self._limits = MotionLimits.of(renderer.avatar)
        self._session = None
        self._side = 0
        self._seen: list[HeadParams] = []
        self._rest: HeadParams | None = None
        self._clock = 0

    def params(self, rgb: np.ndarray) -> HeadParams:
        """(1) the avatar's parameters for driving frame ``rgb`` (H, W, 3) uint8.

        Raises:
            ValueError: not an RGB image, or no face in it.
        """
        if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
            raise ValueError("a driving frame must be an (H, W, 3) uint8 RGB image")
        h, w = rgb.shape[:2]
        side = min(h, w)
        square = np.ascontiguousarray(rgb[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side])
        faces = self.landmarker.landmarks(square)
        if not faces:
            raise ValueError("no face in this driving frame")
        if self._session is None or side != self._side:
            self._session = self.renderer.realtime_tracker(side, float(side))
            self._side = side
        self._clock += 1
        tracked = self._session.track_frame(torch.from_numpy(faces[0]), self._clock).to(self.renderer.device)
        if self._rest is None:
            self._seen.append(tracked)
            rest = HeadParams.cat(self._seen).median()
            if len(self._seen) >= self.calibration_frames:
                self._rest, self._seen = rest, []
        else:
            rest = self._rest
        return transfer_motion(tracked, rest, self.renderer.rest, limits=self._limits)

    def close(self) -> None:
        self.landmarker.close()


class StreamSession:
    """One live stream. ``encoding``: ``jpeg`` (default) or ``rgb``; ``quality``: JPEG quality;
    ``max_ready``: finished frames kept for a slow client before the oldest is dropped."""

    def __init__(self, renderer: AvatarRenderer, encoding: str = "jpeg", quality: int = 90, max_ready: int = 2):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must lie in 1..100, got {quality}")
        self.renderer, self.encoding, self.quality = renderer, encoding, quality
        self._mailbox: _Request | None = None
        self._dropped = 0
        self._cv = threading.Condition()
        self._ready: deque[StreamFrame | StreamError] = deque(maxlen=max_ready)
        self._ready_cv = threading.Condition()
        self._closed = False
        self._driver: FrameDriver | None = None
        self.stats = {"requests": 0, "frames": 0, "errors": 0, "dropped_stale": 0, "dropped_unread": 0}
        self._worker = threading.Thread(target=self._run, name="neuavatar-stream", daemon=True)
        self._worker.start()

    # --- requests -------------------------------------------------------------------------------

    def _put(self, request: _Request) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("this stream session is closed")
            self.stats["requests"] += 1
            if self._mailbox is not None:  # not rendered yet and already stale
                self._dropped += 1
                self.stats["dropped_stale"] += 1
            self._mailbox = request
            self._cv.notify()

    def submit(self, frame_id: int, **params: Any) -> None:
        """Render head parameters (see :data:`~neuavatar.animate.renderer.PARAM_SIZES`; rest pose for
        the ones not given) as frame ``frame_id``."""
        self._put(_Request(int(frame_id), "params", params, time.perf_counter()))

    def submit_controls(self, frame_id: int, controls: Controls) -> None:
        self._put(_Request(int(frame_id), "controls", controls, time.perf_counter()))

    def submit_image(self, frame_id: int, rgb: np.ndarray) -> None:
        """Render the avatar performing driving frame ``rgb`` (H, W, 3) uint8, tracked on the fly."""
        self._put(_Request(int(frame_id), "image", rgb, time.perf_counter()))

    # --- results --------------------------------------------------------------------------------

    def next(self, timeout: float | None = None) -> StreamFrame | StreamError | None:
        """The oldest finished frame (or error), waiting up to ``timeout`` seconds; None if none came."""
        with self._ready_cv:
            if not self._ready_cv.wait_for(lambda: self._ready or not self.running, timeout):
                return None
            return self._ready.popleft() if self._ready else None

    @property
    def running(self) -> bool:
        """Whether the session's worker still runs (False once closed, or if it died)."""
        return self._worker.is_alive()

    def close(self) -> None:
        """Stop the worker (a request being rendered finishes first). Safe to call twice."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._worker.join(timeout=30)
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._mailbox is not None or self._closed)
                if self._closed:
                    return
                request, self._mailbox = self._mailbox, None
                dropped, self._dropped = self._dropped, 0
            try:
                result: StreamFrame | StreamError = self._render(request, dropped)
                self.stats["frames"] += 1
            except (ValueError, TypeError) as e:  # a bad request: report it, keep streaming
                result = StreamError(request.id, str(e))
                self.stats["errors"] += 1
            with self._ready_cv:
                if len(self._ready) == self._ready.maxlen:
                    self.stats["dropped_unread"] += 1
                self._ready.append(result)
                self._ready_cv.notify()

    def _render(self, request: _Request, dropped: int) -> StreamFrame:
        started = time.perf_counter()
        r, notes = self.renderer, []
        if request.kind == "params":
            image, notes = r.render_shared(**request.payload)
        elif request.kind == "controls":
            image, notes = r.render_shared(request.payload)
        else:
            if self._driver is None:
                self._driver = FrameDriver(r)
            image = r.batcher().render(self._driver.params(request.payload))
        rendered = time.perf_counter()
        if self.encoding == "jpeg":
            data = encode_jpeg(image, self.quality)
        else:
            data = image.tobytes()
        done = time.perf_counter()
        ms = lambda a, b: (b - a) * 1000  # noqa: E731
        return StreamFrame(id=request.id, data=data, encoding=self.encoding, width=image.shape[1], height=image.shape[0],
                           timings_ms={"queued": ms(request.received, started), "render": ms(started, rendered),
                                       "encode": ms(rendered, done), "total": ms(request.received, done)},
                           dropped_before=dropped, notes=notes)
