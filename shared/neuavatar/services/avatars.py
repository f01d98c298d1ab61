"""The job API: ``neuavatar.v1.Avatars`` over the object store and the broker.

Thin, as the other servicers: parse the request, call the store, the job records or the broker
(off the event loop: they block), reply. CreateAvatar stores the upload at
``uploads/{job_id}/video{.ext}`` (or takes a video already in the store), writes the job record
(queued, with the resolved run configuration) and publishes the preprocess job; the stage workers
do the rest (:mod:`neuavatar.services.stages`). WatchJob sends the job's current state first, then
its live events until it ends.

Errors: a malformed request is INVALID_ARGUMENT, an unknown job, avatar or object key NOT_FOUND, an
upload above ``max_upload_bytes`` RESOURCE_EXHAUSTED, the store or broker being away UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api._proto import neuavatar_pb2_grpc as pb_grpc
from neuavatar.api.errors import NotFoundError
from neuavatar.config import to_dict
from neuavatar.messaging import BrokerUnavailable, Event, Events, JobMessage, Publisher
from neuavatar.services import metrics
from neuavatar.services.convert import (
    STATE_NAME,
    avatar_to_proto,
    event_to_proto,
    job_to_proto,
    options_to_dict,
    record_event,
)
from neuavatar.services.jobs import TERMINAL_STATES, JobStore, check_job_id, new_job_id, resolve_run_config
from neuavatar.services.listing import avatar_index, avatar_meta, record_id
from neuavatar.services.settings import ServiceSettings
from neuavatar.services.workdir import WorkArea
from neuavatar.storage import (
    ObjectNotFound,
    ObjectStore,
    StorageAccessDenied,
    StorageUnavailable,
    avatar_key,
    avatar_meta_key,
    upload_key,
    validate_id,
    validate_key,
)

__all__ = ["AvatarsService", "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE"]

log = logging.getLogger("neuavatar.services")
T = TypeVar("T")

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RECHECK_SECONDS = 5.0  # with no event for this long, WatchJob looks at the record (events may be lost)
_UNAVAILABLE = (StorageUnavailable, StorageAccessDenied, BrokerUnavailable)


class AvatarsService(pb_grpc.AvatarsServicer):
    """``neuavatar.v1.Avatars``.

    Args:
        settings: the service's settings (store, broker, default preset, upload limit, work dir).
        store, publisher: shared ones (default: made from ``settings``).
    """

    def __init__(self, settings: ServiceSettings, *, store: ObjectStore | None = None,
                 publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.store = store or ObjectStore(settings.storage)
        self.jobs = JobStore(self.store)
        self.avatar_index = avatar_index(self.store)
        self._own_publisher = publisher is None
        self.publisher = publisher or Publisher(settings.broker)
        self.events = Events(settings.broker, self.publisher)
        self.scratch = WorkArea.claim(Path(settings.work_dir), "uploads")
        """Where uploads wait while they arrive (released by :meth:`close`)."""

    def close(self) -> None:
        self.scratch.release()
        if self._own_publisher:
            self.publisher.close()

    async def _blocking(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a worker thread; the store or broker being away ends the call UNAVAILABLE."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except _UNAVAILABLE as e:
            log.warning("call failed, a backing service is unavailable: %s", e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            raise  # not reached: abort raises

    # --- CreateAvatar -----------------------------------------------------------------------------

    async def CreateAvatar(self, request_iterator: AsyncIterator[pb.CreateAvatarRequest],
                           context: grpc.aio.ServicerContext) -> pb.Job:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValueError("a CreateAvatar call starts with a header message")
        header = first.header
        options = options_to_dict(header.options)
        config = to_dict(resolve_run_config(options, self.settings.preset))
        limit = self.settings.max_upload_bytes
        if header.size_bytes < 0:
            raise ValueError(f"size_bytes must not be negative, got {header.size_bytes}")
        if header.size_bytes > limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(header.size_bytes, limit))
        sha = header.sha256.strip().lower()
        if sha and not _SHA256.fullmatch(sha):
            raise ValueError(f"sha256 must be 64 hex digits, got {header.sha256[:80]!r}")
        job_id = new_job_id()
        source = header.WhichOneof("source")
        if source == "object_key":
            video_key = validate_key(header.object_key)
            if await anext(requests, None) is not None:
                raise ValueError("no chunks may follow a header that names an object_key")
            try:
                info = await self._blocking(context, self.store.stat, video_key)
            except ObjectNotFound:
                raise NotFoundError(f"no object {video_key!r} in the store (CreateAvatar object_key)") from None
            if info.size_bytes > limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(info.size_bytes, limit))
            if header.size_bytes and header.size_bytes != info.size_bytes:
                raise ValueError(f"object {video_key!r} has {info.size_bytes} bytes, the header says {header.size_bytes}")
            if sha and info.sha256 != sha:
                raise ValueError(f"object {video_key!r} has SHA-256 {info.sha256}, the header says {sha}")
            name = video_key
        elif source == "filename":
            name = header.filename
            video_key = upload_key(job_id, Path(name).suffix)
            await self._receive(requests, context, video_key, header.size_bytes, sha)
        else:
            raise ValueError("the header names neither a filename nor an object_key")
        record = await self._blocking(context, self.jobs.create, job_id, source=name, options=options, config=config)
        job = JobMessage(job_id, "preprocess", {"video": video_key}, config)
        try:
            await self._blocking(context, self.publisher.publish_job, job, message_id=f"{job_id}-preprocess")
        except grpc.aio.AbortError:
            await asyncio.to_thread(self._quietly_fail, job_id, "the job could not be queued: the broker is unavailable")
            raise
        metrics.JOBS_CREATED.labels(source).inc()
        log.info("job %s created from %s (%s)", job_id, name, video_key, extra={"job_id": job_id})
        return job_to_proto(record)

    async def _receive(self, requests: AsyncIterator[pb.CreateAvatarRequest], context: grpc.aio.ServicerContext,
                       key: str, size_bytes: int, sha: str) -> None:
        """Store the chunks that follow the header under ``key``, checking the size limit, the
        header's size and its SHA-256."""
        limit = self.settings.max_upload_bytes
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self.scratch.path) as tmp:
            path = Path(tmp) / "video"
            digest, size = hashlib.sha256(), 0
            with path.open("wb") as f:
                async for message in requests:
                    if message.WhichOneof("part") != "chunk":
                        raise ValueError("after its header, a CreateAvatar upload carries only chunks")
                    size += len(message.chunk)
                    if size > limit:
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(size, limit, "at least "))
                    digest.update(message.chunk)
                    f.write(message.chunk)
            if size == 0:
                raise ValueError("no video came after the header (send its bytes in chunk messages)")
            if size_bytes and size != size_bytes:
                raise ValueError(f"the upload ended at {size} bytes, the header says {size_bytes}")
            if sha and digest.hexdigest() != sha:
                raise ValueError(f"the upload's SHA-256 is {digest.hexdigest()}, the header says {sha}: it was "
                                 "damaged on the way, or the header is wrong")
            await self._blocking(context, self.store.put_file, key, path)

    def _quietly_fail(self, job_id: str, error: str) -> None:
        try:
            self.jobs.update(job_id, state="failed", error=error, message=error)
        except Exception as e:  # the store may be away as well
            log.warning("could not mark job %s failed: %s", job_id, e)

    # --- WatchJob ---------------------------------------------------------------------------------

    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.JobEvent]:
        job_id = check_job_id(request.job_id)
        await self._blocking(context, self.jobs.get, job_id)  # NOT_FOUND before subscribing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        stop = threading.Event()
        # Subscribe first, then read the record: nothing that happens in between is missed.
        subscription = await self._blocking(context, self.events.subscribe, job_id)
        pump = threading.Thread(target=_pump, args=(subscription, loop, queue, stop), daemon=True,
                                name=f"neuavatar-watch-{job_id}")
        pump.start()
        try:
            record = await self._blocking(context, self.jobs.get, job_id)
            yield record_event(record)
            if record.get("state") in TERMINAL_STATES:
                return
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), _RECHECK_SECONDS)
                except TimeoutError:
                    record = await self._blocking(context, self.jobs.get, job_id)
                    if record.get("state") in TERMINAL_STATES:
                        yield record_event(record)
                        return
                    continue
                if isinstance(item, _UNAVAILABLE):
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"the job's events stopped: {item}")
                if isinstance(item, BaseException):
                    raise item
                yield event_to_proto(item)
                if item.kind == "failed" or (item.kind == "done" and item.stage == "train"):
                    return
        finally:
            stop.set()

    # --- jobs -------------------------------------------------------------------------------------

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return job_to_proto(await self._blocking(context, self.jobs.get, check_job_id(request.job_id)))

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        size = _page_size(request.page_size)
        state = None
        if request.state != pb.JOB_STATE_UNSPECIFIED:
            if request.state not in STATE_NAME:
                raise ValueError(f"state {request.state} is not a JobState")
            state = STATE_NAME[request.state]
        records, token = await self._blocking(context, self.jobs.page, request.page_token, size, state)
        return pb.ListJobsResponse(jobs=[job_to_proto(r) for r in records], next_page_token=token)

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._blocking(context, self.jobs.delete, check_job_id(request.job_id))
        log.info("job %s deleted", request.job_id, extra={"job_id": request.job_id})
        return empty_pb2.Empty()

    # --- avatars ----------------------------------------------------------------------------------

    async def GetAvatar(self, request: pb.GetAvatarRequest, context: grpc.aio.ServicerContext) -> pb.Avatar:
        return avatar_to_proto(await self._blocking(context, self._avatar_meta, request.avatar_id))

    def _avatar_meta(self, avatar_id: str) -> dict[str, Any]:
        try:
            return self.store.get_json(avatar_meta_key(validate_id(avatar_id, "avatar_id")))
        except ObjectNotFound:
            raise NotFoundError(f"no avatar {avatar_id!r}") from None

    async def ListAvatars(self, request: pb.ListAvatarsRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ListAvatarsResponse:
        size = _page_size(request.page_size)
        metas, token = await self._blocking(context, self.avatar_index.page, request.page_token, size)
        return pb.ListAvatarsResponse(avatars=[avatar_to_proto(m) for m in metas], next_page_token=token)

    def backfill_indexes(self) -> None:
        """Index the jobs and avatars stored before the listing index existed (see
        :mod:`neuavatar.services.listing`); reads only those without an entry."""
        self.jobs.backfill_index()
        self.avatar_index.backfill(self.store.list("avatars/"), lambda key: record_id(key, "avatar.json"))

    async def DeleteAvatar(self, request: pb.DeleteAvatarRequest, context: grpc.aio.ServicerContext
                           ) -> empty_pb2.Empty:
        await self._blocking(context, self._delete_avatar, request.avatar_id)
        return empty_pb2.Empty()

    def _delete_avatar(self, avatar_id: str) -> None:
        validate_id(avatar_id, "avatar_id")
        meta = avatar_meta(self.store, avatar_id)
        if meta is None and not self.store.exists(avatar_key(avatar_id)):
            raise NotFoundError(f"no avatar {avatar_id!r}")
        if meta is not None:
            self.avatar_index.remove(meta)
        self.store.delete_prefix(f"avatars/{avatar_id}/")
        log.info("avatar %s deleted", avatar_id)


def _too_large(size: int, limit: int, qualifier: str = "") -> str:
    return f"the video is {qualifier}{size} bytes; this server accepts at most {limit} bytes (max_upload_bytes)"


def _page_size(requested: int) -> int:
    if requested < 0:
        raise ValueError(f"page_size must not be negative, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _pump(subscription: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, stop: threading.Event) -> None:
    """Move a subscription's events onto the event loop until ``stop``; the subscription is closed at the end."""
    try:
        while not stop.is_set():
            event = subscription.next(0.5)
            if event is not None:
                loop.call_soon_threadsafe(queue.put_nowait, event)
    except Exception as e:  # the broker refused us: the watch ends with the error
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, e)
    finally:
        subscription.close()
