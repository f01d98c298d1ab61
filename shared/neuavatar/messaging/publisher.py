"""Publishing that either reaches the broker's disk or says clearly that it could not.

Every publish waits for the broker's confirm (persistent messages are confirmed once written), so
"returned" means "stored". Through a broker outage a publish reconnects with backoff and tries
again until ``publish_deadline_seconds`` have passed, then raises :class:`BrokerUnavailable`. A
publish whose confirm was lost with the connection is sent again: delivery is at least once, with
the same ``message_id``, and the stages skip work whose output already exists (docs/services.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pika
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from neuavatar.messaging.connection import BROKER_ERRORS, classify, close_quietly, connect
from neuavatar.messaging.errors import BrokerUnavailable, Unroutable
from neuavatar.messaging.message import ATTEMPT_HEADER, CONTENT_TYPE, JobMessage
from neuavatar.messaging.settings import BrokerSettings, backoff_delays
from neuavatar.messaging.topology import declare_topology

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    """A confirmed publisher on one connection, shared safely between threads (one lock).

    The connection opens on first use and declares the topology; close it with :meth:`close` or a
    ``with`` block.
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish_job(self, job: JobMessage, *, message_id: str | None = None,
                    deadline_seconds: float | None = None) -> str:
        """Put ``job`` on its stage's queue (persistent, confirmed); the message id used.

        Raises:
            BrokerUnavailable: the broker stayed unreachable past the deadline, or refused the login.
        """
        return self.publish("", self.settings.job_queue(job.stage), job.to_json(),
                            message_id=message_id or job.message_id, headers={ATTEMPT_HEADER: job.attempt},
                            deadline_seconds=deadline_seconds)

    def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                headers: Mapping[str, Any] | None = None, content_type: str = CONTENT_TYPE,
                persistent: bool = True, mandatory: bool = True, deadline_seconds: float | None = None) -> str:
        """Publish one message and wait for the broker's confirm; the message id (a new UUID if not given).

        Args:
            mandatory: fail with :class:`Unroutable` when no queue receives it (jobs); events
                with no subscriber pass False.
            deadline_seconds: how long to retry through an outage (default ``publish_deadline_seconds``).

        Raises:
            BrokerUnavailable: the broker stayed unreachable past the deadline, or refused the login.
            Unroutable: ``mandatory`` and no queue is bound for ``routing_key``.
            MessagingError: the broker rejected the topology (a queue exists with other arguments).
        """
        message_id = message_id or uuid.uuid4().hex
        properties = pika.BasicProperties(content_type=content_type, delivery_mode=2 if persistent else 1,
                                          message_id=message_id, timestamp=int(time.time()),
                                          headers=dict(headers) if headers else None)
        allowed = deadline_seconds if deadline_seconds is not None else self.settings.publish_deadline_seconds
        deadline = time.monotonic() + allowed
        delays = backoff_delays(self.settings)
        with self._lock:
            while True:
                try:
                    self._open().basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
                    return message_id
                except px.UnroutableError:
                    raise Unroutable(f"no queue is bound to exchange {exchange or '(default)'!r} for routing key "
                                     f"{routing_key!r} on {self.settings.safe_url}") from None
                except BROKER_ERRORS as e:
                    self._drop()
                    error = classify(e, self.settings)
                    if error is not None:
                        raise error from e
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BrokerUnavailable(f"could not publish to {exchange or '(default)'!r}/{routing_key!r}: "
                                                f"the broker at {self.settings.safe_url} was unreachable for "
                                                f"{allowed:.0f} s (last error: {e!r})") from e
                    delay = min(next(delays), remaining)
                    log.warning("publish to %s/%s failed (%r); retrying in %.2f s", exchange or "(default)",
                                routing_key, e, delay)
                    time.sleep(delay)

    def close(self) -> None:
        """Close the connection (the next publish opens a new one)."""
        with self._lock:
            self._drop()

    def _open(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            self._connection.process_data_events(0)  # answers heartbeats; raises here if the broker dropped us
            return self._channel
        self._drop()
        self._connection = connect(self.settings)
        channel = self._connection.channel()
        declare_topology(channel, self.settings)
        channel.confirm_delivery()
        self._channel = channel
        return channel

    def _drop(self) -> None:
        close_quietly(self._connection)
        self._connection = self._channel = None
