"""The Renderer service: single frames, driving-video reenactment and live sessions of an avatar.

Thin over :mod:`neuavatar.animate`: it parses a request (:mod:`neuavatar.api.convert`), calls the
library off the event loop, and replies. Avatars are loaded on first use through a pluggable
:data:`AvatarSource` (avatar id -> local avatar directory; a dict in tests, the object store in the
service) and kept in a small LRU cache, because loading one takes longer than rendering hundreds
of frames.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path

import grpc

from neuavatar.animate.reenact import reenact_video
from neuavatar.animate.renderer import AvatarRenderer
from neuavatar.animate.stream import StreamSession
from neuavatar.api import convert
from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api._proto import neuavatar_pb2_grpc as pb_grpc
from neuavatar.api.errors import NotFoundError
from neuavatar.api.live import live_responses

__all__ = ["AvatarSource", "RendererService", "mapping_source", "directory_source", "AVATAR_ID_METADATA"]

AvatarSource = Callable[[str], Path]
"""avatar id -> the avatar's local directory; raises NotFoundError (or KeyError) for an unknown id.
May block (a download): it runs on a worker thread."""

AVATAR_ID_METADATA = "neuavatar-avatar-id"
_CHUNK_BYTES = 1 << 20
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def mapping_source(directories: Mapping[str, Path | str]) -> AvatarSource:
    """A source that knows a fixed set of avatars: id -> directory."""
    def source(avatar_id: str) -> Path:
        if avatar_id not in directories:
            raise NotFoundError(f"no avatar {avatar_id!r}")
        return Path(directories[avatar_id])
    return source


def directory_source(root: Path | str) -> AvatarSource:
    """A source that finds avatar ``ID`` in ``root/ID`` (a folder of trained avatars)."""
    def source(avatar_id: str) -> Path:
        path = Path(root) / convert.check_id(avatar_id)
        if not path.is_dir():
            raise NotFoundError(f"no avatar {avatar_id!r}")
        return path
    return source


class _RendererCache:
    """Loaded renderers by avatar id, least recently used evicted beyond ``capacity``; concurrent
    requests for an avatar being loaded wait for the one load. An evicted renderer lives on in the
    sessions still using it."""

    def __init__(self, source: AvatarSource, capacity: int, device: str, executor: ThreadPoolExecutor,
                 compile: bool = False):
        if capacity < 1:
            raise ValueError(f"the renderer cache needs room for at least one avatar, got {capacity}")
        self._source, self.capacity, self._device, self._executor = source, capacity, device, executor
        self._compile = compile
        self._items: OrderedDict[str, AvatarRenderer] = OrderedDict()
        self._loading: dict[str, asyncio.Task[AvatarRenderer]] = {}

    async def get(self, avatar_id: str) -> AvatarRenderer:
        convert.check_id(avatar_id)
        if (renderer := self._items.get(avatar_id)) is not None:
            self._items.move_to_end(avatar_id)
            return renderer
        task = self._loading.get(avatar_id)
        if task is None:
            task = self._loading[avatar_id] = asyncio.create_task(self._load(avatar_id))
            task.add_done_callback(lambda _: self._loading.pop(avatar_id, None))
        return await asyncio.shield(task)

    async def _load(self, avatar_id: str) -> AvatarRenderer:
        renderer = await asyncio.get_running_loop().run_in_executor(self._executor, self._open, avatar_id)
        self._items[avatar_id] = renderer
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return renderer

    def _open(self, avatar_id: str) -> AvatarRenderer:
        try:
            path = self._source(avatar_id)
        except KeyError:
            raise NotFoundError(f"no avatar {avatar_id!r}") from None
        renderer = AvatarRenderer(path, device=self._device, compile=self._compile)
        renderer.batcher()  # on CUDA: compile and capture every batch size now, not in a caller's frame
        return renderer

    def __contains__(self, avatar_id: str) -> bool:
        return avatar_id in self._items


class RendererService(pb_grpc.RendererServicer):
    """``neuavatar.v1.Renderer``.

    Args:
        source: where avatars come from (:func:`mapping_source`, :func:`directory_source`, ...).
        device: the renderers' device (``auto``: the GPU when there is one).
        cache_size: avatars kept loaded.
        render_workers: threads that load avatars and wait for single frames (they mostly wait: the
            frames of concurrent calls are rendered together by the avatar's batcher; live sessions and
            reenactments have threads of their own).
        max_upload_bytes: the largest driving video Reenact accepts.
        compile: on CUDA, fuse each avatar's work before the rasterizer with ``torch.compile`` when
            it loads (single frames ~1,100 frames/s instead of ~850; loading takes ~45 s the first
            time on a machine, ~8 s with inductor's disk cache, ``TORCHINDUCTOR_CACHE_DIR``).
    """

    def __init__(self, source: AvatarSource, *, device: str = "auto", cache_size: int = 4, render_workers: int = 32,
                 max_upload_bytes: int = 512 * 1024 * 1024, compile: bool = False):
        self._executor = ThreadPoolExecutor(render_workers, thread_name_prefix="neuavatar-render")
        self.renderers = _RendererCache(source, cache_size, device, self._executor, compile)
        self.max_upload_bytes = max_upload_bytes
        self.stats = {"frames": 0, "reenactments": 0, "live_opened": 0, "live_closed": 0}

    @property
    def live_sessions(self) -> int:
        """Live sessions open now."""
        return self.stats["live_opened"] - self.stats["live_closed"]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- RenderFrame ------------------------------------------------------------------------------

    async def RenderFrame(self, request: pb.RenderFrameRequest, context: grpc.aio.ServicerContext) -> pb.Frame:
        received = time.perf_counter()
        encoding, quality = convert.encoding_name(request.encoding), convert.jpeg_quality(request.quality)
        pose = request.WhichOneof("pose")
        controls = convert.controls_from_proto(request.controls) if pose == "controls" else None
        params = convert.params_from_proto(request.params) if pose == "params" else {}
        renderer = await self.renderers.get(request.avatar_id)

        def render() -> pb.Frame:
            started = time.perf_counter()
            # concurrent calls render together in one batch (and with the live sessions)
            image, notes = renderer.render_shared(controls, **params)
            rendered = time.perf_counter()
            data = convert.encode_frame(image, encoding, quality)
            done = time.perf_counter()
            ms = lambda a, b: (b - a) * 1000  # noqa: E731
            return pb.Frame(id=request.id, data=data, encoding=pb.ENCODING_RGB if encoding == "rgb" else pb.ENCODING_JPEG,
                            width=image.shape[1], height=image.shape[0], notes=notes,
                            timings=pb.Timings(queued_ms=ms(received, started), render_ms=ms(started, rendered),
                                               encode_ms=ms(rendered, done), total_ms=ms(received, done)))

        frame = await asyncio.get_running_loop().run_in_executor(self._executor, render)
        self.stats["frames"] += 1
        return frame

    # --- Reenact ----------------------------------------------------------------------------------

    async def Reenact(self, request_iterator: AsyncIterator[pb.ReenactRequest], context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[pb.ReenactResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValueError("a Reenact call starts with a header message")
        header = first.header
        crf = header.crf or 18
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must lie in 0..51 (0: the default, 18), got {header.crf}")
        suffix = Path(header.filename).suffix.lower() or ".mp4"
        if not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"filename {header.filename!r} has no usable extension")
        renderer = await self.renderers.get(header.avatar_id)
        with tempfile.TemporaryDirectory(prefix="neuavatar-reenact-") as tmp:
            driver, out = Path(tmp) / f"driver{suffix}", Path(tmp) / "reenacted.mp4"
            await self._receive(requests, driver)
            queue: asyncio.Queue[pb.Progress] = asyncio.Queue()
            cancelled = threading.Event()
            progress = _ProgressRelay(asyncio.get_running_loop(), queue, cancelled)
            job = asyncio.get_running_loop().run_in_executor(
                None, lambda: reenact_video(renderer, driver, out, side_by_side=header.side_by_side, crf=crf,
                                            progress=progress))
            waiting: asyncio.Future | None = None
            try:
                while not job.done() or not queue.empty():
                    waiting = asyncio.ensure_future(queue.get())
                    await asyncio.wait({waiting, job}, return_when=asyncio.FIRST_COMPLETED)
                    if waiting.done():
                        yield pb.ReenactResponse(progress=waiting.result())
                    else:
                        waiting.cancel()  # the job ended first; a report still queued is taken next round
                result = job.result()
            finally:
                if waiting is not None:
                    waiting.cancel()
                cancelled.set()  # a client that went away stops the work at its next progress report
                await asyncio.wait({job})  # it writes into tmp: let it stop before tmp goes
                if not job.cancelled():
                    job.exception()  # seen (raised above, or moot once the client is gone)
            data = out.read_bytes()
            self.stats["reenactments"] += 1
            yield pb.ReenactResponse(result=pb.ReenactResult(
                frames=result.frames, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                content_type="video/mp4", seconds=result.seconds))
            for start in range(0, len(data), _CHUNK_BYTES):
                yield pb.ReenactResponse(chunk=data[start:start + _CHUNK_BYTES])

    async def _receive(self, requests: AsyncIterator[pb.ReenactRequest], path: Path) -> None:
        size = 0
        with path.open("wb") as f:
            async for message in requests:
                if message.WhichOneof("part") != "chunk":
                    raise ValueError("after its header, a Reenact upload carries only chunks")
                size += len(message.chunk)
                if size > self.max_upload_bytes:
                    raise ValueError(f"the driving video is larger than this server accepts ({self.max_upload_bytes} bytes)")
                f.write(message.chunk)
        if size == 0:
            raise ValueError("no driving video came after the header")

    # --- LiveReenact ------------------------------------------------------------------------------

    async def LiveReenact(self, request_iterator: AsyncIterator[pb.LiveRequest], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[pb.LiveResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        named = dict(context.invocation_metadata() or ()).get(AVATAR_ID_METADATA, "")
        if first.avatar_id and named and first.avatar_id != named:
            raise ValueError(f"the metadata names avatar {named!r} but the first message {first.avatar_id!r}")
        avatar_id = first.avatar_id or named
        if not avatar_id:
            raise ValueError(f"name the avatar in the first message's avatar_id or in the metadata {AVATAR_ID_METADATA!r}")
        renderer = await self.renderers.get(avatar_id)
        session = StreamSession(renderer, encoding=convert.encoding_name(first.encoding),
                                quality=convert.jpeg_quality(first.quality))
        self.stats["live_opened"] += 1
        try:
            yield pb.LiveResponse(ready=pb.LiveReady(avatar_id=avatar_id, width=renderer.size, height=renderer.size,
                                                     num_expression=renderer.num_expression))
            async with aclosing(live_responses(session, first, requests)) as responses:
                async for response in responses:
                    yield response
        finally:
            await asyncio.to_thread(session.close)  # closed already unless the call ended before its first frame
            self.stats["live_closed"] += 1


class _ReenactCancelled(Exception):
    """Raised inside the reenactment to stop it when its client is gone."""


class _ProgressRelay:
    """The library's progress callback, on the reenactment's thread: forwards a report to the
    event loop when the step changes, a step ends, or a quarter second passed; stops the work
    once the call is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancelled: threading.Event):
        self._loop, self._queue, self._cancelled = loop, queue, cancelled
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, step: str, done: int, total: int | None, info: dict | None = None) -> None:
        if self._cancelled.is_set():
            raise _ReenactCancelled("the Reenact call ended")
        now = time.monotonic()
        if step != self._last[0] or done == total or now - self._last[1] >= 0.25:
            self._last = (step, now)
            message = pb.Progress(step=step, done=done, total=total or 0)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
