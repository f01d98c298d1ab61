"""One LiveReenact call: a StreamSession between a gRPC request stream and its response stream.

Three parties, so that none waits on another: the call's reader task submits each request to the
session (the session's one-slot mailbox drops a request that goes stale); the session renders on
its own thread; a pump thread takes finished frames and errors from the session and hands them to
the event loop, where the call's response generator sends them. A request that cannot even be
parsed (no input, an undecodable image) answers with a LiveError straight away. When the client
half-closes, the call ends once every request still pending is answered; when it cancels, the
session is closed at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from neuavatar.animate.stream import StreamSession
from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api.convert import controls_from_proto, image_from_proto, live_event_to_proto, params_from_proto

__all__ = ["live_responses"]

_POLL_S = 0.1


def _submit(session: StreamSession, request: pb.LiveRequest, opening: bool) -> pb.LiveResponse | None:
    """Hand ``request`` to the session; a LiveError when it cannot be parsed. The ``opening``
    message may carry no input (it only names the avatar)."""
    kind = request.WhichOneof("input")
    try:
        if kind == "params":
            session.submit(request.id, **params_from_proto(request.params))
        elif kind == "controls":
            session.submit_controls(request.id, controls_from_proto(request.controls))
        elif kind == "image":
            session.submit_image(request.id, image_from_proto(request.image))
        elif not opening:
            raise ValueError("a live request needs params, controls or an image")
    except (ValueError, TypeError) as e:
        return pb.LiveResponse(error=pb.LiveError(id=request.id, message=str(e)))
    return None


def _pump(session: StreamSession, loop: asyncio.AbstractEventLoop, out: asyncio.Queue, reading_done: threading.Event,
          stop: threading.Event, drain_timeout_s: float) -> None:
    """Move the session's results to ``out`` until told to stop, or until reading is done and
    every request is answered (then None). Runs on its own thread: ``session.next`` blocks."""
    delivered, idle_since = 0, None
    put = lambda item: loop.call_soon_threadsafe(out.put_nowait, item)  # noqa: E731
    try:
        while not stop.is_set():
            event = session.next(timeout=_POLL_S)
            if event is not None:
                delivered += 1
                idle_since = None
                put(live_event_to_proto(event))
                continue
            if not session.running and not stop.is_set():
                put(RuntimeError("the live session's renderer stopped"))
                return
            if reading_done.is_set():
                s = session.stats
                if s["requests"] - s["dropped_stale"] - s["dropped_unread"] - delivered <= 0:
                    put(None)
                    return
                idle_since = idle_since or loop.time()
                if loop.time() - idle_since > drain_timeout_s:
                    put(RuntimeError(f"no frame for {drain_timeout_s:g} s after the client finished"))
                    return
    except RuntimeError:  # the event loop closed under us: the server is gone
        return


async def live_responses(session: StreamSession, first: pb.LiveRequest, requests: AsyncIterator[pb.LiveRequest],
                         drain_timeout_s: float = 60.0) -> AsyncIterator[pb.LiveResponse]:
    """The responses of a live call whose ``first`` message was read already (it opened the
    session) and whose other messages come from ``requests``. Closes ``session`` when done."""
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[pb.LiveResponse | Exception | None] = asyncio.Queue()
    reading_done, stop = threading.Event(), threading.Event()

    async def read() -> None:
        try:
            if (error := _submit(session, first, opening=True)) is not None:
                out.put_nowait(error)
            async for request in requests:
                if (error := _submit(session, request, opening=False)) is not None:
                    out.put_nowait(error)
        finally:
            reading_done.set()

    reader = asyncio.create_task(read())
    pump = threading.Thread(target=_pump, args=(session, loop, out, reading_done, stop, drain_timeout_s),
                            name="neuavatar-live-pump", daemon=True)
    pump.start()
    try:
        while (item := await out.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        reader.cancel()
        await asyncio.to_thread(session.close)  # waits for a frame being rendered
        await asyncio.to_thread(pump.join, 5 * _POLL_S + 1)
