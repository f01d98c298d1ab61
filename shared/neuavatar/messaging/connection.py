"""Opening connections and telling a broker outage (retry) from a mistake (raise).

pika reports both through the same exception tree: a refused socket, a broker shutting down
(320 CONNECTION_FORCED) and a heartbeat timeout are worth waiting out; a refused login, a missing
vhost or a queue declared with other arguments are not, and retrying them would only hide the
mistake until a deadline. :func:`classify` draws that line once for the publisher, worker and events.
"""

from __future__ import annotations

import contextlib
import logging

import pika
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingConnection

from neuavatar.messaging.errors import BrokerUnavailable, MessagingError
from neuavatar.messaging.settings import BrokerSettings

__all__ = ["connect", "classify", "close_quietly", "BROKER_ERRORS"]

log = logging.getLogger(__name__)

# Everything a broker conversation can raise; :func:`classify` sorts them.
BROKER_ERRORS: tuple[type[BaseException], ...] = (px.AMQPError, OSError)

_PERMANENT_CHANNEL_CODES = {403, 404, 405, 406}  # access refused, not found, resource locked, precondition failed


def connect(settings: BrokerSettings) -> BlockingConnection:
    """One connection attempt.

    Raises:
        BrokerUnavailable: the broker refused the login or the vhost (no point retrying).
        pika.exceptions.AMQPConnectionError: it could not be reached (callers retry).
    """
    try:
        return pika.BlockingConnection(settings.parameters())
    except px.AMQPConnectionError as e:
        error = classify(e, settings)
        if error is not None:
            raise error from e
        raise


def classify(exc: BaseException, settings: BrokerSettings) -> MessagingError | None:
    """None when ``exc`` means "the broker is away, reconnect and retry"; else the error to raise."""
    if isinstance(exc, (px.ProbableAuthenticationError, px.ProbableAccessDeniedError, px.AuthenticationError)):
        if "ConnectionClosedByBroker" in str(exc) or isinstance(exc, px.AuthenticationError):
            return BrokerUnavailable(f"the broker at {settings.safe_url} refused the login or vhost: {exc}")
        return None  # disconnected mid-handshake, as a broker that is shutting down does
    if isinstance(exc, px.ChannelClosedByBroker) and exc.reply_code in _PERMANENT_CHANNEL_CODES:
        return MessagingError(f"the broker at {settings.safe_url} closed the channel: "
                              f"({exc.reply_code}) {exc.reply_text}")
    if isinstance(exc, BROKER_ERRORS):
        return None
    return MessagingError(f"unexpected error talking to {settings.safe_url}: {exc!r}")


def close_quietly(connection: BlockingConnection | None) -> None:
    """Close ``connection`` if it is open, ignoring the errors of an already broken one."""
    if connection is None:
        return
    with contextlib.suppress(Exception):
        if connection.is_open:
            connection.close()
