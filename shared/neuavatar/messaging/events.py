"""Job events: what a client watching one job sees (started, progress, metrics, done, failed).

Events go to the topic exchange with routing key ``job.{job_id}.{stage}.{kind}``, so a client can
bind ``job.{job_id}.#`` and see that job only. They are notifications, not work: not persistent,
not mandatory (nobody listening is fine), and a subscriber's queue is exclusive and auto-deleted,
so it vanishes with the subscriber. The job record in S3 stays the source of truth; events missed
while a subscriber reconnects are not replayed.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from neuavatar.messaging.connection import BROKER_ERRORS, classify, close_quietly, connect
from neuavatar.messaging.errors import BadMessage, BrokerUnavailable
from neuavatar.messaging.message import strict_json, valid_job_id
from neuavatar.messaging.publisher import Publisher
from neuavatar.messaging.settings import BrokerSettings, backoff_delays

__all__ = ["EventKind", "EVENT_KINDS", "Event", "Events", "Subscription"]

log = logging.getLogger(__name__)

EventKind = Literal["started", "progress", "metrics", "done", "failed"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
_FIELDS = ("job_id", "stage", "kind", "percent", "message", "metrics", "time")
_STAGE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # a routing-key word: no dots, no wildcards


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Event:
    """One job event, the JSON body of docs/services.md.

    Raises:
        BadMessage: a field has the wrong type or value (also from the constructor).
    """

    job_id: str
    stage: str
    """The stage that sends it (``preprocess``, ``track``, ``train``, or a service's own, e.g. ``upload``)."""
    kind: EventKind
    percent: float | None = None
    """Progress of the stage, 0-100, where known."""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    """Live figures (``{"psnr": 27.1}``)."""
    time: str = field(default_factory=_now)
    """When it happened: ISO 8601 in UTC (``2025-01-31T12:00:00.000Z``)."""

    def __post_init__(self) -> None:
        if not valid_job_id(self.job_id):
            raise BadMessage(f"event job_id must be 1-128 letters, digits, '-' or '_', got {self.job_id!r}")
        if not isinstance(self.stage, str) or not _STAGE.match(self.stage):
            raise BadMessage(f"event stage must be a lower-case word, got {self.stage!r}")
        if self.kind not in EVENT_KINDS:
            raise BadMessage(f"event kind must be one of {', '.join(EVENT_KINDS)}, got {self.kind!r}")
        if self.percent is not None and not (_number(self.percent) and 0 <= self.percent <= 100):
            raise BadMessage(f"event percent must be a number in [0, 100] or null, got {self.percent!r}")
        if not isinstance(self.message, str) or not isinstance(self.time, str):
            raise BadMessage("event message and time must be strings")
        if not isinstance(self.metrics, dict) or not all(isinstance(k, str) and _number(v)
                                                         for k, v in self.metrics.items()):
            raise BadMessage(f"event metrics must map names to finite numbers, got {self.metrics!r}")

    @property
    def routing_key(self) -> str:
        """``job.{job_id}.{stage}.{kind}``."""
        return f"job.{self.job_id}.{self.stage}.{self.kind}"

    def to_json(self) -> bytes:
        body = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Event:
        """Parse an event body: exactly the seven keys, each of the right type.

        Raises:
            BadMessage: what is wrong with it.
        """
        data = strict_json(body)
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise BadMessage(f"an event is a JSON object with exactly the keys {', '.join(_FIELDS)}, got {keys}")
        return cls(**data)


class Events:
    """Publishes events and opens subscriptions, on one settings object.

    Publishing goes through a :class:`Publisher` (confirmed, so an event that returned is routed);
    pass one to share its connection.
    """

    def __init__(self, settings: BrokerSettings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self._own_publisher = publisher is None
        self._publisher = publisher or Publisher(settings)

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, event: Event, *, deadline_seconds: float | None = None) -> None:
        """Send ``event`` to everyone subscribed to its job.

        Raises:
            BrokerUnavailable: the broker stayed unreachable past the deadline.
        """
        self._publisher.publish(self.settings.events_exchange, event.routing_key, event.to_json(),
                                persistent=False, mandatory=False, deadline_seconds=deadline_seconds)

    def emit(self, job_id: str, stage: str, kind: EventKind, *, percent: float | None = None, message: str = "",
             metrics: dict[str, float] | None = None) -> Event:
        """Build and :meth:`publish` an event stamped now; the event."""
        event = Event(job_id, stage, kind, percent=percent, message=message, metrics=dict(metrics or {}))
        self.publish(event)
        return event

    def subscribe(self, job_id: str, *, timeout_seconds: float = 30.0) -> Subscription:
        """Start receiving ``job_id``'s events now (bound before this returns); see :class:`Subscription`.

        Raises:
            ValueError: ``job_id`` is not a valid job id.
            BrokerUnavailable: the broker cannot be reached or refused the login.
        """
        return Subscription(self.settings, job_id, timeout_seconds=timeout_seconds)

    def close(self) -> None:
        if self._own_publisher:
            self._publisher.close()


class Subscription:
    """The events of one job, from an exclusive auto-delete queue bound to ``job.{job_id}.#``.

    Iterating yields events in arrival order and ends when none arrives for ``timeout_seconds``;
    :meth:`next` waits for one with its own timeout. Use it in a ``with`` block (or :meth:`close`)
    so that its connection and queue go away. Not thread-safe: one consumer thread.
    """

    def __init__(self, settings: BrokerSettings, job_id: str, *, timeout_seconds: float = 30.0) -> None:
        if not valid_job_id(job_id):
            raise ValueError(f"job_id must be 1-128 letters, digits, '-' or '_', got {job_id!r}")
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}")
        self.settings = settings
        self.job_id = job_id
        self.timeout_seconds = timeout_seconds
        self.binding = f"job.{job_id}.#"
        self._received: collections.deque[Event] = collections.deque()
        self._connection: BlockingConnection | None = None
        try:
            self._open()
        except BROKER_ERRORS as e:
            raise classify(e, settings) or BrokerUnavailable(
                f"could not subscribe to the events of job {job_id}: the broker at {settings.safe_url} is "
                f"unreachable ({e!r})") from e

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next()) is not None:
            yield event

    def next(self, timeout_seconds: float | None = None) -> Event | None:
        """The next event, or None when none came within ``timeout_seconds`` (default: the subscription's).

        Raises:
            BrokerUnavailable: the broker refused the login on reconnection.
        """
        deadline = time.monotonic() + (self.timeout_seconds if timeout_seconds is None else timeout_seconds)
        delays = backoff_delays(self.settings)
        while not self._received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                if self._connection is None:
                    self._open()
                self._connection.process_data_events(time_limit=min(remaining, 1.0))
            except BROKER_ERRORS as e:
                close_quietly(self._connection)
                self._connection = None
                error = classify(e, self.settings)
                if error is not None:
                    raise error from e
                log.warning("events of job %s: broker unavailable (%r); resubscribing, events meanwhile are lost",
                            self.job_id, e)
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
        return self._received.popleft()

    def close(self) -> None:
        """Close the connection; the broker deletes the queue."""
        close_quietly(self._connection)
        self._connection = None

    def _open(self) -> None:
        connection = connect(self.settings)
        try:
            channel = connection.channel()
            channel.exchange_declare(self.settings.events_exchange, exchange_type="topic", durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, self.settings.events_exchange, routing_key=self.binding)
            channel.basic_consume(queue, self._on_message, auto_ack=True)
        except BaseException:
            close_quietly(connection)
            raise
        self._connection = connection

    def _on_message(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        try:
            self._received.append(Event.from_json(body))
        except BadMessage as e:
            log.warning("events of job %s: skipping a bad event on %s: %s", self.job_id, method.routing_key, e)
