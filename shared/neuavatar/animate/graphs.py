"""CUDA graphs for the avatar's work before the rasterizer, and the neck cut's mask after it.

At batch 1 that work (head model, offsets, Gaussians placed on the triangles, the cut's mask) is ~300 small kernels:
launching them one by one costs the host ~6 ms, ten times what the GPU needs to run them. Captured
once as a CUDA graph, they replay with one launch. Graphs are kept per batch size rounded up to a
power of two (a batch of 5 runs in the graph for 8, its first 5 rows used), so a server that sees
every batch size from 1 to 64 captures at most seven.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from neuavatar.avatar.cut import cut_mask
from neuavatar.avatar.gaussians import WorldGaussians
from neuavatar.avatar.model import Avatar
from neuavatar.head.model import HeadParams

__all__ = ["GraphedPlacement", "MAX_GRAPH_BATCH"]

log = logging.getLogger(__name__)

MAX_GRAPH_BATCH = 64  # larger batches run eagerly: launch costs no longer dominate there
_FREE = ("expression", "jaw", "neck", "eyes", "rotation", "translation")


def _bucket(batch: int) -> int:
    return 1 << (batch - 1).bit_length()


class _Graph:
    """One captured placement (and cut mask, for ``size``² images) at a fixed batch size: inputs
    and outputs at fixed addresses."""

    def __init__(self, avatar: Avatar, rest: HeadParams, intrinsics: Tensor, size: int, batch: int, place):
        self.batch = batch
        self.inputs = {name: getattr(rest, name)[:1].expand(batch, *getattr(rest, name).shape[1:]).clone()
                       for name in _FREE}
        self.view = torch.eye(3, device=rest.rotation.device).expand(batch, 3, 3).clone()
        self.intrinsics = intrinsics[:1].expand(batch, 4).clone()
        shape = avatar.shape[None].expand(batch, -1)

        def run() -> tuple[WorldGaussians, Tensor]:
            placed, _, _ = place(HeadParams(shape=shape, **self.inputs), self.view)
            return placed, cut_mask(placed.ring, self.intrinsics, size)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture, as CUDA graphs require
            run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of a service (sessions copying frames out, a driver being
        # tracked) go on while this one captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = run()

    def __call__(self, params: HeadParams, view: Tensor | None, intrinsics: Tensor) -> tuple[WorldGaussians, Tensor]:
        b = params.batch_size
        for name in _FREE:
            self.inputs[name][:b].copy_(getattr(params, name))
        if view is None:
            self.view[:b].copy_(torch.eye(3, device=self.view.device).expand(b, 3, 3))
        else:
            self.view[:b].copy_(view)
        self.intrinsics[:b].copy_(intrinsics.expand(b, 4))
        self.graph.replay()
        o, cut = self.outputs
        return WorldGaussians(means=o.means[:b], quats=o.quats[:b], scales=o.scales[:b], opacities=o.opacities[:b],
                              colours=o.colours[:b], ring=o.ring[:b]), cut[:b]


class GraphedPlacement:
    """``avatar.place`` on CUDA, and the neck cut's mask for ``size``² images, replayed from graphs.
    What it returns lives in the graph's own buffers: use it before the next call
    (``AvatarRenderer`` renders under one lock for this).

    ``compile``: fuse the placement's many small kernels with ``torch.compile`` before capturing:
    batch 1 runs at ~1,100-1,170 frames/s instead of ~850 on an H100. ``dynamic``: passed on to
    ``torch.compile``; None compiles for the first batch size, then once for all others (~45 s in
    all on a machine's first use, ~8 s once inductor's disk cache holds them:
    bench/device/compile_cache.py)."""

    def __init__(self, avatar: Avatar, rest: HeadParams, intrinsics: Tensor, size: int, compile: bool = False,
                 dynamic: bool | None = None):
        if rest.rotation.device.type != "cuda":
            raise ValueError("CUDA graphs need the avatar on a CUDA device")
        self.avatar, self.rest, self.intrinsics, self.size = avatar, rest, intrinsics, size
        self._graphs: dict[int, _Graph] = {}
        self._place = torch.compile(avatar.place, dynamic=dynamic) if compile else avatar.place

    @torch.inference_mode()
    def __call__(self, params: HeadParams, view: Tensor | None, intrinsics: Tensor) -> tuple[WorldGaussians, Tensor]:
        """The Gaussians for ``params`` (B) seen through ``view`` (B, 3, 3) or not, and (B, S, S, 1)
        the cut's mask through cameras ``intrinsics`` (B, 4) or (1, 4)."""
        b = params.batch_size
        if b > MAX_GRAPH_BATCH:
            placed = self.avatar.place(params, view)[0]
            return placed, cut_mask(placed.ring, intrinsics, self.size)
        size = _bucket(b)
        graph = self._graphs.get(size)
        if graph is None:
            try:
                graph = _Graph(self.avatar, self.rest, self.intrinsics, self.size, size, self._place)
            except Exception as error:
                if self._place is self.avatar.place:
                    raise
                # torch.compile compiles on first use (Triton builds its launcher with a C compiler
                # and Python's headers): where that fails, render with graphs alone, a little slower
                log.warning("torch.compile of the avatar failed, rendering without it: %s",
                            str(error).strip().splitlines()[0][:300])
                self._place = self.avatar.place
                graph = _Graph(self.avatar, self.rest, self.intrinsics, self.size, size, self._place)
            self._graphs[size] = graph
        return graph(params, view, intrinsics)
