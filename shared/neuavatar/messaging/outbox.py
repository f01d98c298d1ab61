"""Job events published from a background thread, so that a stage never waits on the broker for them.

A stage reports progress while it works. Published in line, each report would wait out a broker
outage (up to its deadline) and stretch the job by that much. :class:`EventOutbox` instead queues
events, and a thread of its own publishes them in order on a connection of its own (so it never
holds up the stage's job publishes either).

* ``started``, ``progress`` and ``metrics`` are best effort: one attempt each, and while the broker
  is away at most ``capacity`` of them wait; beyond that the oldest is dropped (a newer one says more).
* ``done`` and ``failed`` are never dropped: the thread retries each until the broker takes it.
  :meth:`EventOutbox.close` waits a bounded time for them. They only tell watchers sooner: the
  stage writes the same final state to the job record in S3 itself, and WatchJob reads the record
  when events stop.
"""

from __future__ import annotations

import collections
import logging
import threading

from neuavatar.messaging.errors import MessagingError
from neuavatar.messaging.events import Event, EventKind, Events
from neuavatar.messaging.publisher import Publisher
from neuavatar.messaging.settings import BrokerSettings, backoff_delays

__all__ = ["EventOutbox", "FINAL_KINDS"]

log = logging.getLogger(__name__)

FINAL_KINDS: frozenset[EventKind] = frozenset({"done", "failed"})
"""Event kinds that the outbox never drops."""
_BEST_EFFORT_SECONDS = 2.0  # one attempt at a best-effort event, reconnects included
_FINAL_ATTEMPT_SECONDS = 5.0  # one attempt at a final event; then it is tried again


class EventOutbox:
    """Publishes job events in order from a background thread; :meth:`put` never blocks.

    Args:
        settings: the broker.
        capacity: how many best-effort events may wait; the oldest is dropped beyond it.

    Attributes: ``offered``, ``sent``, ``dropped``: counts of events, since it started.
    """

    def __init__(self, settings: BrokerSettings, *, capacity: int = 100) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.settings = settings
        self.capacity = capacity
        self.offered = self.sent = self.dropped = 0
        self._publisher = Publisher(settings)  # a connection of its own: see the module's docstring
        self._events = Events(settings, self._publisher)
        self._queue: collections.deque[Event] = collections.deque()
        self._best_effort = 0  # how many of the queued events may be dropped
        self._changed = threading.Condition()
        self._closing = False
        self._abandon = False
        self._thread = threading.Thread(target=self._run, name="neuavatar-event-outbox", daemon=True)
        self._thread.start()

    def put(self, event: Event) -> None:
        """Queue ``event`` for publishing (never blocks); after :meth:`close` it is dropped."""
        with self._changed:
            self.offered += 1
            if self._closing:
                self.dropped += 1
                return
            self._queue.append(event)
            if event.kind not in FINAL_KINDS:
                self._best_effort += 1
                if self._best_effort > self.capacity:
                    self._drop_oldest_best_effort()
            self._changed.notify()

    def pending(self) -> int:
        """How many events wait to be published."""
        with self._changed:
            return len(self._queue)

    def close(self, timeout_seconds: float = 10.0) -> None:
        """Publish what is queued (waiting up to ``timeout_seconds``), then stop; what is left is dropped."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout_seconds)
        if self._thread.is_alive():
            with self._changed:
                self._abandon = True
                left = len(self._queue)
                self._changed.notify()
            log.warning("events: %d event(s) left unpublished at close; the broker at %s is unavailable (the "
                        "job records hold the final states)", left, self.settings.safe_url)
            self._thread.join(_FINAL_ATTEMPT_SECONDS + 1.0)
        if not self._thread.is_alive():
            self._publisher.close()

    # The publishing thread ----------------------------------------------------------------------

    def _run(self) -> None:
        delays = backoff_delays(self.settings)
        outage = False
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if self._abandon or not self._queue:
                    return
                event = self._queue[0]
            final = event.kind in FINAL_KINDS
            try:
                self._events.publish(event, deadline_seconds=_FINAL_ATTEMPT_SECONDS if final else _BEST_EFFORT_SECONDS)
            except MessagingError as e:
                if not outage:
                    log.warning("events: the broker at %s is unavailable (%s); progress events are dropped and "
                                "final ones kept until it is back", self.settings.safe_url, e)
                    outage = True
                if final:
                    with self._changed:  # wait a little before the next attempt; close() may interrupt
                        self._changed.wait(next(delays))
                    continue
                self._remove(event, sent=False)
                continue
            except Exception as e:  # a bug: lose this event, not the thread (and with it every later event)
                log.error("events: could not publish %s %s of job %s: %r", event.stage, event.kind, event.job_id, e)
                self._remove(event, sent=False)
                continue
            if outage:
                log.info("events: the broker at %s is back", self.settings.safe_url)
                outage = False
                delays = backoff_delays(self.settings)
            self._remove(event, sent=True)

    def _remove(self, event: Event, *, sent: bool) -> None:
        with self._changed:
            if self._queue and self._queue[0] is event:  # else put() dropped it meanwhile
                self._queue.popleft()
                if event.kind not in FINAL_KINDS:
                    self._best_effort -= 1
                if not sent:
                    self.dropped += 1
            if sent:
                self.sent += 1

    def _drop_oldest_best_effort(self) -> None:
        for i, queued in enumerate(self._queue):
            if queued.kind not in FINAL_KINDS:
                del self._queue[i]
                self._best_effort -= 1
                self.dropped += 1
                return
