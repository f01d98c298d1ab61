"""Running a NeuAvatar gRPC server: servicers plus health, reflection, auth, errors, TLS, shutdown.

Every service's entry point is ``asyncio.run(serve([TheService(...)], ApiSettings.from_env()))``.
Beside the servicers it installs the standard health service (one status per service name, plus
"" for the whole server) and server reflection (so grpcurl can list and call the API), the token
interceptor when a token is configured, and the error interceptor. On SIGTERM or SIGINT the health
status turns NOT_SERVING first (load balancers stop sending new calls), then in-flight calls get
``grace_seconds`` to finish (after gRPC's graceful-shutdown example).

:class:`ServerThread` runs the same server on a background event loop, for tests and for
embedding in synchronous code.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from neuavatar.api._proto import neuavatar_pb2, neuavatar_pb2_grpc
from neuavatar.api.interceptors import ErrorInterceptor, TokenAuthInterceptor
from neuavatar.api.settings import ApiSettings
from neuavatar.errors import ConfigError

__all__ = ["RunningServer", "ServerThread", "serve", "start_server", "service_name"]

log = logging.getLogger("neuavatar.api")
T = TypeVar("T")

# The generated servicer base classes, with the function that registers one and the full service name.
_SERVICES = {
    neuavatar_pb2_grpc.AvatarsServicer: neuavatar_pb2_grpc.add_AvatarsServicer_to_server,
    neuavatar_pb2_grpc.RendererServicer: neuavatar_pb2_grpc.add_RendererServicer_to_server,
}


def service_name(servicer: object) -> str:
    """The full name (``neuavatar.v1.Renderer``) of the service that ``servicer`` implements.

    Raises:
        TypeError: ``servicer`` derives from none of the generated servicer classes.
    """
    for base in _SERVICES:
        if isinstance(servicer, base):
            return neuavatar_pb2.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")].full_name
    raise TypeError(f"{type(servicer).__name__} implements no NeuAvatar service (derive it from a generated Servicer)")


@dataclass
class RunningServer:
    """A started server: the port it listens on (the real one when 0 was asked), its health
    servicer (to report a service NOT_SERVING while it cannot serve) and its services' names."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    services: list[str]
    servicers: Sequence[object] = field(default_factory=list)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace_seconds``, then stop, and
        close servicers that have a ``close()``."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
        for servicer in self.servicers:
            close = getattr(servicer, "close", None)
            if callable(close):
                close()


async def start_server(servicers: Sequence[object], settings: ApiSettings) -> RunningServer:
    """Build and start a server for ``servicers`` (instances of generated servicer subclasses).

    Raises:
        ConfigError: the address cannot be bound, or a TLS file cannot be read.
        TypeError: a servicer implements no NeuAvatar service.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.token:
        interceptors.append(TokenAuthInterceptor(settings.token))
    interceptors.append(ErrorInterceptor())
    size = settings.max_message_bytes
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.max_send_message_length", size),
                                                                 ("grpc.max_receive_message_length", size)])
    names = []
    for servicer in servicers:
        names.append(service_name(servicer))
        _SERVICES[next(b for b in _SERVICES if isinstance(servicer, b))](servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        if settings.tls:
            credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
            port = server.add_secure_port(settings.address, credentials)
        else:
            port = server.add_insecure_port(settings.address)
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"cannot listen on {settings.address}: {e}") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {settings.address}")
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s:%d (tls=%s, token=%s)", ", ".join(names), settings.host, port, settings.tls,
             settings.token is not None)
    return RunningServer(server, port, health_servicer, names, list(servicers))


async def serve(servicers: Sequence[object], settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (see the module's docstring)."""
    running = await start_server(servicers, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: %.1f s for in-flight calls", settings.grace_seconds)
    await running.stop(settings.grace_seconds)


class ServerThread:
    """A server on its own event loop in a background thread; ``with ServerThread(...) as s:``
    then call ``127.0.0.1:{s.port}``. ``run(coro)`` runs a coroutine on the server's loop (e.g.
    ``s.run(s.running.health.set(...))``)."""

    def __init__(self, servicers: Sequence[object], settings: ApiSettings, start_timeout_s: float = 30.0):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="neuavatar-grpc", daemon=True)
        self._thread.start()
        try:
            self.running = self.run(start_server(servicers, settings), start_timeout_s)
        except BaseException:
            self._shutdown_loop()
            raise

    @property
    def port(self) -> int:
        return self.running.port

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stop(self, grace_seconds: float | None = 0.0) -> None:
        """Stop the server (safe to call twice)."""
        if self._loop.is_closed():
            return
        try:
            self.run(self.running.stop(grace_seconds), 60)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
