"""RabbitMQ messaging for the services: job queues, retries and dead letters, job events.

The contract (names, message and event bodies) is docs/services.md; this package implements it
with pika's blocking adapter:

* :class:`BrokerSettings` - where the broker is, the name prefix, prefetch, attempts, backoff;
* :class:`JobMessage` - a stage's job, parsed strictly (:class:`BadMessage` otherwise);
* :class:`Publisher` - confirmed, persistent publishes that wait out a broker restart;
* :class:`Worker` - the consume loop: ack after the handler, retry, dead-letter, reconnect;
* :class:`Events` - job events on the topic exchange, and per-job :class:`Subscription` s;
* :class:`EventOutbox` - events published from a background thread, never blocking the caller.
"""

from neuavatar.messaging.errors import BadMessage, BrokerUnavailable, JobInterrupted, MessagingError, Unroutable
from neuavatar.messaging.events import EVENT_KINDS, Event, EventKind, Events, Subscription
from neuavatar.messaging.message import ATTEMPT_HEADER, REASON_HEADER, STAGE_HEADER, JobMessage
from neuavatar.messaging.outbox import EventOutbox
from neuavatar.messaging.publisher import Publisher
from neuavatar.messaging.settings import BrokerSettings
from neuavatar.messaging.topology import STAGES, Stage, declare_topology, delete_topology
from neuavatar.messaging.worker import Handler, Worker

__all__ = [
    "BrokerSettings", "JobMessage", "Publisher", "Worker", "Handler", "Events", "Event", "EventKind",
    "Subscription", "EventOutbox", "EVENT_KINDS", "STAGES", "Stage", "declare_topology", "delete_topology",
    "ATTEMPT_HEADER", "REASON_HEADER", "STAGE_HEADER",
    "MessagingError", "BadMessage", "BrokerUnavailable", "Unroutable", "JobInterrupted",
]
