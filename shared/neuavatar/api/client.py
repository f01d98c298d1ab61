"""Python clients of the NeuAvatar API: :class:`RendererClient` and :class:`AvatarsClient`.

Synchronous wrappers of the generated stubs that take plain Python values (arrays, dicts, paths),
chunk uploads and downloads, and add the token (``authorization: Bearer <token>``) to every call.
They import neither torch nor the renderer, so a client machine needs only grpcio and numpy.

    with RendererClient("127.0.0.1:50051", token=...) as client:
        frame = client.render_frame("anna", controls={"jaw_open": 15, "head_yaw": 20})
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api._proto import neuavatar_pb2_grpc as pb_grpc

__all__ = ["RendererClient", "AvatarsClient", "connect", "head_params_message", "controls_message", "live_request"]

_CHUNK_BYTES = 1 << 20
_ENCODINGS = {"jpeg": pb.ENCODING_JPEG, "rgb": pb.ENCODING_RGB}


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata (the token) to every call of a channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def connect(target: str, *, token: str | None = None, tls: bool = False, root_certificates: bytes | None = None,
            server_name: str | None = None, max_message_bytes: int = 32 * 1024 * 1024) -> grpc.Channel:
    """A channel to ``target`` (``host:port``). ``tls``: verify the server against
    ``root_certificates`` (PEM; the system's when None), for host ``server_name`` when it is not
    the one in ``target``. ``token`` goes with every call; over a channel without TLS it travels
    in clear text, so keep that to loopback and trusted networks."""
    options = [("grpc.max_send_message_length", max_message_bytes),
               ("grpc.max_receive_message_length", max_message_bytes)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if tls or root_certificates is not None:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates), options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {token}"),)))
    return channel


def head_params_message(**values: Any) -> pb.HeadParams:
    """A HeadParams message from arrays: ``expression`` (E), ``jaw``, ``neck``, ``rotation``,
    ``translation`` (3 each), ``eyes`` (2, 3); the ones not given take the avatar's rest pose."""
    return pb.HeadParams(**{k: np.asarray(v, dtype=np.float32).ravel().tolist() for k, v in values.items()})


def controls_message(**values: Any) -> pb.Controls:
    """A Controls message from keyword values in degrees (see neuavatar.animate.Controls)."""
    if "expression" in values:
        values["expression"] = [float(v) for v in values["expression"]]
    return pb.Controls(**values)


def live_request(request_id: int, *, params: Mapping[str, Any] | None = None, controls: Mapping[str, Any] | None = None,
                 image: np.ndarray | bytes | None = None) -> pb.LiveRequest:
    """A LiveRequest for one of: head parameters, controls, or a camera frame (an (H, W, 3) uint8
    RGB array, or a JPEG/PNG file's bytes)."""
    if params is not None:
        return pb.LiveRequest(id=request_id, params=head_params_message(**params))
    if controls is not None:
        return pb.LiveRequest(id=request_id, controls=controls_message(**controls))
    if isinstance(image, np.ndarray):
        h, w = image.shape[:2]
        return pb.LiveRequest(id=request_id, image=pb.Image(data=np.ascontiguousarray(image, np.uint8).tobytes(),
                                                            width=w, height=h))
    if image is not None:
        return pb.LiveRequest(id=request_id, image=pb.Image(data=bytes(image)))
    return pb.LiveRequest(id=request_id)


class _Client:
    def __init__(self, target: str | grpc.Channel, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, server_name: str | None = None, timeout_s: float | None = 60.0):
        self._own = isinstance(target, str)
        self.channel = connect(target, token=token, tls=tls, root_certificates=root_certificates,
                               server_name=server_name) if isinstance(target, str) else target
        self.timeout_s = timeout_s

    def close(self) -> None:
        if self._own:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RendererClient(_Client):
    """The Renderer service. ``target``: ``host:port`` or a channel of your own; ``timeout_s``:
    the deadline of unary calls (None: none)."""

    def __init__(self, target: str | grpc.Channel, **options: Any):
        super().__init__(target, **options)
        self.stub = pb_grpc.RendererStub(self.channel)

    def render_frame(self, avatar_id: str, *, params: Mapping[str, Any] | None = None,
                     controls: Mapping[str, Any] | None = None, encoding: str = "jpeg", quality: int = 0,
                     request_id: int = 0) -> pb.Frame:
        """One frame; at most one of ``params`` (arrays, see :func:`head_params_message`) and ``controls``
        (degrees); neither: the rest pose."""
        if params is not None and controls is not None:
            raise ValueError("give params or controls, not both")
        request = pb.RenderFrameRequest(avatar_id=avatar_id, encoding=_ENCODINGS[encoding], quality=quality, id=request_id)
        if params is not None:
            request.params.CopyFrom(head_params_message(**params))
        elif controls is not None:
            request.controls.CopyFrom(controls_message(**controls))
        return self.stub.RenderFrame(request, timeout=self.timeout_s)

    def reenact(self, avatar_id: str, video: Path | str, out: Path | str, *, side_by_side: bool = False, crf: int = 0,
                progress: Callable[[pb.Progress], None] | None = None, timeout_s: float | None = None) -> pb.ReenactResult:
        """Upload driving ``video``, write the reenacted MP4 to ``out`` (complete or not at all,
        checksum verified) and return its description; ``progress`` sees each progress report."""
        video, out = Path(video), Path(out)
        header = pb.ReenactHeader(avatar_id=avatar_id, filename=video.name, side_by_side=side_by_side, crf=crf)

        def upload() -> Iterator[pb.ReenactRequest]:
            yield pb.ReenactRequest(header=header)
            for chunk in _read_chunks(video):
                yield pb.ReenactRequest(chunk=chunk)

        result, digest = None, hashlib.sha256()
        partial = out.with_name(f".{out.name}.partial")
        try:
            with partial.open("wb") as f:
                for response in self.stub.Reenact(upload(), timeout=timeout_s):
                    kind = response.WhichOneof("event")
                    if kind == "progress" and progress is not None:
                        progress(response.progress)
                    elif kind == "result":
                        result = response.result
                    elif kind == "chunk":
                        f.write(response.chunk)
                        digest.update(response.chunk)
            if result is None or digest.hexdigest() != result.sha256:
                raise OSError(f"the reenacted video did not arrive whole (expected sha256 {result and result.sha256})")
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
        return result

    def live(self, avatar_id: str, requests: Iterable[pb.LiveRequest], *, encoding: str = "jpeg", quality: int = 0
             ) -> grpc.Call:
        """Open a live session; returns the call: iterate it for LiveResponse messages (first a
        ``ready``), ``cancel()`` it to end the session. ``requests`` may block between messages (a
        generator fed by a queue); when it ends, the server answers what is pending and ends."""
        def stream() -> Iterator[pb.LiveRequest]:
            yield pb.LiveRequest(avatar_id=avatar_id, encoding=_ENCODINGS[encoding], quality=quality)
            yield from requests

        return self.stub.LiveReenact(stream())


class AvatarsClient(_Client):
    """The Avatars service: make avatars from videos, follow their jobs, list and delete."""

    def __init__(self, target: str | grpc.Channel, **options: Any):
        super().__init__(target, **options)
        self.stub = pb_grpc.AvatarsStub(self.channel)

    def create_avatar(self, video: Path | str | None = None, *, object_key: str | None = None,
                      options: pb.AvatarOptions | Mapping[str, Any] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> pb.Job:
        """Start a job from a local ``video`` (uploaded in chunks, with its size and SHA-256) or
        from a video already in the object store (``object_key``). ``progress(sent_bytes,
        total_bytes)`` is called as each chunk goes out."""
        if (video is None) == (object_key is None):
            raise ValueError("give a video file or an object_key, one of them")
        if isinstance(options, Mapping):
            options = pb.AvatarOptions(**options)
        header = pb.CreateAvatarHeader(options=options)
        if object_key is not None:
            header.object_key = object_key
            return self.stub.CreateAvatar(iter([pb.CreateAvatarRequest(header=header)]), timeout=self.timeout_s)
        video = Path(video)
        header.filename, header.size_bytes, header.sha256 = video.name, video.stat().st_size, _sha256(video)

        def upload() -> Iterator[pb.CreateAvatarRequest]:
            yield pb.CreateAvatarRequest(header=header)
            sent = 0
            for chunk in _read_chunks(video):
                yield pb.CreateAvatarRequest(chunk=chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, header.size_bytes)

        return self.stub.CreateAvatar(upload())

    def watch_job(self, job_id: str, *, replay: bool = True) -> Iterator[pb.JobEvent]:
        """The job's events until it ends (those so far first, when ``replay``)."""
        return self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, replay=replay))

    def get_job(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout_s)

    def list_jobs(self, state: int = pb.JOB_STATE_UNSPECIFIED, page_size: int = 0) -> Iterator[pb.Job]:
        """Every job (in ``state``, when given), page after page."""
        token = ""
        while True:
            page = self.stub.ListJobs(pb.ListJobsRequest(page_size=page_size, page_token=token, state=state),
                                      timeout=self.timeout_s)
            yield from page.jobs
            if not (token := page.next_page_token):
                return

    def delete_job(self, job_id: str) -> None:
        self.stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=self.timeout_s)

    def get_avatar(self, avatar_id: str) -> pb.Avatar:
        return self.stub.GetAvatar(pb.GetAvatarRequest(avatar_id=avatar_id), timeout=self.timeout_s)

    def list_avatars(self, page_size: int = 0) -> Iterator[pb.Avatar]:
        token = ""
        while True:
            page = self.stub.ListAvatars(pb.ListAvatarsRequest(page_size=page_size, page_token=token),
                                         timeout=self.timeout_s)
            yield from page.avatars
            if not (token := page.next_page_token):
                return

    def delete_avatar(self, avatar_id: str) -> None:
        self.stub.DeleteAvatar(pb.DeleteAvatarRequest(avatar_id=avatar_id), timeout=self.timeout_s)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            yield chunk


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _read_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()
