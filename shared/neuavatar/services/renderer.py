"""The renderer service's parts: avatars from the object store, and the Renderer API with metrics.

:func:`s3_avatar_source` is the :data:`~neuavatar.api.AvatarSource` of the service: avatar id ->
a local directory, downloaded and unpacked from ``avatars/{id}/avatar.tar`` once into a cache
folder (checked against the object's SHA-256, so an avatar made again under the same id is
fetched again). The RendererService keeps its most recently used avatars loaded; the cache folder
keeps at most ``max_cached`` unpacked avatars on disk, the least recently used going first.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import grpc

from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api.errors import NotFoundError
from neuavatar.api.renderer import AvatarSource, RendererService
from neuavatar.services import metrics
from neuavatar.storage import ObjectNotFound, ObjectStore, avatar_key, validate_id

__all__ = ["s3_avatar_source", "MeteredRendererService"]

log = logging.getLogger("neuavatar.services")

_SHA_FILE = ".sha256"


def s3_avatar_source(store: ObjectStore, cache_dir: Path | str, *, max_cached: int = 16) -> AvatarSource:
    """An avatar source that fetches ``avatars/{id}/avatar.tar`` from ``store`` into ``cache_dir/{id}``.

    Raises (from the source):
        NotFoundError: no such avatar in the store.
        IntegrityError: the archive does not match its checksum.
    """
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def source(avatar_id: str) -> Path:
        validate_id(avatar_id, "avatar_id")
        key = avatar_key(avatar_id)
        try:
            sha = store.stat(key).sha256
        except ObjectNotFound:
            raise NotFoundError(f"no avatar {avatar_id!r}") from None
        target = root / avatar_id
        with lock:
            if (target / _SHA_FILE).is_file() and (target / _SHA_FILE).read_text().strip() == sha:
                os.utime(target)  # most recently used
                return target
            staging = root / f".{avatar_id}.{uuid.uuid4().hex}"
            try:
                store.get_dir(key, staging)
            except ObjectNotFound:
                raise NotFoundError(f"no avatar {avatar_id!r}") from None
            (staging / _SHA_FILE).write_text(f"{sha}\n")
            if target.exists():
                old = root / f".{avatar_id}.old-{uuid.uuid4().hex}"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, target)
            _prune(root, max_cached, keep=target)
            log.info("fetched avatar %s into %s", avatar_id, target)
            return target

    return source


def _prune(root: Path, max_cached: int, keep: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime)
    for path in entries[: max(0, len(entries) - max_cached)]:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


class MeteredRendererService(RendererService):
    """:class:`~neuavatar.api.RendererService` that counts the frames it sends (per RPC) and
    observes each live frame's latency (request arrival to frame ready)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Read at each scrape: the renderer's autoscaling follows it (deploy/k8s, docs/deploy.md).
        metrics.LIVE_SESSIONS.set_function(lambda: self.live_sessions)

    async def RenderFrame(self, request: pb.RenderFrameRequest, context: grpc.aio.ServicerContext) -> pb.Frame:
        frame = await super().RenderFrame(request, context)
        metrics.FRAMES_RENDERED.labels("RenderFrame").inc()
        return frame

    async def LiveReenact(self, request_iterator: AsyncIterator[pb.LiveRequest], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[pb.LiveResponse]:
        async with aclosing(super().LiveReenact(request_iterator, context)) as responses:
            async for response in responses:
                if response.WhichOneof("event") == "frame":
                    metrics.FRAMES_RENDERED.labels("LiveReenact").inc()
                    metrics.STREAM_LATENCY_SECONDS.observe(response.frame.timings.total_ms / 1000.0)
                yield response

    async def Reenact(self, request_iterator: AsyncIterator[pb.ReenactRequest], context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[pb.ReenactResponse]:
        async with aclosing(super().Reenact(request_iterator, context)) as responses:
            async for response in responses:
                if response.WhichOneof("event") == "result":
                    metrics.FRAMES_RENDERED.labels("Reenact").inc(response.result.frames)
                yield response

