"""The consume loop of a stage: ack after the work, retry a failure, dead-letter what cannot succeed.

pika's connection is single-threaded and must answer heartbeats while a handler trains for an
hour, so the handler runs in its own thread and the connection thread only moves messages: it
keeps calling ``process_data_events`` (heartbeats), and a finished handler wakes it with
``add_callback_threadsafe``; every ack and publish happens on the connection thread.

For each delivery, in order:

* unparsable (:class:`BadMessage`) -> published to the dead-letter exchange with
  ``x-neuavatar-reason`` and ``x-neuavatar-stage``, then acked; never retried;
* handler returns -> acked;
* handler raises, attempt < ``max_attempts`` -> the same body re-published to the queue's tail with
  ``x-neuavatar-attempt`` + 1 (confirmed), then the old one acked;
* handler raises on the last attempt (or raises :class:`BadMessage`) -> dead-lettered with the reason;
* handler raises :class:`JobInterrupted` (its service is stopping) -> handed back to the broker
  (``basic_nack`` with requeue): no attempt is counted and the next consumer gets it, flagged
  ``redelivered``.

Publishing first and acking second means a crash in between duplicates rather than loses a job.
If the connection drops mid-job, the worker lets the handler finish, drops its ack (the broker
redelivers the message, flagged ``redelivered``) and reconnects with backoff; it never runs two
handlers of one message at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from neuavatar.messaging.connection import BROKER_ERRORS, classify, close_quietly, connect
from neuavatar.messaging.errors import BadMessage, JobInterrupted
from neuavatar.messaging.message import ATTEMPT_HEADER, REASON_HEADER, STAGE_HEADER, JobMessage
from neuavatar.messaging.settings import BrokerSettings, backoff_delays
from neuavatar.messaging.topology import STAGES, Stage, declare_topology

__all__ = ["Worker", "Handler", "ERROR_HEADER"]

log = logging.getLogger(__name__)

Handler = Callable[[JobMessage], None]
"""Does one job; returning means done (the message is acked), raising means failed."""

ERROR_HEADER = "x-neuavatar-last-error"
_TICK_SECONDS = 0.25  # how often the loop checks for stop() when the broker is quiet
_MAX_HEADER_CHARS = 1000


@dataclass(frozen=True)
class _Finished:
    generation: int  # which connection the delivery came on; a later one cannot ack it
    delivery_tag: int
    job: JobMessage
    body: bytes
    properties: BasicProperties
    error: BaseException | None
    seconds: float


class Worker:
    """Consumes one stage's queue and runs ``handler`` on each job.

    Call :meth:`run` (blocks) or :meth:`start` (a thread); :meth:`stop` from any thread lets the
    jobs in flight finish, acks them and returns from :meth:`run`.

    Raises:
        ValueError: ``stage`` is not one of :data:`STAGES`.
    """

    def __init__(self, settings: BrokerSettings, stage: Stage, handler: Handler) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.settings = settings
        self.stage: Stage = stage
        self.handler = handler
        self.queue = settings.job_queue(stage)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._finished: queue.Queue[_Finished] = queue.Queue()
        self._in_flight: dict[tuple[int, int], threading.Thread] = {}
        self._generation = 0
        self._connection: BlockingConnection | None = None
        self._consume: BlockingChannel | None = None
        self._publish: BlockingChannel | None = None

    @property
    def connected(self) -> bool:
        """Whether it is consuming now (False while it waits for the broker)."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until it consumes (or ``timeout`` s pass); whether it does."""
        return self._connected.wait(timeout)

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread; the thread (join it after :meth:`stop`)."""
        thread = threading.Thread(target=self.run, name=f"neuavatar-worker-{self.stage}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask :meth:`run` to finish the jobs in flight and return; safe from any thread."""
        self._stop.set()
        self._wake(self._connection)

    def run(self) -> None:
        """Consume until :meth:`stop`, reconnecting with backoff whenever the broker goes away.

        Raises:
            BrokerUnavailable: the broker refused the login or vhost.
            MessagingError: the broker refused the topology (a queue exists with other arguments).
        """
        delays = backoff_delays(self.settings)
        while not self._stop.is_set():
            try:
                self._serve()
            except BROKER_ERRORS as e:
                connected_before = self._connected.is_set()
                self._disconnect()
                error = classify(e, self.settings)
                if error is not None:
                    raise error from e
                if connected_before:
                    delays = backoff_delays(self.settings)
                delay = next(delays)
                log.warning("worker %s: broker %s unavailable (%r); reconnecting in %.2f s", self.stage,
                            self.settings.safe_url, e, delay)
                self._stop.wait(delay)
            except BaseException:
                self._connected.clear()
                close_quietly(self._connection)
                raise
        log.info("worker %s stopped", self.stage)

    # The connection thread ------------------------------------------------------------------

    def _serve(self) -> None:
        """One connection's life: consume until stop() (then drain and close) or an error."""
        connection = self._connection = connect(self.settings)
        self._generation += 1
        self._consume = connection.channel()
        declare_topology(self._consume, self.settings)
        self._consume.basic_qos(prefetch_count=self.settings.prefetch)
        self._publish = connection.channel()
        self._publish.confirm_delivery()
        tag = self._consume.basic_consume(self.queue, self._on_message)
        self._connected.set()
        log.info("worker %s consuming %s on %s", self.stage, self.queue, self.settings.safe_url)
        while not self._stop.is_set():
            connection.process_data_events(time_limit=_TICK_SECONDS)
            self._settle_finished()
        self._consume.basic_cancel(tag)  # no new deliveries; undispatched ones go back to the queue
        while self._in_flight:
            connection.process_data_events(time_limit=_TICK_SECONDS)
            self._settle_finished()
        self._connected.clear()
        connection.close()
        self._connection = None

    def _on_message(self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties,
                    body: bytes) -> None:
        try:
            job = JobMessage.from_delivery(body, content_type=properties.content_type, headers=properties.headers,
                                           message_id=properties.message_id, redelivered=method.redelivered,
                                           expected_stage=self.stage)
        except BadMessage as e:
            log.error("worker %s: dead-lettering bad message %s: %s", self.stage, properties.message_id, e)
            self._dead_letter(body, properties, f"bad message: {e}")
            channel.basic_ack(method.delivery_tag)
            return
        key = (self._generation, method.delivery_tag)
        thread = threading.Thread(target=self._handle, args=(*key, job, body, properties, self._connection),
                                  name=f"neuavatar-{self.stage}-{job.job_id}", daemon=True)
        self._in_flight[key] = thread
        thread.start()

    def _settle_finished(self) -> None:
        while True:
            try:
                done = self._finished.get_nowait()
            except queue.Empty:
                return
            self._in_flight.pop((done.generation, done.delivery_tag), None)
            if done.generation != self._generation:
                log.warning("worker %s: job %s finished after its connection was lost; the broker redelivers it",
                            self.stage, done.job.job_id, extra=_about(done.job, self.stage))
                continue
            self._settle(done)

    def _settle(self, done: _Finished) -> None:
        job, error = done.job, done.error
        if isinstance(error, JobInterrupted):
            log.info("worker %s: job %s interrupted (%s); handing it back to the broker", self.stage, job.job_id,
                     error, extra=_about(job, self.stage))
            self._consume.basic_nack(done.delivery_tag, requeue=True)
            return
        if error is None:
            log.info("worker %s: job %s done in %.2f s (attempt %d)", self.stage, job.job_id, done.seconds,
                     job.attempt, extra=_about(job, self.stage))
        else:
            reason = f"{type(error).__name__}: {error}"[:_MAX_HEADER_CHARS]
            if isinstance(error, BadMessage) or job.attempt >= self.settings.max_attempts:
                log.error("worker %s: job %s failed on attempt %d/%d (%s); dead-lettering", self.stage, job.job_id,
                          job.attempt, self.settings.max_attempts, reason, extra=_about(job, self.stage))
                self._dead_letter(done.body, done.properties, f"failed on attempt {job.attempt} of "
                                  f"{self.settings.max_attempts}: {reason}", attempt=job.attempt)
            else:
                log.warning("worker %s: job %s failed on attempt %d/%d (%s); retrying", self.stage, job.job_id,
                            job.attempt, self.settings.max_attempts, reason, extra=_about(job, self.stage))
                headers = {**(done.properties.headers or {}), ATTEMPT_HEADER: job.attempt + 1, ERROR_HEADER: reason}
                self._publish.basic_publish("", self.queue, done.body, _copy(done.properties, headers), mandatory=True)
        self._consume.basic_ack(done.delivery_tag)

    def _dead_letter(self, body: bytes, properties: BasicProperties, reason: str, attempt: int | None = None) -> None:
        headers: dict[str, Any] = {**(properties.headers or {}), REASON_HEADER: reason[:_MAX_HEADER_CHARS],
                                   STAGE_HEADER: self.stage, "x-neuavatar-queue": self.queue}
        if attempt is not None:
            headers[ATTEMPT_HEADER] = attempt
        self._publish.basic_publish(self.settings.dead_exchange, self.queue, body, _copy(properties, headers),
                                    mandatory=True)

    def _disconnect(self) -> None:
        """After a lost connection: let the handlers finish (their acks are void), then forget them."""
        self._connected.clear()
        close_quietly(self._connection)
        self._connection = self._consume = self._publish = None
        for thread in list(self._in_flight.values()):
            thread.join()
        self._in_flight.clear()
        while not self._finished.empty():
            done = self._finished.get_nowait()
            log.warning("worker %s: job %s finished after its connection was lost; the broker redelivers it",
                        self.stage, done.job.job_id, extra=_about(done.job, self.stage))

    # Handler threads --------------------------------------------------------------------------

    def _handle(self, generation: int, delivery_tag: int, job: JobMessage, body: bytes, properties: BasicProperties,
                connection: BlockingConnection) -> None:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.handler(job)
        except JobInterrupted as e:  # not a failure: no traceback
            error = e
        except BaseException as e:  # the failure is data here (retry or dead-letter); the thread must report
            log.warning("worker %s: job %s raised on attempt %d", self.stage, job.job_id, job.attempt, exc_info=True,
                        extra=_about(job, self.stage))
            error = e
        self._finished.put(_Finished(generation, delivery_tag, job, body, properties, error,
                                     time.monotonic() - started))
        self._wake(connection)

    @staticmethod
    def _wake(connection: BlockingConnection | None) -> None:
        """Make the connection thread's ``process_data_events`` return now (no-op if it is closed)."""
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(lambda: None)


def _about(job: JobMessage, stage: str) -> dict[str, str]:
    """The job a log line is about, for formats that show it apart (JSON logs)."""
    return {"job_id": job.job_id, "stage": stage}


def _copy(properties: BasicProperties, headers: dict[str, Any]) -> BasicProperties:
    """The delivery's properties with new headers, persistent (a retry or dead letter must not be lost)."""
    return pika.BasicProperties(content_type=properties.content_type, content_encoding=properties.content_encoding,
                                delivery_mode=2, message_id=properties.message_id, timestamp=properties.timestamp,
                                correlation_id=properties.correlation_id, headers=headers)
