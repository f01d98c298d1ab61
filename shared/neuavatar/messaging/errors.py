"""The errors of the messaging layer, each saying what went wrong with the broker or a message."""

from __future__ import annotations

from neuavatar.errors import NeuAvatarError

__all__ = ["MessagingError", "BadMessage", "BrokerUnavailable", "Unroutable", "JobInterrupted"]


class MessagingError(NeuAvatarError):
    """Base class of the errors raised by :mod:`neuavatar.messaging`."""


class BadMessage(MessagingError, ValueError):
    """A message body or header that cannot be parsed; workers dead-letter it without retrying."""


class BrokerUnavailable(MessagingError, ConnectionError):
    """The broker could not be reached (or refused the login) within the allowed time."""


class Unroutable(MessagingError):
    """The broker accepted a mandatory message but no queue was bound to receive it."""


class JobInterrupted(MessagingError):
    """A handler stopped before finishing because its service is stopping. Not a failure: the
    worker hands the message back to the broker (no ack, no attempt counted), and the next worker
    does the job."""
