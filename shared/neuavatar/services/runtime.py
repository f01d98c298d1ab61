"""One service in one process: its gRPC server, its metrics endpoint and its queue worker.

``neuavatar serve NAME`` is :func:`run_service`; tests run the same :class:`ServiceRuntime` in
threads. ``NAME`` is one of:

============  ==========================================  ===============================
service       gRPC (besides health and reflection)        consumes
============  ==========================================  ===============================
preprocess    ``neuavatar.v1.Avatars`` (the job API)      ``{prefix}.jobs.preprocess``
tracker       -                                           ``{prefix}.jobs.track``
trainer       -                                           ``{prefix}.jobs.train``
renderer      ``neuavatar.v1.Renderer``                   -
============  ==========================================  ===============================

Stopping (SIGTERM or SIGINT): the worker takes no new job and the job in hand stops at its next
progress report (:meth:`StageWorker.request_stop`): nothing of it is stored, the trainer uploads its
latest checkpoint, and the message goes back to the broker unacked, for the next worker (which
resumes from that checkpoint). Meanwhile health turns NOT_SERVING and in-flight calls get the API's
grace period. A job that reaches no progress report within ``stop_timeout_seconds`` is left the
same way, without waiting for it: the process exits (status 0) and the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Literal, get_args

from neuavatar.api.server import ServerThread
from neuavatar.messaging import Publisher, Worker
from neuavatar.services.avatars import AvatarsService
from neuavatar.services.logs import configure_logging
from neuavatar.services.metrics import start_metrics_server
from neuavatar.services.renderer import MeteredRendererService, s3_avatar_source
from neuavatar.services.settings import ServiceSettings
from neuavatar.services.stages import SERVICE_STAGES, StageWorker
from neuavatar.storage import ObjectStore

__all__ = ["ServiceName", "SERVICE_NAMES", "ServiceRuntime", "run_service"]

log = logging.getLogger("neuavatar.services")

ServiceName = Literal["preprocess", "tracker", "trainer", "renderer"]
SERVICE_NAMES: tuple[ServiceName, ...] = get_args(ServiceName)


class ServiceRuntime:
    """Service ``name`` running in this process (threads); ``with ServiceRuntime(...) as s:``.

    Attributes (after :meth:`start`): ``port`` (gRPC), ``metrics_port``, ``stage_worker`` (the
    stage services), ``failure`` (the exception that ended the worker, if one did).

    Raises:
        ValueError: an unknown service name.
    """

    def __init__(self, name: ServiceName, settings: ServiceSettings) -> None:
        if name not in SERVICE_NAMES:
            raise ValueError(f"service must be one of {', '.join(SERVICE_NAMES)}, got {name!r}")
        self.name, self.settings = name, settings
        self.server: ServerThread | None = None
        self.stage_worker: StageWorker | None = None
        self.avatars: AvatarsService | None = None
        self.worker: Worker | None = None
        self.metrics_port: int | None = None
        self.failure: BaseException | None = None
        self.failed = threading.Event()
        self._worker_thread: threading.Thread | None = None
        self._publisher: Publisher | None = None
        self._stop_metrics = None

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return self.server.port

    def start(self) -> ServiceRuntime:
        """Check the store, start the metrics endpoint, the gRPC server and (stages) the worker.

        Raises:
            StorageUnavailable, StorageAccessDenied: the object store cannot be used.
            ConfigError: the API port cannot be bound.
            OSError: the metrics port cannot be bound.
        """
        s = self.settings
        log.info("starting the %s service with %s", self.name, s.public_dict())
        Path(s.work_dir).mkdir(parents=True, exist_ok=True)
        store = ObjectStore(s.storage)
        store.ensure_bucket()
        try:
            self.metrics_port, self._stop_metrics = start_metrics_server(s.metrics_port, s.api.host)
            servicers: list[object] = []
            if self.name != "renderer":
                self._publisher = Publisher(s.broker)
            if self.name == "preprocess":
                self.avatars = AvatarsService(s, store=store, publisher=self._publisher)
                self.avatars.backfill_indexes()
                servicers.append(self.avatars)
            if self.name == "renderer":
                source = s3_avatar_source(store, Path(s.work_dir) / "avatars")
                # compiled kernels kept with the service's files: a restart loads avatars in seconds
                os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(s.work_dir) / "inductor"))
                servicers.append(MeteredRendererService(source, device=s.device, cache_size=s.render_cache_size,
                                                        compile=s.render_compile))
            self.server = ServerThread(servicers, s.api)
            self.server.run(_quiet_poller_noise())
            stage = SERVICE_STAGES.get(self.name)
            if stage is not None:
                self.stage_worker = StageWorker(stage, s, store=store, publisher=self._publisher)
                self.worker = self.stage_worker.worker()
                self._worker_thread = threading.Thread(target=self._consume, name=f"neuavatar-{self.name}-worker",
                                                       daemon=True)
                self._worker_thread.start()
        except BaseException:
            self.stop()
            raise
        log.info("%s service ready: gRPC on %s:%d, metrics on :%d", self.name, s.api.host, self.port,
                 self.metrics_port)
        return self

    def _consume(self) -> None:
        try:
            self.worker.run()
        except BaseException as e:  # reported by run_service (the process exits with it)
            log.error("the %s worker stopped: %s", self.name, e)
            self.failure = e
            self.failed.set()

    def wait_consuming(self, timeout: float = 30.0) -> bool:
        """Block until the worker consumes its queue (True at once for the renderer)."""
        return self.worker is None or self.worker.wait_connected(timeout)

    def stop(self) -> bool:
        """Stop (see the module's docstring); whether no job was left unfinished."""
        finished = True
        # The job in hand is told first, so that it winds down while the gRPC server drains.
        if self.worker is not None:
            self.worker.stop()
        if self.stage_worker is not None:
            self.stage_worker.request_stop()
        if self.server is not None:
            self.server.stop(self.settings.api.grace_seconds)
        if self.worker is not None:
            if self._worker_thread is not None and self._worker_thread.is_alive():
                self._worker_thread.join(self.settings.stop_timeout_seconds)
                finished = not self._worker_thread.is_alive()
            if not finished and self.stage_worker is not None:
                log.warning("%s: the job in hand did not stop within %.0f s; leaving it to the broker",
                            self.name, self.settings.stop_timeout_seconds)
                self.stage_worker.flush_checkpoint()
        if self.avatars is not None:
            self.avatars.close()
        if finished:
            if self.stage_worker is not None:
                self.stage_worker.close()
            if self._publisher is not None:
                self._publisher.close()
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        return finished

    def __enter__(self) -> ServiceRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _quiet_poller_noise() -> None:
    """Several gRPC asyncio loops in one process (services run in threads, as in the tests) all
    wake on grpc's one completion-queue socket; those that find it drained log a harmless
    BlockingIOError (grpc/grpc#25364). Leave those out of the log; everything else stays."""
    loop = asyncio.get_running_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), BlockingIOError) and "PollerCompletionQueue" in repr(context.get("handle")):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def run_service(name: ServiceName, settings: ServiceSettings) -> int:
    """Run service ``name`` until SIGTERM or SIGINT (``neuavatar serve``); the exit status.

    Raises:
        MessagingError: the broker refused the worker (wrong login, a queue declared otherwise).
        StorageError, ConfigError: as :meth:`ServiceRuntime.start`.
    """
    configure_logging(settings.log_format, settings.secrets())
    logging.getLogger("pika").setLevel(logging.WARNING)  # one line per connection event is too many
    stop = threading.Event()
    runtime = ServiceRuntime(name, settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    runtime.start()
    while not stop.wait(0.5):
        if runtime.failed.is_set():
            break
    log.info("%s service stopping", name)
    finished = runtime.stop()
    if runtime.failure is not None:
        raise runtime.failure
    if not finished:
        # The job's thread is still inside the library; leave without acking it (see above).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    log.info("%s service stopped", name)
    return 0
