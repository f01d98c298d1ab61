"""From exceptions to gRPC status codes, in one place, so that every service answers alike.

The library raises :class:`~neuavatar.errors.NeuAvatarError` (or ``ValueError``) with messages
written for the caller: those travel as INVALID_ARGUMENT with the message. An unknown job or
avatar is NOT_FOUND. Anything else is a bug: the caller gets INTERNAL and an incident id, the
traceback goes to the server's log under the same id, never over the wire.
"""

from __future__ import annotations

import logging
import uuid

import grpc

from neuavatar.errors import NeuAvatarError

__all__ = ["NotFoundError", "status_for"]

log = logging.getLogger("neuavatar.api")


class NotFoundError(NeuAvatarError, LookupError):
    """The job or avatar a request names does not exist (NOT_FOUND)."""


def status_for(error: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and the message that a call failing with ``error`` ends with; an
    unexpected error is logged here, with its traceback and the incident id the caller sees."""
    if isinstance(error, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, (NeuAvatarError, ValueError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    incident = uuid.uuid4().hex[:12]
    log.error("internal error in %s (incident %s)", method or "a call", incident, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); the server's log has the details"
