"""Rendering requests from many threads together.

Sixteen live sessions each asking for one frame would otherwise make sixteen renders of batch 1,
each paying the full cost of a render's fixed work. The batcher's one render thread takes every
request waiting when it comes round, renders them as one batch (per-request head parameters, camera
and view), and hands each caller its frame; while it renders, the next batch gathers.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import torch
from torch import Tensor

from neuavatar.head.model import HeadParams

__all__ = ["RenderBatcher"]


class RenderBatcher:
    """Renders of one frame each, from any thread, batched. ``max_batch``: most frames per render."""

    def __init__(self, renderer, max_batch: int = 32):
        self.renderer, self.max_batch = renderer, max_batch
        self._pending: list[tuple[HeadParams, Tensor, Tensor, Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self.stats = {"renders": 0, "frames": 0}
        self._thread = threading.Thread(target=self._run, name="neuavatar-batcher", daemon=True)
        self._thread.start()

    def render(self, params: HeadParams, intrinsics: Tensor | None = None, view: Tensor | None = None,
               timeout: float | None = 30.0) -> np.ndarray:
        """(S, S, 3) uint8 RGB of one frame: ``params`` (1), ``intrinsics`` (1, 4), ``view`` (1, 3, 3)."""
        if params.batch_size != 1:
            raise ValueError(f"the batcher renders one frame per request, got a batch of {params.batch_size}")
        r = self.renderer
        k = r.intrinsics if intrinsics is None else intrinsics.reshape(1, 4)
        v = torch.eye(3, device=r.device)[None] if view is None else view.reshape(1, 3, 3)
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the render batcher is closed")
            self._pending.append((params, k, v, future))
            self._cv.notify()
        return future.result(timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                params = HeadParams.cat([b[0] for b in batch])
                frames = self.renderer.render_uint8(params, torch.cat([b[1] for b in batch]),
                                                    torch.cat([b[2] for b in batch]))
                self.stats["renders"] += 1
                self.stats["frames"] += len(batch)
                for (_, _, _, future), frame in zip(batch, frames):
                    future.set_result(frame)
            except Exception as e:  # noqa: BLE001 - every waiting caller hears of it
                for _, _, _, future in batch:
                    future.set_exception(e)
