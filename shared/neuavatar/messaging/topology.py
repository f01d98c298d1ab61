"""The queues and exchanges of docs/services.md, declared idempotently by whoever connects first.

Publishers and workers both declare the whole topology on every (re)connection, so that start-up
order does not matter and a broker that lost its definitions gets them back. All are durable:
a job survives a broker restart. Job queues name the dead-letter exchange, so that anything the
broker itself rejects (a reject without requeue, a TTL someone adds later) still ends up in the
dead-letter queue; the workers dead-letter by publishing there themselves, to add their headers.
"""

from __future__ import annotations

from typing import Literal, get_args

from pika.adapters.blocking_connection import BlockingChannel

from neuavatar.messaging.settings import BrokerSettings

__all__ = ["Stage", "STAGES", "declare_topology", "delete_topology"]

Stage = Literal["preprocess", "track", "train"]
STAGES: tuple[Stage, ...] = get_args(Stage)


def declare_topology(channel: BlockingChannel, settings: BrokerSettings) -> None:
    """Declare the dead-letter exchange and queue, the events exchange and one queue per stage.

    Raises:
        pika.exceptions.ChannelClosedByBroker: (406 PRECONDITION_FAILED) a queue or exchange of
            that name exists with other properties.
    """
    channel.exchange_declare(settings.dead_exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(settings.dead_letter_queue, durable=True)
    channel.queue_bind(settings.dead_letter_queue, settings.dead_exchange)
    channel.exchange_declare(settings.events_exchange, exchange_type="topic", durable=True)
    for stage in STAGES:
        channel.queue_declare(settings.job_queue(stage), durable=True,
                              arguments={"x-dead-letter-exchange": settings.dead_exchange})


def delete_topology(channel: BlockingChannel, settings: BrokerSettings) -> None:
    """Delete everything :func:`declare_topology` made (tests clean their namespace up with it)."""
    for stage in STAGES:
        channel.queue_delete(settings.job_queue(stage))
    channel.queue_delete(settings.dead_letter_queue)
    channel.exchange_delete(settings.dead_exchange)
    channel.exchange_delete(settings.events_exchange)
